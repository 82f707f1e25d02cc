"""`LinuxLiveSource`: processes, files and outbound TCP of the running host as one event stream.

Which collectors: processes from the netlink connector when the kernel allows it, else the /proc
poller; files from fanotify (attributed to the writing process) when `file_mode` asks for it and the
kernel allows it, else inotify (unattributed; the default until the model has learnt attributed
Linux file events); outbound TCP from the socket-table poller. Which ones are active is logged
once and kept in `process_mode` and `file_mode`.

How they run: on the event loop, without a task per collector, because on this kind of host the
agent's main cost is waking up (BENCHMARKS.md, "Agent": ~80-130 µs of CPU per asyncio wake-up):
- the netlink reader callback (woken by execs only, see `proc_events`) does all of a process
  event's work at once: read, snapshot /proc, update the process table, build the events, and hands
  them over right away (the enforcer kills a blocklisted image from its process_start);
- the file queue is read in its reader callback, which then stops waiting on the descriptor: while
  files keep changing, one shared timer (the tick) reads them every `tick_s` (a burst costs one
  read, a file rewritten within it is hashed once); a tick that finds nothing waits on the
  descriptor again, so an idle folder costs no wake-up at all;
- the same tick runs the pollers when they are due (sockets, /proc in polling mode) and reads the
  forks and exits that no exec brought in (`netlink_drain_s`). Idle, only those periods wake it.
  An exec's wake-up also does the tick's work due within `coalesce_s` (files, pollers), and its
  drain of the full stream counts as the tick's: on a busy host most ticks ride on exec wake-ups;
- events are handed over from those callbacks to the consumer's sink (`attach_sink`, the agent's
  publisher queue) with no task switch; `events()` yields only what the sink had no room for.

Attribution order: a process that writes a file and exits must still be in the process table when
its write is mapped, so the exits of a batch of process messages are applied after the fanotify
queue has been read (the kernel queues the close-write before it reports the exit).

Backpressure: gathered events wait in a list bounded by `max_pending_events`; when the consumer
(the publisher) falls behind and the list is full, the readers are paused, so the kernel buffers,
and if its buffers overflow the loss is counted (connector overruns, queue overflows) rather than
hidden, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from agents.linux.errors import ConnectorUnavailable, FanotifyError, FanotifyUnavailable
from agents.linux.fanwatch import FanotifyWatcher
from agents.linux.files import FileWatcher
from agents.linux.handover import Handover, Sink
from agents.linux.hashing import HashCache
from agents.linux.net import ConnectionPoller
from agents.linux.proc_events import ExecEvent, ExitEvent, ForkEvent, KernelProcEvent, ProcConnector
from agents.linux.proc_poll import ProcPoller
from agents.linux.processes import ProcessTracker
from agents.sources import SourceStats
from schemas.events import BehaviorEvent

__all__ = ["FileMode", "LinuxLiveConfig", "LinuxLiveSource", "ProcessMode"]

log = logging.getLogger(__name__)

ProcessMode = Literal["auto", "netlink", "poll"]
FileMode = Literal["auto", "fanotify", "inotify"]
Watcher = FileWatcher | FanotifyWatcher


@dataclass(frozen=True, slots=True)
class LinuxLiveConfig:
    """What to collect and how often; built from `AgentSettings` by the run command."""

    device_id: str
    watch_paths: tuple[str, ...] = ()
    process_mode: ProcessMode = "auto"  # auto: netlink, falling back to /proc polling
    file_mode: FileMode = "inotify"  # auto: fanotify (attributed), falling back to inotify
    proc_poll_interval_s: float = 0.5
    net_enabled: bool = True
    net_interval_s: float = 1.0
    net_max_fd_reads: int = 50_000
    hash_max_bytes: int = 256 << 20  # executables larger than this are not hashed
    hash_cache_entries: int = 4096
    tick_s: float = 0.2  # while files keep changing, they are read this often
    netlink_drain_s: float = 1.0  # forks and exits are read at least this often (execs at once)
    coalesce_s: float = 0.1  # an exec wake-up also does the tick's work due within this long
    max_pending_events: int = 10_000  # gathered, not yet taken by the consumer: beyond, readers pause


class LinuxLiveSource:
    """The live Linux source (implements `agents.sources.Source`)."""

    name = "linux-live"

    def __init__(self, config: LinuxLiveConfig) -> None:
        self.config = config
        self.stats = SourceStats()
        hashes = HashCache(config.hash_cache_entries, config.hash_max_bytes)
        self.tracker = ProcessTracker(config.device_id, hashes)
        self.process_mode: Literal["netlink", "poll"] | None = None
        self.file_mode: Literal["fanotify", "inotify"] | None = None
        self.ready = asyncio.Event()  # set once subscriptions, watches and baselines are in place
        self._connector: ProcConnector | None = None
        self._proc_poller: ProcPoller | None = None
        self._watcher: Watcher | None = None
        self._net: ConnectionPoller | None = None
        self._out = Handover(self.name)
        self._timer: asyncio.TimerHandle | None = None
        self._files_armed = False
        self._files_due = 0.0  # while not waiting on the descriptor: when the tick reads the files
        self._paused = False
        self.pauses = 0  # times the readers were paused because the consumer lagged
        self._proc_due = self._net_due = self._drain_due = 0.0

    def attach_sink(self, sink: Sink) -> None:
        """Hand events to `sink` from the reader callbacks themselves (implements
        `agents.sources.PushSource`): no task switch per wake-up. `sink(event)` takes one event now or
        returns False when it has no room; what it does not take is yielded by `events()` as usual,
        which waits for room, and so pauses the readers, as without a sink."""
        self._out.attach(sink)

    async def events(self) -> AsyncGenerator[BehaviorEvent, None]:
        """Run the collectors until cancelled; yields events in the order the collectors saw them
        (those a sink took are not yielded again)."""
        loop = asyncio.get_running_loop()
        self._open()
        self._proc_due = loop.time() + self.config.proc_poll_interval_s
        self._net_due = loop.time() + self.config.net_interval_s
        self._drain_due = loop.time() + self.config.netlink_drain_s
        self._resume()
        self.ready.set()
        try:
            while True:
                batch = await self._out.take()
                if self._paused:
                    self._resume()
                for event in batch:
                    self.stats.emitted += 1
                    yield event
                self._out.yielded()
        finally:
            self._close()

    # -- opening and closing --------------------------------------------------------------------

    def _open(self) -> None:
        """Open everything synchronously: subscriptions, watches, baselines. The process collector
        is logged last, so a log line saying so means every collector is in place."""
        self._connector = self._open_connector()
        if self._connector is None:
            self.process_mode = "poll"
            self._proc_poller = ProcPoller(self.tracker)
            self._proc_poller.poll_once()  # baseline: processes that predate the agent
        else:
            self.process_mode = "netlink"
        if self.config.watch_paths:
            self._watcher = self._open_watcher()
        if self.config.net_enabled:
            self._net = ConnectionPoller(self.tracker, self.config.net_max_fd_reads)
            self._net.poll_once()  # baseline: connections that predate the agent
        if self._connector is None:
            log.info("process events: /proc polling every %.2fs", self.config.proc_poll_interval_s)
        else:
            log.info("process events: kernel process-events connector (netlink, %s)",
                     "woken by execs only" if self._connector.has_doorbell else "woken by every message")

    def _open_connector(self) -> ProcConnector | None:
        if self.config.process_mode == "poll":
            return None
        try:
            return ProcConnector.open()
        except ConnectorUnavailable as exc:
            if self.config.process_mode == "netlink":
                raise
            log.warning("process events: netlink connector unavailable (%s); using /proc polling", exc)
            return None

    def _open_watcher(self) -> Watcher:
        paths = self.config.watch_paths
        if self.config.file_mode != "inotify":
            fan = FanotifyWatcher(self.tracker, paths)
            try:
                fan.start()
            except (FanotifyUnavailable, FanotifyError) as exc:
                fan.close()
                if self.config.file_mode == "fanotify":
                    raise
                log.warning("file events: fanotify unavailable (%s); using inotify (events not "
                            "attributed to processes)", exc)
            else:
                self.file_mode = "fanotify"
                log.info("file events: fanotify on %d folders (attributed to processes)", fan.watch_count)
                return fan
        watcher = FileWatcher(self.config.device_id, paths)
        watcher.start()
        self.file_mode = "inotify"
        log.info("file events: inotify on %d folders (not attributed to processes)", watcher.watch_count)
        return watcher

    def _close(self) -> None:
        self._pause()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connector is not None:
            self._connector.close()
        if self._watcher is not None:
            self._watcher.close()

    # -- readers (called by the event loop) -----------------------------------------------------

    def _on_netlink(self) -> None:
        """Everything a process event needs, now: read, snapshot /proc, update the table, build, and
        hand over at once (the enforcer kills a blocklisted image from its process_start). Awake
        anyway, it also does the tick's work that is due within `coalesce_s` (one wake-up, not two),
        and the full stream it drained no longer needs the tick's drain."""
        self._gather(self._read_netlink())
        now = asyncio.get_running_loop().time()
        self._drain_due = now + self.config.netlink_drain_s
        if self._timer is not None and self._timer.when() - now <= self.config.coalesce_s:
            self._timer.cancel()
            self._tick(drained=True)
            return
        self._hand_over()

    def _read_netlink(self) -> list[BehaviorEvent]:
        connector = self._connector
        if connector is None:
            return []
        try:
            return self._apply(connector.read_ready(capture=True))
        except Exception:
            self._collector_failed("processes", self._stop_netlink)
            return []

    def _on_files_readable(self) -> None:
        """Read the queue now (we are awake anyway), then stop waiting on it: while files keep
        changing, the tick reads them once per `tick_s`, whatever the burst."""
        self._gather(self._read_files())
        self._hand_over()
        self._disarm_files()
        self._files_due = asyncio.get_running_loop().time() + self.config.tick_s
        self._arm_tick(self.config.tick_s)

    def _apply(self, kernel_events: Sequence[KernelProcEvent]) -> list[BehaviorEvent]:
        """Kernel order, except that with fanotify the batch's exits wait until the file queue has
        been read (see `_settle`); a pid seen again meanwhile (recycled) settles them first."""
        events: list[BehaviorEvent] = []
        ended: dict[int, ExitEvent] = {}
        hold_exits = isinstance(self._watcher, FanotifyWatcher)
        exec_starts = _exec_start_times(kernel_events)
        for kev in kernel_events:
            pid = kev.child_tgid if isinstance(kev, ForkEvent) else kev.tgid
            if pid in ended:
                events.extend(self._settle(ended))
            if isinstance(kev, ForkEvent):
                self.tracker.on_fork(kev.parent_tgid, kev.child_tgid, kev.monotonic_ns,
                                     exec_starts.get(kev.child_tgid))
            elif isinstance(kev, ExecEvent):
                events.extend(self.tracker.on_exec(kev.tgid, kev.monotonic_ns, kev.snapshot))
            elif hold_exits:
                ended[kev.tgid] = kev
            else:
                events.extend(self.tracker.on_exit(kev.tgid, kev.exit_code, kev.monotonic_ns))
        return events + self._settle(ended) if ended else events

    def _settle(self, ended: dict[int, ExitEvent]) -> list[BehaviorEvent]:
        """Read the file queue while the ended processes are still in the table (their writes were
        queued before their exit was reported), then apply the exits."""
        events = self._read_files({pid: self.tracker.epoch_ns(e.monotonic_ns) for pid, e in ended.items()})
        for gone in ended.values():
            events.extend(self.tracker.on_exit(gone.tgid, gone.exit_code, gone.monotonic_ns))
        ended.clear()
        return events

    # -- the tick -------------------------------------------------------------------------------

    def _arm_tick(self, delay_s: float) -> None:
        """Make sure the tick runs within `delay_s` (one timer, whoever asks)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay_s
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()
        self._timer = loop.call_at(due, self._tick)

    def _tick(self, drained: bool = False) -> None:
        """The timer's work: whatever is due now or within `coalesce_s` (`drained`: the caller has
        just read the process connector)."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        soon = now + self.config.coalesce_s
        if not self._paused:
            if self._connector is not None and not drained:  # forks and exits no doorbell brought in
                self._drain_due = now + self.config.netlink_drain_s
                self._gather(self._read_netlink())
            if self._watcher is not None and (not self._files_armed or self._watcher.has_pending):
                self._read_files_on_tick(now)
            if self._proc_poller is not None and soon >= self._proc_due:
                self._proc_due = now + self.config.proc_poll_interval_s
                self._gather(self._poll("processes", self._proc_poller.poll_once, self._stop_proc_poll))
            if self._net is not None and soon >= self._net_due:
                self._net_due = now + self.config.net_interval_s
                self._gather(self._poll("network", self._net.poll_once, self._stop_net))
        self._hand_over()
        self._arm_next(now)

    def _read_files_on_tick(self, now: float) -> None:
        """Busy (this read found events): read again next tick without waking in between; quiet:
        wait on the descriptor again, so an idle folder costs no wake-up at all."""
        events = self._read_files()
        self._gather(events)
        if events:
            self._files_due = now + self.config.tick_s
        else:
            self._arm_files()

    def _arm_next(self, now: float) -> None:
        """The next tick: when a poller is due, or soon if the watcher waits for a rename's partner."""
        drains = self._connector is not None and self._connector.has_doorbell
        timers = ((self._proc_due, self._proc_poller is not None), (self._net_due, self._net is not None),
                  (self._drain_due, drains))
        dues = [due for due, on in timers if on]
        if self._paused:
            pass  # files are read again once the consumer has caught up (`_resume`)
        elif self._watcher is not None and not self._files_armed:
            dues.append(self._files_due)
        elif self._watcher is not None and self._watcher.has_pending:
            dues.append(now + self.config.tick_s)
        if dues:
            self._arm_tick(max(0.0, min(dues) - now))

    def _read_files(self, ended_ns: dict[int, int] | None = None) -> list[BehaviorEvent]:
        watcher = self._watcher
        if watcher is None:
            return []
        if isinstance(watcher, FanotifyWatcher):
            return self._poll("files", lambda: watcher.read_ready(ended_ns), self._stop_files)
        return self._poll("files", watcher.read_ready, self._stop_files)

    def _poll(
        self, name: str, poll: Callable[[], list[BehaviorEvent]], stop: Callable[[], None]
    ) -> list[BehaviorEvent]:
        try:
            return poll()
        except Exception:
            self._collector_failed(name, stop)
            return []

    def _hand_over(self) -> None:
        self.stats.emitted += self._out.push()

    def _gather(self, events: list[BehaviorEvent]) -> None:
        if not events:
            return
        self.stats.read += len(events)
        self._out.pending.extend(events)
        if len(self._out.pending) >= self.config.max_pending_events and not self._paused:
            self.pauses += 1
            self._pause()
            self._out.wake()

    # -- pausing and stopping -------------------------------------------------------------------

    def _pause(self) -> None:
        """The consumer is behind: stop reading (the kernel buffers) until it takes the batch."""
        self._paused = True
        if self._connector is not None:
            asyncio.get_running_loop().remove_reader(self._connector.fileno())
        self._disarm_files()

    def _resume(self) -> None:
        self._paused = False
        if self._connector is not None:
            asyncio.get_running_loop().add_reader(self._connector.fileno(), self._on_netlink)
        self._arm_files()
        self._arm_next(asyncio.get_running_loop().time())

    def _arm_files(self) -> None:
        if self._watcher is not None and not self._files_armed:
            asyncio.get_running_loop().add_reader(self._watcher.fileno(), self._on_files_readable)
            self._files_armed = True

    def _disarm_files(self) -> None:
        if self._watcher is not None and self._files_armed:
            asyncio.get_running_loop().remove_reader(self._watcher.fileno())
            self._files_armed = False

    def _collector_failed(self, name: str, stop: Callable[[], None]) -> None:
        log.exception("collector %s of device %s failed; the others go on", name, self.config.device_id)
        self.stats.skip(f"collector_failed:{name}")
        stop()

    def _stop_netlink(self) -> None:
        if self._connector is not None:
            asyncio.get_running_loop().remove_reader(self._connector.fileno())
            self._connector.close()
            self._connector = None

    def _stop_files(self) -> None:
        self._disarm_files()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def _stop_proc_poll(self) -> None:
        self._proc_poller = None

    def _stop_net(self) -> None:
        self._net = None


def _exec_start_times(kernel_events: Sequence[KernelProcEvent]) -> dict[int, int]:
    """pid -> /proc start time, from the exec snapshots of a batch, for pids that exec once in it
    and do not exit before that exec (a recycled pid would otherwise lend the wrong start time)."""
    starts: dict[int, int] = {}
    spoiled: set[int] = set()
    for kev in kernel_events:
        if isinstance(kev, ExitEvent) and kev.tgid not in starts:
            spoiled.add(kev.tgid)  # an earlier process with this pid ended here
        elif isinstance(kev, ExecEvent) and kev.tgid in starts:
            spoiled.add(kev.tgid)  # a second exec: which one the fork belongs to is unclear
        elif isinstance(kev, ExecEvent) and kev.snapshot is not None and kev.tgid not in spoiled:
            starts[kev.tgid] = kev.snapshot.start_time_ns
    return {pid: start for pid, start in starts.items() if pid not in spoiled}
