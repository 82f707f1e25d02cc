"""The live process table: turns fork/exec/exit notifications into process events with parent links.

Both collectors feed it: the netlink connector (`proc_events.py`) reports fork, exec and exit as the
kernel sees them; the /proc poller (`proc_poll.py`) reports processes that appeared or vanished.

Decisions:
- A process is *announced* (a `process_start` is emitted) when it execs. A fork that never execs
  (a shell subshell, a pre-forked worker) is remembered silently and announced only when something
  needs it as an actor or a parent: when its child execs, or when a file or socket is attributed to
  it. This keeps the stream to processes that matter while never leaving a child pointing at a
  parent the consumer has never heard of.
- The parent of a process is the process that forked it, remembered at fork time, not the current
  `ppid`: when a parent dies its children are re-parented to init, which would cut the tree.
- A process that exits before /proc can be read still yields a `process_start` (image
  `<unknown>`, its start time estimated from the kernel's fork timestamp) and a `process_end`.
- A second exec in the same process emits another `process_start` with the same `process_key`
  (exec keeps pid and start time): consumers read it as the process's new image.
- Processes that predate the agent are described when first needed (as a parent or an actor) but
  never announced; their exit is reported.
- The table is bounded (`max_tracked`): the oldest entries are forgotten first.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from agents.linux.build import UNATTRIBUTED_PROCESS_KEY, UNKNOWN_IMAGE, linux_event, wire_text
from agents.linux.hashing import HashCache
from agents.linux.procfs import (
    ProcessGone,
    ProcessSnapshot,
    make_process_key,
    read_snapshot,
    read_stat,
    start_time_ns_from_ticks,
    tick_ns,
)
from schemas.events import BehaviorEvent, Payload, ProcessEnd, ProcessStart

__all__ = ["ProcessTracker", "TrackedProcess"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrackedProcess:
    """What the agent knows about one live (or just exited) process."""

    pid: int
    key: str
    start_time_ns: int
    parent_key: str | None
    ppid: int | None
    image: str | None
    command_line: str
    announced: bool  # a process_start was emitted for it


class ProcessTracker:
    """Keeps the pid -> process table and builds process_start / process_end events."""

    def __init__(self, device_id: str, hashes: HashCache, max_tracked: int = 32768) -> None:
        self.device_id = device_id
        self._hashes = hashes
        self._table: OrderedDict[int, TrackedProcess] = OrderedDict()
        self._max_tracked = max_tracked
        # CLOCK_MONOTONIC (kernel event timestamps) -> epoch and -> boot-relative (proc start ticks).
        self._mono_to_epoch_ns = time.time_ns() - time.monotonic_ns()
        self._mono_to_boot_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()

    def __len__(self) -> int:
        return len(self._table)

    def epoch_ns(self, monotonic_ns: int) -> int:
        """Wall-clock time of a kernel (CLOCK_MONOTONIC) timestamp."""
        return monotonic_ns + self._mono_to_epoch_ns

    def get(self, pid: int) -> TrackedProcess | None:
        return self._table.get(pid)

    # -- kernel notifications -------------------------------------------------------------------

    def on_fork(
        self, parent_pid: int, child_pid: int, monotonic_ns: int, start_ns: int | None = None
    ) -> None:
        """Remember a new process and who forked it; nothing is emitted yet (see module doc).

        `start_ns` is the child's /proc start time when the caller already has it (from the
        snapshot of the child's exec, read in the same batch): no second read of /proc then.
        """
        parent = self._known_or_read(parent_pid)
        if start_ns is None:
            try:  # exact start time while the child is alive; the fork timestamp is the fallback
                start_ns = start_time_ns_from_ticks(read_stat(child_pid).start_ticks)
            except ProcessGone:
                start_ns = self._estimated_start_ns(monotonic_ns)
        self._put(TrackedProcess(
            pid=child_pid, key=make_process_key(self.device_id, child_pid, start_ns), start_time_ns=start_ns,
            parent_key=parent.key if parent else None, ppid=parent_pid,
            image=parent.image if parent else None, command_line=parent.command_line if parent else "",
            announced=False,
        ))

    def on_exec(self, pid: int, monotonic_ns: int, snap: ProcessSnapshot | None) -> list[BehaviorEvent]:
        """A process replaced its image: emit its start (and its parent's, if never announced).

        `snap` is /proc as read when the kernel message arrived; None if the process was gone.
        """
        known = self._table.get(pid)
        if snap is None:
            return self._exec_unreadable(pid, known, monotonic_ns)
        parent_key, ppid = (known.parent_key, known.ppid) if known else (None, snap.ppid)
        events = self._announce_parent(ppid) if ppid is not None else []
        if parent_key is None and ppid is not None:
            parent = self._known_or_read(ppid)
            parent_key = parent.key if parent else None
        proc = self._from_snapshot(snap, parent_key, ppid)
        events.append(self._start_event(proc, self.epoch_ns(monotonic_ns), snap))
        return events

    def on_exit(self, pid: int, exit_code: int | None, monotonic_ns: int) -> list[BehaviorEvent]:
        """A process ended: emit process_end if it was announced; forget it either way."""
        proc = self._table.pop(pid, None)
        if proc is None or not proc.announced:
            return []
        payload = ProcessEnd(pid=pid, exit_code=exit_code)
        return [linux_event(self.device_id, self.epoch_ns(monotonic_ns), proc.key, payload,
                            parent_process_key=proc.parent_key, image=proc.image)]

    # -- /proc poll notifications ---------------------------------------------------------------

    def on_appeared(self, snap: ProcessSnapshot) -> list[BehaviorEvent]:
        """The poller found a new process: announce it with its parent link from /proc."""
        parent = self._known_or_read(snap.ppid)
        proc = self._from_snapshot(snap, parent.key if parent else None, snap.ppid)
        return [self._start_event(proc, snap.start_time_ns, snap)]

    # -- attribution for files and sockets ------------------------------------------------------

    def actor(self, pid: int) -> tuple[TrackedProcess | None, list[BehaviorEvent]]:
        """The process behind `pid`, announcing it first if the consumer never heard of it.

        Returns the process (None if it is gone and unknown) and the events to emit before the
        caller's own event (none for processes that predate the agent, see `_known_or_read`).
        """
        known = self._table.get(pid)
        if known is None:
            return self._known_or_read(pid), []
        events = self._announce(known)
        return self._table[pid], events

    def event_by(self, pid: int | None, ts_ns: int, payload: Payload) -> list[BehaviorEvent]:
        """An event done by `pid` (a file written, a socket opened), preceded by the start of its
        process if it was never announced; without a known process (`pid` None or 0, or gone and
        never seen) the event carries `UNATTRIBUTED_PROCESS_KEY`."""
        proc, before = self.actor(pid) if pid else (None, [])
        if proc is None:
            return [linux_event(self.device_id, ts_ns, UNATTRIBUTED_PROCESS_KEY, payload)]
        return [*before, linux_event(self.device_id, ts_ns, proc.key, payload,
                                     parent_process_key=proc.parent_key, image=proc.image)]

    # -- internals ------------------------------------------------------------------------------

    def _announce_parent(self, ppid: int) -> list[BehaviorEvent]:
        parent = self._table.get(ppid)
        return self._announce(parent) if parent is not None else []

    def _announce(self, proc: TrackedProcess) -> list[BehaviorEvent]:
        """Emit a start for a fork-only process (and, recursively, its fork-only ancestors)."""
        if proc.announced:
            return []
        events = self._announce_parent(proc.ppid) if proc.ppid is not None else []
        try:
            snap: ProcessSnapshot | None = read_snapshot(proc.pid)
        except ProcessGone:
            snap = None
        if snap is not None and snap.start_time_ns != proc.start_time_ns:
            snap = None  # the pid was recycled since the fork: keep what the fork told us
        if snap is not None:
            fresh = self._from_snapshot(snap, proc.parent_key, proc.ppid)
        else:
            fresh = replace(proc, announced=True)
        self._put(fresh)
        events.append(self._start_event(fresh, fresh.start_time_ns, snap))
        return events

    def _exec_unreadable(
        self, pid: int, known: TrackedProcess | None, monotonic_ns: int
    ) -> list[BehaviorEvent]:
        """Exec seen but the process already exited: announce what the fork told us."""
        base = known or TrackedProcess(
            pid=pid, key=make_process_key(self.device_id, pid, self._estimated_start_ns(monotonic_ns)),
            start_time_ns=self._estimated_start_ns(monotonic_ns), parent_key=None, ppid=None,
            image=None, command_line="", announced=False,
        )
        proc = replace(base, image=UNKNOWN_IMAGE, command_line="", announced=True)
        self._put(proc)
        log.debug("pid %d exited before /proc could be read; key %s", pid, proc.key)
        return [self._start_event(proc, self.epoch_ns(monotonic_ns), None)]

    def _known_or_read(self, pid: int) -> TrackedProcess | None:
        """A tracked process, or one that predates the agent, read from /proc once and remembered.

        A process that predates the agent is never announced (a start event would carry a stale
        timestamp); it is remembered as `announced` so that its exit is reported and so that the
        next child it forks costs no /proc read for the parent.
        """
        known = self._table.get(pid)
        if known is not None or pid <= 0:
            return known
        try:
            snap = read_snapshot(pid)
        except ProcessGone:
            return None
        proc = TrackedProcess(
            pid=pid, key=make_process_key(self.device_id, pid, snap.start_time_ns),
            start_time_ns=snap.start_time_ns, parent_key=None, ppid=snap.ppid, image=snap.exe,
            command_line=snap.command_line, announced=True,
        )
        self._put(proc)
        return proc

    def _from_snapshot(
        self, snap: ProcessSnapshot, parent_key: str | None, ppid: int | None
    ) -> TrackedProcess:
        proc = TrackedProcess(
            pid=snap.pid, key=make_process_key(self.device_id, snap.pid, snap.start_time_ns),
            start_time_ns=snap.start_time_ns, parent_key=parent_key, ppid=ppid,
            image=snap.exe or f"[{snap.comm}]", command_line=snap.command_line, announced=True,
        )
        self._put(proc)
        return proc

    def _start_event(self, proc: TrackedProcess, ts_ns: int, snap: ProcessSnapshot | None) -> BehaviorEvent:
        parent = self._table.get(proc.ppid) if proc.ppid is not None else None
        sha = self._image_sha256(proc.pid, snap) if snap is not None and snap.exe else None
        payload = ProcessStart(
            image=wire_text(proc.image or UNKNOWN_IMAGE), command_line=wire_text(proc.command_line),
            sha256=sha, uid=snap.uid if snap else None, pid=proc.pid, ppid=proc.ppid,
            parent_image=wire_text(parent.image) if parent and parent.image else None,
            parent_command_line=wire_text(parent.command_line) if parent else None,
            cwd=wire_text(snap.cwd) if snap and snap.cwd else None,
        )
        return linux_event(self.device_id, ts_ns, proc.key, payload,
                           parent_process_key=proc.parent_key, image=payload.image)

    def _image_sha256(self, pid: int, snap: ProcessSnapshot) -> str | None:
        """With the key stat'ed in the snapshot: the cache, else the file through the process or by
        its path if still the same file (the process may be gone). Without: through the process."""
        exe = f"/proc/{pid}/exe"
        if snap.exe_key is None:
            return self._hashes.sha256_of(exe)
        return self._hashes.sha256_known(snap.exe_key, (exe, snap.exe) if snap.exe else (exe,))

    def _estimated_start_ns(self, monotonic_ns: int) -> int:
        """The /proc-style start time (tick resolution) of a task forked at `monotonic_ns`."""
        ticks = (monotonic_ns + self._mono_to_boot_ns) // tick_ns()
        return start_time_ns_from_ticks(ticks)

    def _put(self, proc: TrackedProcess) -> None:
        self._table[proc.pid] = proc
        self._table.move_to_end(proc.pid)
        while len(self._table) > self._max_tracked:
            self._table.popitem(last=False)

