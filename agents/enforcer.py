"""The enforcer: turns blocklist hits and checked commands into kills and quarantines, per mode.

Mode `block` acts; mode `audit` acts on nothing and reports what it would have done (outcome
`audited`), so a group can be watched before it is enforced (as Tetragon's monitoring mode).
- A `process_start` whose executable sha256 is blocklisted: its tree is killed at once
  (`block_execution`).
- A verdict that newly blocks an artifact: running processes whose executable hashes to it are
  found by scanning /proc (hashes cached by file identity) and killed (`kill_blocked_instance`).
- Commands (already verified by `agents.command_follower`): `kill_process_tree`, `quarantine_file`,
  `restore_file`.
- The mode can change while running (`set_mode`, from a signed switch the mode follower accepted).
  Switching to block also sweeps the running processes once and kills every one whose executable
  is on the blocklist now: in audit mode they were only reported, and block means they must go.
  An agent that starts in block mode with a saved blocklist sweeps once too
  (`sweep_saved_blocklist`): a blocked file started while the agent was down must not keep running.
Every action ends in one ActionResult with its outcome and latency (from the event's start time,
the verdict's or the command's `issued_at`). Kills go through `agents.proctree`, which re-checks the
process key against the live start time, so PID reuse never kills the wrong process.
One incident in block mode reaches the device twice: the kill command for the process and the
verdict for its file, on two topics read by two followers, in either order. Whichever comes second
finds the process gone; when this enforcer killed that very process key itself (remembered for the
last `_KILLS_KEPT` kills), the second action reports `succeeded` ("already killed by ...") rather
than a failed `not_found` that would send the SOC chasing a kill that happened. The two can also
overlap (two tasks): an action that finds the process gone while this enforcer's kill of the same key
is still under way waits for that kill to end before it decides.

The enforcer has no Kafka in it: the followers feed it and a `Reporter` takes its results.
`observe()` is the synchronous hook the agent calls for every event; it only looks the hash up and
queues the kill for `run()`, so the event pipeline never waits on enforcement.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from agents.action_reporter import Reporter, action_result
from agents.blocklist import Blocklist, Change, Clock, utc_now
from agents.enforcement_errors import QuarantineError
from agents.linux.hashing import HashCache
from agents.proctree import (
    KillOutcome,
    KillReport,
    kill_process_tree,
    plan_kill,
    protected_pids,
    scan,
)
from agents.quarantine import Quarantine, sha256_file
from agents.verdict_follower import AppliedVerdict
from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.commands import Command, CommandAction
from schemas.common import Mode, Platform
from schemas.events import BehaviorEvent, ProcessStart

__all__ = ["Enforcer", "EnforcerStats"]

T = TypeVar("T")

log = logging.getLogger(__name__)

_KILL_OUTCOMES: dict[KillOutcome, Outcome] = {
    KillOutcome.KILLED: Outcome.SUCCEEDED,
    KillOutcome.PROTECTED: Outcome.REFUSED,
}
_GONE = (KillOutcome.NOT_FOUND, KillOutcome.PID_REUSED)  # the key names no live process any more
_KILLS_KEPT = 1024


@dataclass(frozen=True, slots=True)
class _Sweep:
    """A queued sweep for running blocklisted executables (after a switch to block, or a start in block)."""

    since: datetime  # when the switch was issued: the kills' latency is measured from it
    why: str = "switched to block"


@dataclass
class EnforcerStats:
    """Counters for logs and heartbeats; mutable on purpose."""

    blocked_starts: int = 0
    killed_instances: int = 0
    commands: int = 0
    audited: int = 0
    queue_overflows: int = 0
    scans: int = 0  # /proc scans for running instances (verdicts queued together share one)
    outcomes: dict[str, int] = field(default_factory=dict)


class Enforcer:
    """Applies the mode to blocklist hits, newly blocked artifacts and verified commands."""

    def __init__(self, *, device_id: str, mode: Mode, blocklist: Blocklist, reporter: Reporter,
                 quarantine: Quarantine, hashes: HashCache | None = None, clock: Clock = utc_now,
                 protected: frozenset[int] | None = None, kill_timeout_s: float = 2.0,
                 max_queued: int = 10_000) -> None:
        self.device_id = device_id
        self.mode = Mode(mode)
        self.blocklist = blocklist
        self.quarantine = quarantine
        self.stats = EnforcerStats()
        self._reporter = reporter
        self._hashes = hashes or HashCache()
        self._clock = clock
        self._protected = protected if protected is not None else protected_pids()
        self._kill_timeout_s = kill_timeout_s
        self._queue: asyncio.Queue[BehaviorEvent | AppliedVerdict | _Sweep] = asyncio.Queue(max_queued)
        self._killed: OrderedDict[str, tuple[ActionKind, datetime]] = OrderedDict()  # key -> by what, when
        self._killing: dict[str, asyncio.Event] = {}  # key -> set when the kill under way has ended

    # -- hooks (synchronous, never raise) ---------------------------------------------------------

    def observe(self, event: BehaviorEvent) -> None:
        """Every event the sources see: queue a kill when a blocklisted executable starts."""
        if not isinstance(event.payload, ProcessStart):
            return
        if event.device_id != self.device_id or event.platform is not Platform.LINUX:
            return  # replayed or Sysmon events name processes of another machine: never ours to kill
        if self.blocklist.blocking(event.payload.sha256, self._clock()) is not None:
            self._enqueue(event)

    def on_verdict_applied(self, applied: AppliedVerdict) -> None:
        """A verdict follower callback: queue a scan for running instances of a newly blocked file."""
        if applied.change in (Change.BLOCKED, Change.UPDATED) and applied.blocked:
            self._enqueue(applied)

    def set_mode(self, mode: Mode, since: datetime) -> None:
        """Enforce `mode` from now on (a checked switch); a switch to block queues a sweep."""
        before, self.mode = self.mode, Mode(mode)
        log.warning("device %s: enforcement mode %s -> %s", self.device_id, before, self.mode)
        if self.mode is Mode.BLOCK and before is not Mode.BLOCK:
            self._enqueue(_Sweep(since))

    async def run(self) -> None:
        """Work through queued starts, verdicts and sweeps until cancelled.

        Verdicts queued back to back are handled together with one /proc scan: an agent catching up
        on a verdict topic at start gets hundreds at once, and a scan per verdict would make its
        first kill wait behind hundreds of scans."""
        held: list[BehaviorEvent | AppliedVerdict | _Sweep] = []
        while True:
            item = held.pop() if held else await self._queue.get()
            try:
                if isinstance(item, AppliedVerdict):
                    await self._kill_newly_blocked([item, *self._queued_verdicts(held)])
                elif isinstance(item, _Sweep):
                    await self.kill_all_listed(since=item.since, why=item.why)
                else:
                    await self.block_start(item)
            except Exception:  # one failure must not stop enforcement of the next
                log.exception("device %s: enforcement of %r failed", self.device_id, item)

    def _queued_verdicts(self, held: list[BehaviorEvent | AppliedVerdict | _Sweep]) -> list[AppliedVerdict]:
        """The verdicts queued right behind one; the first other item is put in `held`, to go next."""
        verdicts = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not isinstance(item, AppliedVerdict):
                held.append(item)
                break
            verdicts.append(item)
        return verdicts

    async def _kill_newly_blocked(self, verdicts: list[AppliedVerdict]) -> list[ActionResult]:
        """Kill running instances of every artifact these verdicts blocked and still blocks (one scan);
        each kill's latency counts from its own verdict."""
        since: dict[str, datetime] = {}
        now = self._clock()
        for applied in verdicts:
            if self.blocklist.blocking(applied.artifact_id, now) is not None:  # not unblocked since
                since.setdefault(applied.artifact_id,
                                 applied.verdict.issued_at if applied.verdict else applied.applied_at)
        return await self._kill_instances(since) if since else []

    def sweep_saved_blocklist(self, since: datetime) -> bool:
        """At agent start in block mode: queue one sweep for files blocked before the agent started.

        A blocked file that was started while the agent was down (or before a reboot brought the
        agent up) saw no `process_start` of ours and no new verdict; without this it keeps running."""
        if self.mode is not Mode.BLOCK or not len(self.blocklist):
            return False
        self._enqueue(_Sweep(since, "blocklisted before the agent started"))
        return True

    def _enqueue(self, item: BehaviorEvent | AppliedVerdict | _Sweep) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.queue_overflows += 1
            log.error("device %s: enforcement queue full, dropped %r", self.device_id, item)

    # -- blocklist enforcement --------------------------------------------------------------------

    async def block_start(self, event: BehaviorEvent) -> ActionResult | None:
        """Kill (or audit) a process whose start event names a blocklisted executable."""
        payload = event.payload
        if not isinstance(payload, ProcessStart):
            return None
        entry = self.blocklist.blocking(payload.sha256, self._clock())
        if entry is None:  # unblocked since it was queued
            return None
        self.stats.blocked_starts += 1
        name = entry.verdict.detection_name or entry.verdict.reason or "blocklisted"
        return await self._kill(ActionKind.BLOCK_EXECUTION, event.process_key, payload.pid,
                                since=event.ts, artifact_id=entry.artifact_id, path=payload.image,
                                why=f"{name} ({entry.artifact_id[:12]})")

    async def kill_running(self, artifact_id: str, *, since: datetime) -> list[ActionResult]:
        """Kill (or audit) every running process whose executable hashes to `artifact_id`."""
        return await self._kill_instances({artifact_id: since})

    async def _kill_instances(self, since: dict[str, datetime]) -> list[ActionResult]:
        """Kill (or audit) every running process whose executable hashes to a key of `since` (one scan)."""
        results = []
        for pid, key, sha256 in self._running(lambda sha: sha in since):
            self.stats.killed_instances += 1
            results.append(await self._kill(ActionKind.KILL_BLOCKED_INSTANCE, key, pid, since=since[sha256],
                                            artifact_id=sha256, why=f"running {sha256[:12]}"))
        return results

    async def kill_all_listed(self, *, since: datetime, why: str = "switched to block") -> list[ActionResult]:
        """Kill (or audit) every running process whose executable is blocklisted now (one scan)."""
        now, results = self._clock(), []
        for pid, key, sha256 in self._running(lambda sha: self.blocklist.blocking(sha, now) is not None):
            self.stats.killed_instances += 1
            results.append(await self._kill(ActionKind.KILL_BLOCKED_INSTANCE, key, pid, since=since,
                                            artifact_id=sha256,
                                            why=f"running {sha256[:12]} ({why})"))
        return results

    def running_instances(self, sha256: str) -> list[tuple[int, str]]:
        """(pid, process_key) of live, unprotected processes whose executable hashes to `sha256`."""
        return [(pid, key) for pid, key, _ in self._running(lambda sha: sha == sha256)]

    def _running(self, wanted: Callable[[str], bool]) -> list[tuple[int, str, str]]:
        """(pid, process_key, sha256) of live, unprotected processes whose executable hash is `wanted`."""
        found = []
        self.stats.scans += 1
        for pid, info in scan().items():
            if pid in self._protected or info.dead:
                continue
            sha256 = self._hashes.sha256_of(f"/proc/{pid}/exe")
            if sha256 is not None and wanted(sha256):
                found.append((pid, info.key(self.device_id), sha256))
        return found

    # -- commands ---------------------------------------------------------------------------------

    async def execute(self, command: Command) -> ActionResult:
        """Carry out (or audit) a command that passed `schemas.signing.check_command`."""
        self.stats.commands += 1
        if command.action is CommandAction.KILL_PROCESS_TREE:
            return await self._kill(ActionKind.KILL_PROCESS_TREE, _need(command.process_key), command.pid,
                                    since=command.issued_at, command_id=command.command_id,
                                    why=command.reason or "command")
        if command.action is CommandAction.QUARANTINE_FILE:
            return self._file_action(command, ActionKind.QUARANTINE_FILE, self._quarantine)
        return self._file_action(command, ActionKind.RESTORE_FILE, self._restore)

    def _quarantine(self, command: Command) -> str:
        path, sha256 = Path(_need(command.path)), _need(command.sha256)
        if self.mode is Mode.AUDIT:
            matches = sha256_file(path) == sha256
            return f"would quarantine {path} (content {'matches' if matches else 'differs'})"
        item = self.quarantine.quarantine_file(path, sha256=sha256,
                                               command_id=command.command_id, now=self._clock())
        return f"quarantined {item.original_path} as item {item.item_id}"

    def _restore(self, command: Command) -> str:
        sha256 = _need(command.sha256)
        if self.mode is Mode.AUDIT:
            return f"would restore {sha256} to {command.path or 'its original path'}"
        item = self.quarantine.restore_file(sha256, path=Path(command.path) if command.path else None)
        return f"restored item {item.item_id} to {command.path or item.original_path}"

    def _file_action(self, command: Command, action: ActionKind, act: Any) -> ActionResult:
        outcome, error_class = (Outcome.AUDITED if self.mode is Mode.AUDIT else Outcome.SUCCEEDED), None
        try:
            reason = act(command)
        except QuarantineError as exc:
            outcome, reason, error_class = Outcome.FAILED, str(exc), exc.error_class
        except OSError as exc:
            outcome, error_class = Outcome.FAILED, type(exc).__name__
            reason = f"{command.path}: {exc.strerror}"
        return self._report(action_result(
            self.device_id, action, outcome, now=self._clock(), since=command.issued_at,
            command_id=command.command_id, path=command.path, artifact_id=command.sha256,
            reason=reason[:4096], error_class=error_class,
        ))

    # -- shared -----------------------------------------------------------------------------------

    async def _kill(self, action: ActionKind, process_key: str, pid: int | None, *, since: datetime,
                    why: str, **fields: Any) -> ActionResult:
        if self.mode is Mode.AUDIT:
            report = self._audit_kill(process_key, pid)
            outcome = Outcome.AUDITED if report.outcome is KillOutcome.KILLED else Outcome.FAILED
        else:
            report = await self._kill_once(action, process_key, pid)
            outcome = _KILL_OUTCOMES.get(report.outcome, Outcome.FAILED)
        reason = f"{why}: {_describe(report, self.mode)}"
        if report.outcome in _GONE and (earlier := self._killed_by(process_key)):
            outcome, reason = Outcome.SUCCEEDED, f"{why}: {earlier}"
        return self._report(action_result(
            self.device_id, action, outcome, now=self._clock(), since=since, process_key=process_key,
            pid=report.pid if report.pid is not None else pid, reason=reason[:4096],
            error_class=None if outcome in (Outcome.SUCCEEDED, Outcome.AUDITED) else str(report.outcome),
            **fields,
        ))

    async def _kill_once(self, action: ActionKind, process_key: str, pid: int | None) -> KillReport:
        """Kill the tree; a kill of the same key already under way (the command's and the verdict's
        for one incident run on two tasks) is waited for, so "gone" can be told apart from "we
        killed it a moment ago" (`_killed_by`)."""
        earlier = self._killing.get(process_key)
        mine = asyncio.Event()
        if earlier is None:
            self._killing[process_key] = mine
        try:
            report = await kill_process_tree(process_key, device_id=self.device_id, pid_hint=pid,
                                             protected=self._protected, timeout_s=self._kill_timeout_s)
            if report.outcome is KillOutcome.KILLED:
                self._remember_kill(process_key, action)
            elif report.outcome in _GONE and earlier is not None:
                with suppress(TimeoutError):
                    await asyncio.wait_for(earlier.wait(), self._kill_timeout_s + 1.0)
            return report
        finally:
            if earlier is None:
                del self._killing[process_key]
                mine.set()

    def _remember_kill(self, process_key: str, action: ActionKind) -> None:
        self._killed[process_key] = (action, self._clock())
        self._killed.move_to_end(process_key)
        while len(self._killed) > _KILLS_KEPT:
            self._killed.popitem(last=False)

    def _killed_by(self, process_key: str) -> str:
        """'already killed by <action> at <time>' if this enforcer killed that process, else ''."""
        earlier = self._killed.get(process_key)
        return f"already killed by {earlier[0]} at {earlier[1].isoformat()}" if earlier else ""

    def _audit_kill(self, process_key: str, pid: int | None) -> KillReport:
        plan = plan_kill(process_key, device_id=self.device_id, pid_hint=pid, protected=self._protected)
        if plan.root is None or plan.outcome is not None:
            return KillReport(plan.outcome or KillOutcome.NOT_FOUND, pid, detail=plan.detail)
        pids = (*[info.pid for info in plan.descendants], plan.root.pid)
        return KillReport(KillOutcome.KILLED, plan.root.pid, killed=pids)

    def _report(self, result: ActionResult) -> ActionResult:
        self.stats.outcomes[result.outcome] = self.stats.outcomes.get(result.outcome, 0) + 1
        if result.outcome is Outcome.AUDITED:
            self.stats.audited += 1
        log.info("device %s: %s %s (pid %s, command %s): %s", self.device_id, result.action,
                 result.outcome, result.pid, result.command_id, result.reason)
        self._reporter.report(result)
        return result


def _describe(report: KillReport, mode: Mode) -> str:
    if report.outcome is KillOutcome.KILLED:
        verb = "would kill" if mode is Mode.AUDIT else "killed"
        return f"{verb} {len(report.killed)} process(es) {list(report.killed)}"
    if report.outcome is KillOutcome.SURVIVED:
        return f"killed {list(report.killed)}, still alive {list(report.survivors)}"
    return f"{report.outcome}: {report.detail}".rstrip(": ")



def _need(value: T | None) -> T:
    """A field the command contract guarantees for this action (`Command._complete`)."""
    if value is None:
        raise ValueError("command is missing a field its action requires")
    return value
