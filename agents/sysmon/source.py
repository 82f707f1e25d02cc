"""`SysmonSource`: Sysmon/Security logs as an agent event source (files, or files being written).

Reading and mapping are CPU work; to keep the agent's event loop (publisher, enforcer, heartbeats)
responsive, whole files are mapped in chunks on a worker thread (one chunk at a time, so the
shared Sequencer is never used concurrently). Follow mode runs one task per followed file on the
loop itself, feeding a bounded queue: a slow consumer slows the readers (backpressure) instead of
growing memory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from agents.sources import SourceStats
from agents.sysmon.follow import check_followable, follow_json_lines
from agents.sysmon.loader import FileStats, load_events, map_item
from agents.sysmon.mapping import MappingConfig
from agents.sysmon.sequencing import Sequencer
from schemas.events import BehaviorEvent

log = logging.getLogger(__name__)

_CHUNK_EVENTS = 512


class SysmonSource:
    """Events of .evtx / JSON Lines files, optionally following JSON Lines files as they grow."""

    name = "sysmon"

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        device_id: str | None = None,
        follow: bool = False,
        poll_interval_s: float = 0.5,
        queue_events: int = 4096,
    ) -> None:
        self.paths = list(paths)
        self.follow = follow
        self.file_stats: list[FileStats] = []
        self.stats = SourceStats()
        self._config = MappingConfig(device_id=device_id)
        self._sequencer = Sequencer()
        self._poll_interval_s = poll_interval_s
        self._queue_events = queue_events

    async def events(self) -> AsyncIterator[BehaviorEvent]:
        """Every file read to its end in order; in follow mode, all files at once until cancelled."""
        stream = self._follow_all() if self.follow else self._read_all()
        async for event in stream:
            yield event

    async def _read_all(self) -> AsyncIterator[BehaviorEvent]:
        for path in self.paths:
            file_stats = self._new_file_stats(path)
            events = load_events(path, device_id=self._config.device_id, stats=file_stats,
                                 sequencer=self._sequencer)
            try:
                while chunk := await asyncio.to_thread(_take, events, _CHUNK_EVENTS):
                    self._refresh_stats()
                    for event in chunk:
                        yield event
            finally:
                events.close()  # closes the file now if the consumer stopped early
                self._refresh_stats()

    async def _follow_all(self) -> AsyncIterator[BehaviorEvent]:
        for path in self.paths:
            check_followable(path)
        queue: asyncio.Queue[BehaviorEvent | BaseException] = asyncio.Queue(self._queue_events)
        tasks = [
            asyncio.create_task(self._follow_one(path, queue), name=f"follow:{path}") for path in self.paths
        ]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow_one(self, path: Path, queue: asyncio.Queue[BehaviorEvent | BaseException]) -> None:
        file_stats = self._new_file_stats(path)
        file_stats.format = "jsonl (follow)"
        try:
            async for item in follow_json_lines(path, poll_interval_s=self._poll_interval_s):
                event = map_item(item, self._config, self._sequencer, file_stats)
                self._refresh_stats()
                if event is not None:
                    await queue.put(event)
        except (OSError, ValueError) as exc:
            log.error("stopped following %s: %s", path, exc)
            await queue.put(exc)

    def _new_file_stats(self, path: Path) -> FileStats:
        file_stats = FileStats(path=str(path))
        self.file_stats.append(file_stats)
        return file_stats

    def _refresh_stats(self) -> None:
        total = SourceStats()
        for file_stats in self.file_stats:
            total.merge(file_stats)
        self.stats = total


def _take(events: Iterator[BehaviorEvent], count: int) -> list[BehaviorEvent]:
    return list(itertools.islice(events, count))
