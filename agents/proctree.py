"""Kill a process tree named by its `process_key`, never a process that merely reuses a PID.

Why this is careful: a command names a process by key (device, pid, start time) and may arrive
minutes after the alert; the PID may by then belong to a harmless process. So:
1. The root is resolved from the key: the pid hint is accepted only if the live process at that
   pid has the key's start time (`make_process_key` over `/proc/<pid>/stat`); without a hint all of
   /proc is searched. A mismatch is reported as `pid_reused` and nothing is signalled.
2. Each process is held by a pidfd opened *before* its start time is re-checked, and signalled
   through it, so a process that exits and is replaced between check and signal is never hit.
3. The tree is frozen top-down (SIGSTOP, so nobody forks new children while we walk the /proc
   ppid links), rescanning until no new descendant appears, then killed children first (SIGKILL,
   deepest first) and each death verified (gone, replaced, or a zombie) within a timeout.
Protected processes (pid 1, kernel threads, the agent and its ancestors) are never signalled.

A child that double-forks away in the instant before it is frozen can escape; the loop bounds how
long we chase, and the report lists survivors so the caller can say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from agents.linux.procfs import make_process_key, start_time_ns_from_ticks

__all__ = [
    "KillOutcome",
    "KillPlan",
    "KillReport",
    "ProcInfo",
    "kill_process_tree",
    "plan_kill",
    "protected_pids",
    "read_proc",
    "scan",
]

PROC = "/proc"
_FREEZE_ROUNDS = 8
_KTHREADD = 2


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """The /proc/<pid>/stat fields that identify a process and link it to its parent."""

    pid: int
    ppid: int
    start_ticks: int
    state: str  # R, S, D, T, Z (zombie), X (dead), ...

    @property
    def dead(self) -> bool:
        return self.state in ("Z", "X", "x")

    def key(self, device_id: str) -> str:
        return make_process_key(device_id, self.pid, start_time_ns_from_ticks(self.start_ticks))


class KillOutcome(StrEnum):
    KILLED = "killed"  # the whole tree is gone
    NOT_FOUND = "not_found"  # no live process has this key (it exited)
    PID_REUSED = "pid_reused"  # the hinted pid belongs to another process now: left alone
    PROTECTED = "protected"  # pid 1, a kernel thread, the agent or its ancestor: never signalled
    DENIED = "denied"  # the kernel refused the signal (not root?)
    SURVIVED = "survived"  # signalled, but some process was still alive at the timeout


@dataclass(frozen=True, slots=True)
class KillPlan:
    """What a kill would target: the verified root (if any) and its current descendants."""

    outcome: KillOutcome | None  # None: there is something to kill
    root: ProcInfo | None
    descendants: tuple[ProcInfo, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class KillReport:
    outcome: KillOutcome
    pid: int | None
    killed: tuple[int, ...] = ()
    survivors: tuple[int, ...] = ()
    detail: str = ""


def read_proc(pid: int) -> ProcInfo | None:
    """The process at `pid` now, or None if there is none."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return ProcInfo(pid=pid, ppid=int(rest[1]), start_ticks=int(rest[19]), state=rest[0])


def scan() -> dict[int, ProcInfo]:
    """Every process in /proc now (threads excluded)."""
    table: dict[int, ProcInfo] = {}
    for name in os.listdir(PROC):
        if name.isdigit() and (info := read_proc(int(name))) is not None:
            table[info.pid] = info
    return table


def protected_pids() -> frozenset[int]:
    """pid 1, kthreadd, this process and its ancestors: never killed, whatever a command says."""
    pids = {1, _KTHREADD}
    pid: int | None = os.getpid()
    while pid and pid not in pids:
        pids.add(pid)
        info = read_proc(pid)
        pid = info.ppid if info is not None else None
    return frozenset(pids)


def plan_kill(process_key: str, *, device_id: str, pid_hint: int | None = None,
              protected: frozenset[int] = frozenset()) -> KillPlan:
    """Resolve the key to a live process and list its tree, without signalling anything."""
    table = scan()
    root, outcome, detail = _resolve(process_key, device_id, pid_hint, table)
    if root is None:
        return KillPlan(outcome, None, detail=detail)
    if root.pid in protected or root.ppid == _KTHREADD or root.pid == _KTHREADD:
        return KillPlan(KillOutcome.PROTECTED, root, detail=f"pid {root.pid} is protected")
    tree = [info for info, _ in _descendants(table, [root]) if info.pid not in protected]
    return KillPlan(None, root, tuple(tree))


