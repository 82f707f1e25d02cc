"""When a pipeline worker saves its trees and commits: a checkpoint in progress and the schedule.

A checkpoint costs CPU in proportion to the processes changed since the last one, not to the
events: a busy process is re-encoded once per checkpoint however many events it had
(`tree_state.ForestEncoder` re-encodes only the processes touched). So when the last checkpoint's
state writes cost more than `STATE_CPU_SHARE` of the CPU the rest of the worker used over the same
time, the next one begins proportionally later, up to `MAX_STRETCH` commit intervals. A worker that
fetched nothing for half an interval checkpoints at the plain interval, so a drained backlog is
committed about as soon as before. What a commit covers does not change (offsets still follow their
states' acks); a crash under load replays more events, as with a longer interval.

Pure: the wall clock comes in as `now_ms` arguments and the CPU clock is injectable, so the worker,
its tests and `bench/core_checkpoint.py` use the same rule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_STRETCH", "STATE_CPU_SHARE", "Checkpoint", "CommitSchedule", "overdue", "spaced_interval_ms"]

STATE_CPU_SHARE = 0.20  # checkpoints are spaced so that state writes cost at most this share of the rest
MAX_STRETCH = 5  # ... but never more than this many commit intervals apart


@dataclass(slots=True)
class Checkpoint:
    """A commit in progress: offsets taken when it began, devices whose state must be saved first.

    Device states are written a slice at a time when the worker has nothing fetched to process
    (idle time), or after every batch once the checkpoint is `overdue`, so saving hundreds of
    trees never stalls the stream for long. A device changed after the checkpoint began may be saved
    with those later events in it; after a crash they are replayed from `offsets` onto that state and
    dropped as redeliveries (the forest's per-device seq high-water mark), so nothing is applied twice.
    """

    offsets: dict[int, int]
    devices: set[str]
    began_ms: int = 0  # when it took its offsets
    acks: list[asyncio.Future[Any]] | None = None  # once every state is sent: what must be acked
    cpu_s: float = 0.0  # CPU time spent encoding and handing over its states


def overdue(checkpoint: Checkpoint, now_ms: int, interval_ms: int) -> bool:
    """Whether a checkpoint has waited long enough for idle time: one commit interval since it began.

    A worker with spare time writes states only while nothing fetched waits (a record then waits for
    one slice at most); a worker that is never idle (a backlog) writes a slice after every batch once
    this is true, so its checkpoints still end, about an interval later than they began."""
    return now_ms - checkpoint.began_ms >= interval_ms


def spaced_interval_ms(interval_ms: float, elapsed_ms: float, state_cpu_s: float, rest_cpu_s: float) -> float:
    """Time until the next checkpoint, after one whose state writes took `state_cpu_s` while the rest
    of the worker used `rest_cpu_s` over `elapsed_ms`: the same writes again would cost
    `STATE_CPU_SHARE` of the rest (in fact less: a process changed twice is saved once)."""
    wanted = elapsed_ms * state_cpu_s / (STATE_CPU_SHARE * max(rest_cpu_s, 0.001))
    return min(interval_ms * MAX_STRETCH, max(interval_ms, wanted))


class CommitSchedule:
    """Whether a checkpoint is due; told when records were fetched and when a commit point ended."""

    def __init__(self, interval_ms: int, cpu_clock: Callable[[], float] = time.process_time) -> None:
        self.interval_ms = interval_ms
        self._cpu_clock = cpu_clock
        self._next_ms = 0  # the next checkpoint begins at this time (stretched under load)...
        self._committed_ms = 0  # ... or, when quiet, an interval after the last commit point
        self._fetched_ms = 0  # when a poll last fetched records
        self._cpu_mark = cpu_clock()  # process CPU time at the last commit point

    def start(self, now_ms: int) -> None:
        """The worker begins: the first checkpoint is an interval away."""
        self._cpu_mark = self._cpu_clock()
        self.committed(now_ms, 0.0)

    def fetched(self, now_ms: int) -> None:
        self._fetched_ms = now_ms

    def due(self, now_ms: int) -> bool:
        interval = self.interval_ms
        quiet = now_ms - self._fetched_ms >= interval // 2 and now_ms - self._committed_ms >= interval
        return now_ms >= self._next_ms or quiet

    def committed(self, now_ms: int, state_cpu_s: float) -> None:
        """A commit point ended at `now_ms`; its state writes took `state_cpu_s` of CPU."""
        cpu = self._cpu_clock()
        rest_cpu_s, self._cpu_mark = max(cpu - self._cpu_mark - state_cpu_s, 0.001), cpu
        elapsed, self._committed_ms = max(now_ms - self._committed_ms, self.interval_ms), now_ms
        self._next_ms = now_ms + round(spaced_interval_ms(self.interval_ms, elapsed, state_cpu_s, rest_cpu_s))
