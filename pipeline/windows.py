"""Sliding windows of behaviour: what a process (and its subtree) did in the last few minutes.

Every event is reduced at ingest to a few behaviour codes (`pipeline.behaviour`) and stored on its
process node as one packed integer `(ts_ms << 8) | code`. Counting a window is then a mask over
timestamps and a bincount over codes, which numpy does for thousands of processes in one call.
These are free functions over plain values, so the stream, training and offline hunting count
behaviour identically.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
from numpy.typing import NDArray

from pipeline.behaviour import N_COUNTERS, Counter

DEFAULT_WINDOW_MS = 5 * 60 * 1000
CODE_BITS = 8
CODE_MASK = (1 << CODE_BITS) - 1


def pack(ts_ms: int, code: int) -> int:
    """One evidence record as an int: timestamp in the high bits, behaviour code in the low 8."""
    return ts_ms << CODE_BITS | code


def unpack(packed: int) -> tuple[int, Counter]:
    """Inverse of `pack`."""
    return packed >> CODE_BITS, Counter(packed & CODE_MASK)


def window_ranges(timestamp_ms: int, duration_ms: int, step_ms: int | None = None) -> list[tuple[int, int]]:
    """[start, end) ranges of the hopping windows that contain `timestamp_ms` (tumbling when step is None)."""
    step = duration_ms if step_ms is None else step_ms
    if duration_ms <= 0 or step <= 0:
        raise ValueError("window duration and step must be positive")
    last_start = timestamp_ms - timestamp_ms % step
    starts = range(last_start, timestamp_ms - duration_ms, -step)
    return [(start, start + duration_ms) for start in reversed(starts)]


def sliding_start(end_ms: int, duration_ms: int = DEFAULT_WINDOW_MS) -> int:
    """First timestamp inside the sliding window (end_ms - duration_ms, end_ms]."""
    return end_ms - duration_ms + 1


@dataclass(frozen=True, slots=True)
class ProcessWindow:
    """Behaviour of one process in one window: counts indexed by `Counter`."""

    start_ms: int
    end_ms: int
    counts: tuple[int, ...]

    def __getitem__(self, counter: Counter) -> int:
        return self.counts[counter]

    def nonzero(self) -> dict[str, int]:
        """Counter name -> count for every counter that fired (for alert evidence)."""
        return {Counter(i).name.lower(): n for i, n in enumerate(self.counts) if n}


def process_window(
    evidence: Iterable[int], end_ms: int, duration_ms: int = DEFAULT_WINDOW_MS
) -> ProcessWindow:
    """Count one process's packed evidence inside the sliding window ending at `end_ms`."""
    row = count_windows([evidence], np.array([sliding_start(end_ms, duration_ms)], dtype=np.int64))[0]
    return ProcessWindow(sliding_start(end_ms, duration_ms), end_ms, tuple(int(n) for n in row))


def count_windows(evidence: Sequence[Iterable[int]], starts_ms: NDArray[np.int64]) -> NDArray[np.float32]:
    """Counts per node (rows) and counter (columns) of evidence at or after each node's window start."""
    n_nodes = len(evidence)
    lengths = np.fromiter((len(e) for e in evidence), dtype=np.int64, count=n_nodes)  # type: ignore[arg-type]
    flat = np.fromiter(chain.from_iterable(evidence), dtype=np.int64, count=int(lengths.sum()))
    owner = np.repeat(np.arange(n_nodes, dtype=np.int64), lengths)
    codes = flat & CODE_MASK
    keep = ((flat >> CODE_BITS) >= starts_ms[owner]) & (codes < N_COUNTERS)
    cells = owner[keep] * N_COUNTERS + codes[keep]
    counts = np.bincount(cells, minlength=n_nodes * N_COUNTERS)[: n_nodes * N_COUNTERS]
    return counts.reshape(n_nodes, N_COUNTERS).astype(np.float32)


def sum_groups(values: NDArray[np.float32], groups: Sequence[Sequence[int]]) -> NDArray[np.float32]:
    """Row g of the result is the sum of `values` rows listed in groups[g] (e.g. a subtree's nodes)."""
    sizes = np.fromiter((len(g) for g in groups), dtype=np.int64, count=len(groups))
    members = np.fromiter(chain.from_iterable(groups), dtype=np.int64, count=int(sizes.sum()))
    out = np.zeros((len(groups), values.shape[1]), dtype=np.float32)
    nonempty = sizes > 0
    if members.size:
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        out[nonempty] = np.add.reduceat(values[members], offsets[nonempty], axis=0)
    return out


def distinct_in_window(records: Iterable[tuple[int, str]], start_ms: int) -> int:
    """Distinct values among (ts_ms, value) records at or after `start_ms` (e.g. destination IPs)."""
    return len({value for ts_ms, value in records if ts_ms >= start_ms})
