"""`LinuxLiveSource`: processes, files and outbound TCP of the running host as one event stream.

Three collectors run as tasks and feed one bounded queue, so a slow consumer (the publisher under
backpressure) slows the collectors instead of growing memory: the kernel then buffers, and if its
buffers overflow the loss is counted (connector overruns, inotify overflows) rather than hidden.
The process collector is the netlink connector when the kernel allows it and the /proc poller
otherwise; which one is active is logged once and kept in `process_mode`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

from agents.linux.errors import ConnectorUnavailable
from agents.linux.files import FileWatcher
from agents.linux.hashing import HashCache
from agents.linux.net import ConnectionPoller
from agents.linux.proc_events import ExecEvent, ExitEvent, ForkEvent, KernelProcEvent, ProcConnector
from agents.linux.proc_poll import ProcPoller
from agents.linux.processes import ProcessTracker
from agents.sources import SourceStats
from schemas.events import BehaviorEvent

__all__ = ["LinuxLiveConfig", "LinuxLiveSource", "ProcessMode"]

log = logging.getLogger(__name__)

ProcessMode = Literal["auto", "netlink", "poll"]


@dataclass(frozen=True, slots=True)
class LinuxLiveConfig:
    """What to collect and how often; built from `AgentSettings` by the run command."""

    device_id: str
    watch_paths: tuple[str, ...] = ()
    process_mode: ProcessMode = "auto"  # auto: netlink, falling back to /proc polling
    proc_poll_interval_s: float = 0.5
    net_enabled: bool = True
    net_interval_s: float = 1.0
    net_max_fd_reads: int = 50_000
    hash_max_bytes: int = 256 << 20  # executables larger than this are not hashed
    hash_cache_entries: int = 4096
    queue_batches: int = 256  # collector batches buffered before collectors wait


class LinuxLiveSource:
    """The live Linux source (implements `agents.sources.Source`)."""

    name = "linux-live"

    def __init__(self, config: LinuxLiveConfig) -> None:
        self.config = config
        self.stats = SourceStats()
        hashes = HashCache(config.hash_cache_entries, config.hash_max_bytes)
        self.tracker = ProcessTracker(config.device_id, hashes)
        self.process_mode: Literal["netlink", "poll"] | None = None
        self.ready = asyncio.Event()  # set once subscriptions, watches and baselines are in place

    async def events(self) -> AsyncIterator[BehaviorEvent]:
        """Run the collectors until cancelled; yields events in the order each collector saw them."""
        queue: asyncio.Queue[list[BehaviorEvent]] = asyncio.Queue(self.config.queue_batches)
        tasks = [asyncio.create_task(self._pump(name, stream, queue), name=f"linux-live:{name}")
                 for name, stream in self._collectors()]
        try:
            while True:
                for event in await queue.get():
                    self.stats.emitted += 1
                    yield event
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task

    def _collectors(self) -> list[tuple[str, AsyncIterator[list[BehaviorEvent]]]]:
        """Open everything synchronously (subscriptions, watches, baselines), then set `ready`."""
        collectors = [("processes", self._process_stream())]
        if self.config.watch_paths:
            watcher = FileWatcher(self.config.device_id, self.config.watch_paths)
            watcher.start()
            collectors.append(("files", watcher.stream()))
        if self.config.net_enabled:
            poller = ConnectionPoller(self.tracker, self.config.net_interval_s, self.config.net_max_fd_reads)
            poller.poll_once()  # baseline: connections that predate the agent
            collectors.append(("network", poller.stream()))
        self.ready.set()
        return collectors

    async def _pump(
        self, name: str, stream: AsyncIterator[list[BehaviorEvent]], queue: asyncio.Queue[list[BehaviorEvent]]
    ) -> None:
        try:
            async for batch in stream:
                if batch:
                    self.stats.read += len(batch)
                    await queue.put(batch)
        except Exception:
            log.exception("collector %s of device %s failed; the others go on", name, self.config.device_id)
            self.stats.skip(f"collector_failed:{name}")

    def _process_stream(self) -> AsyncIterator[list[BehaviorEvent]]:
        """Subscribe now (so `ready` means subscribed); the returned stream reads later."""
        connector = self._open_connector()
        if connector is None:
            self.process_mode = "poll"
            log.info("process events: /proc polling every %.2fs", self.config.proc_poll_interval_s)
            poller = ProcPoller(self.tracker, self.config.proc_poll_interval_s)
            poller.poll_once()  # baseline: processes that predate the agent
            return poller.stream()
        self.process_mode = "netlink"
        log.info("process events: kernel process-events connector (netlink)")
        return self._netlink_stream(connector)

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

    async def _netlink_stream(self, connector: ProcConnector) -> AsyncIterator[list[BehaviorEvent]]:
        try:
            async for kernel_events in connector.stream():
                yield self._apply(kernel_events)
        finally:
            connector.close()

    def _apply(self, kernel_events: Sequence[KernelProcEvent]) -> list[BehaviorEvent]:
        events: list[BehaviorEvent] = []
        for kev in kernel_events:
            if isinstance(kev, ForkEvent):
                self.tracker.on_fork(kev.parent_tgid, kev.child_tgid, kev.monotonic_ns)
            elif isinstance(kev, ExecEvent):
                events.extend(self.tracker.on_exec(kev.tgid, kev.monotonic_ns, kev.snapshot))
            elif isinstance(kev, ExitEvent):
                events.extend(self.tracker.on_exit(kev.tgid, kev.exit_code, kev.monotonic_ns))
        return events