async def kill_process_tree(process_key: str, *, device_id: str, pid_hint: int | None = None,
                            protected: frozenset[int] = frozenset(), timeout_s: float = 2.0) -> KillReport:
    """Freeze, then kill (children first) the tree of the process with this key; verify it is gone."""
    plan = plan_kill(process_key, device_id=device_id, pid_hint=pid_hint, protected=protected)
    if plan.root is None or plan.outcome is not None:
        return KillReport(plan.outcome or KillOutcome.NOT_FOUND, plan.root.pid if plan.root else None,
                          detail=plan.detail)
    held = _Held(protected)
    try:
        if not held.stop(plan.root, depth=0):
            return KillReport(held.refusal or KillOutcome.NOT_FOUND, plan.root.pid,
                              detail=held.detail or "exited before it could be stopped")
        held.freeze_descendants()
        held.kill_all()
        survivors = await held.wait_gone(timeout_s)
    finally:
        held.close()
    killed = tuple(pid for pid in held.order() if pid not in survivors)
    outcome = KillOutcome.SURVIVED if survivors else KillOutcome.KILLED
    return KillReport(outcome, plan.root.pid, killed, tuple(survivors), held.detail)


def _resolve(process_key: str, device_id: str, pid_hint: int | None,
             table: dict[int, ProcInfo]) -> tuple[ProcInfo | None, KillOutcome | None, str]:
    if pid_hint is not None:
        info = table.get(pid_hint)
        if info is None or info.dead:
            return None, KillOutcome.NOT_FOUND, f"pid {pid_hint} has exited"
        if info.key(device_id) != process_key:
            return None, KillOutcome.PID_REUSED, (
                f"pid {pid_hint} now belongs to another process (started at tick {info.start_ticks}): "
                "left alone")
        return info, None, ""
    for info in table.values():
        if not info.dead and info.key(device_id) == process_key:
            return info, None, ""
    return None, KillOutcome.NOT_FOUND, f"no live process has key {process_key}"


def _descendants(table: dict[int, ProcInfo], roots: Iterable[ProcInfo]) -> list[tuple[ProcInfo, int]]:
    """Breadth-first descendants of `roots` (not the roots) with their depth below the first root."""
    children: dict[int, list[ProcInfo]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info)
    found: list[tuple[ProcInfo, int]] = []
    frontier = [(root, 0) for root in roots]
    seen = {root.pid for root, _ in frontier}
    while frontier:
        parent, depth = frontier.pop(0)
        for child in children.get(parent.pid, []):
            if child.pid not in seen and not child.dead:
                seen.add(child.pid)
                found.append((child, depth + 1))
                frontier.append((child, depth + 1))
    return found


class _Held:
    """The processes we stopped, each with the pidfd we signal it through."""

    def __init__(self, protected: frozenset[int]) -> None:
        self._protected = protected
        self._held: dict[int, tuple[ProcInfo, int | None, int]] = {}  # pid -> (info, pidfd, depth)
        self.refusal: KillOutcome | None = None
        self.detail = ""

    def stop(self, info: ProcInfo, depth: int) -> bool:
        """Open a pidfd, re-check the start time through /proc, SIGSTOP; False if it is not ours."""
        pidfd = _pidfd_open(info.pid)
        now = read_proc(info.pid)
        if now is None or now.start_ticks != info.start_ticks or now.dead:
            _close(pidfd)
            return False
        if not self._signal(info.pid, pidfd, signal.SIGSTOP):
            _close(pidfd)
            return False
        self._held[info.pid] = (info, pidfd, depth)
        return True

    def freeze_descendants(self) -> None:
        for _ in range(_FREEZE_ROUNDS):
            held = [info for info, _, _ in self._held.values()]
            fresh = [(info, depth) for info, depth in _descendants(scan(), held)
                     if info.pid not in self._held and info.pid not in self._protected]
            if not fresh:
                return
            for info, _ in fresh:
                parent_depth = self._held.get(info.ppid, (info, None, 0))[2]
                self.stop(info, parent_depth + 1)

    def order(self) -> list[int]:
        """Deepest first: children die before their parents."""
        return [pid for pid, (_, _, depth) in sorted(self._held.items(), key=lambda item: -item[1][2])]

    def kill_all(self) -> None:
        for pid in self.order():
            _, pidfd, _ = self._held[pid]
            self._signal(pid, pidfd, signal.SIGKILL)

    async def wait_gone(self, timeout_s: float) -> list[int]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            alive = [pid for pid, (info, _, _) in self._held.items() if _alive(info)]
            if not alive or loop.time() >= deadline:
                return alive
            await asyncio.sleep(0.005)

    def close(self) -> None:
        for _, pidfd, _ in self._held.values():
            _close(pidfd)

    def _signal(self, pid: int, pidfd: int | None, signum: signal.Signals) -> bool:
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            return False
        except PermissionError as exc:
            self.refusal, self.detail = KillOutcome.DENIED, f"pid {pid}: {exc.strerror}"
            return False
        return True


def _alive(info: ProcInfo) -> bool:
    now = read_proc(info.pid)
    return now is not None and now.start_ticks == info.start_ticks and not now.dead


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for `pid` (None where the kernel has none: the /proc re-check then guards alone)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
