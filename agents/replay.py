"""Replay recorded BehaviorEvent JSON Lines, at recorded speed or faster, as an event source.

Why: demos, load tests and regression runs need a device that behaves exactly like a recording
(the output of `ringfence-agent ingest`, or any events topic dump). Pacing is anchored at the first
event: event *n* is released at `start + (ts_n - ts_0) / speed`, so sleeps never accumulate drift;
`speed=0` releases everything as fast as the consumer takes it. Events whose time goes backwards
are released at once. `max_gap_s` squeezes long idle stretches of a recording.

Events are replayed unchanged (same ids, seq and ts), so replaying twice is idempotent downstream;
`retime=True` gives each event its paced release time as `ts` (start + offset / speed; at speed 0,
start + offset), so a recording looks live to time-windowed consumers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agents.sources import SourceStats
from agents.sysmon.event_lines import read_behavior_events
from agents.sysmon.readers import InputFormat, detect_format, open_binary
from schemas.events import BehaviorEvent

__all__ = ["Pacer", "ReplayInputError", "ReplaySource", "check_replay_inputs"]

log = logging.getLogger(__name__)

_YIELD_EVERY_EVENTS = 256  # at speed 0, give the event loop a turn this often


class ReplayInputError(ValueError):
    """A replay input is missing or is not BehaviorEvent JSON Lines; the message names the path."""


def check_replay_inputs(paths: Sequence[Path]) -> None:
    """Raise `ReplayInputError` unless every path is a BehaviorEvent JSON Lines file (plain or .gz)."""
    missing = [str(path) for path in paths if not path.is_file()]
    if missing or not paths:
        raise ReplayInputError(f"no such file: {', '.join(missing)}" if missing else "no replay input files")
    for path in paths:
        found = detect_format(path)
        if found is not InputFormat.BEHAVIOR_EVENTS:
            raise ReplayInputError(f"{path} is not BehaviorEvent JSON Lines (it looks like {found}); convert "
                                   "it with `ringfence-agent ingest` first")


@dataclass(frozen=True, slots=True)
class Pacer:
    """When to release each event: pure arithmetic over event times and a monotonic clock."""

    speed: float
    max_gap_s: float | None = None

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {self.speed}")
        if self.max_gap_s is not None and self.max_gap_s < 0:
            raise ValueError(f"max_gap_s must be >= 0, got {self.max_gap_s}")

    def offset_s(self, previous_offset_s: float, previous_ts: datetime, ts: datetime) -> float:
        """Recording-time offset of an event from the first one, with long gaps squeezed."""
        gap_s = (ts - previous_ts).total_seconds()
        if self.max_gap_s is not None:
            gap_s = min(gap_s, self.max_gap_s)
        return previous_offset_s + max(gap_s, 0.0)

    def release_offset(self, offset_s: float) -> timedelta:
        """How long after the start an event `offset_s` into the recording is released."""
        return timedelta(seconds=offset_s / self.speed if self.speed else offset_s)

    def delay_s(self, offset_s: float, started_at_s: float, now_s: float) -> float:
        """Seconds to wait before releasing an event `offset_s` into the recording."""
        if self.speed == 0:
            return 0.0
        return max(started_at_s + offset_s / self.speed - now_s, 0.0)


class ReplaySource:
    """A Source replaying files of BehaviorEvent JSON Lines one after the other."""

    name = "replay"

    def __init__(
        self,
        paths: Sequence[Path],
        pacer: Pacer,
        *,
        retime: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.paths = list(paths)
        self.pacer = pacer
        self.retime = retime
        self.stats = SourceStats()
        self._clock, self._sleep, self._now = clock, sleep, now

    async def events(self) -> AsyncIterator[BehaviorEvent]:
        """All events of all files, each released at its paced time."""
        started_at_s, started_at = self._clock(), self._now()
        previous: datetime | None = None
        offset_s = 0.0
        for index, event in enumerate(self._all_events()):
            offset_s = self.pacer.offset_s(offset_s, previous or event.ts, event.ts)
            previous = max(previous or event.ts, event.ts)
            await self._wait(offset_s, started_at_s, index)
            if self.retime:
                event = event.model_copy(update={"ts": started_at + self.pacer.release_offset(offset_s)})
            yield event

    async def _wait(self, offset_s: float, started_at_s: float, index: int) -> None:
        delay_s = self.pacer.delay_s(offset_s, started_at_s, self._clock())
        if delay_s > 0:
            await self._sleep(delay_s)
        elif index % _YIELD_EVERY_EVENTS == 0:
            await asyncio.sleep(0)

    def _all_events(self) -> Iterator[BehaviorEvent]:
        for path in self.paths:
            with open_binary(path) as handle:
                yield from read_behavior_events(handle, self.stats)
