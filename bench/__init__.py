"""Benchmarks, run by `make bench` (`python -m bench`): each `bench/bench_*.py` module exposes
`run(quick: bool) -> list[Result]`, and may set `NEEDS_KAFKA = False` when it never touches a broker
(the runner then does not start one for it).

Figures are reported next to a baseline measured *in the same run on the same machine* (e.g. raw
aiokafka `getmany` + orjson for the pipeline), because absolute numbers on a shared machine mean
little while the ratio says what our code costs on top of the floor. The runner repeats each
benchmark and reports medians with min/max (`summarize`): one run on a noisy machine is an anecdote.
The ratio's median is taken over the per-run ratios, so each ratio still compares two numbers from
the same run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """One measured figure and, when there is one, its same-run baseline."""

    name: str  # what was measured, e.g. "pipeline: events/s per worker"
    figure: float  # the measurement, in `unit`
    unit: str  # "events/s", "ms", "MiB", ...
    baseline: float | None = None  # the same quantity for the reference, measured in the same run
    baseline_name: str = ""  # what the reference is, e.g. "aiokafka getmany + orjson"
    higher_is_better: bool = True  # throughput: True; latency, CPU, memory: False

    @property
    def ratio(self) -> float | None:
        """figure / baseline (None without a baseline)."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.figure / self.baseline


@dataclass(frozen=True)
class Spread:
    """Median, min and max of one quantity over the runs that measured it."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        """None when no run measured it (e.g. no baseline)."""
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values))


@dataclass(frozen=True)
class Summary:
    """One figure over K runs: medians and min/max of figure, baseline and per-run ratio."""

    name: str
    unit: str
    baseline_name: str
    higher_is_better: bool
    runs: int  # how many runs produced this figure
    figure: Spread
    baseline: Spread | None
    ratio: Spread | None
    other_names: tuple[str, ...] = ()  # the name as other runs spelled it (e.g. "(41 samples)")

    @classmethod
    def of(cls, results: Sequence[Result]) -> Summary:
        """Summarize the same figure as measured by several runs (at least one)."""
        first = results[0]
        figure = Spread.of([r.figure for r in results])
        assert figure is not None  # results is not empty
        others = tuple(dict.fromkeys(r.name for r in results if r.name != first.name))
        return cls(
            name=first.name,
            unit=first.unit,
            baseline_name=first.baseline_name,
            higher_is_better=first.higher_is_better,
            runs=len(results),
            figure=figure,
            baseline=Spread.of([r.baseline for r in results if r.baseline is not None]),
            ratio=Spread.of([r.ratio for r in results if r.ratio is not None]),
            other_names=others,
        )


def summarize(runs: Sequence[Sequence[Result]]) -> list[Summary]:
    """One Summary per figure, in the order the first run reported them.

    Runs that report the same number of figures with the same units are matched by position, so a
    name that carries a per-run count ("p99 (40 samples)") still lines up; otherwise figures are
    matched by name and a figure missing from some runs is summarized over the runs that have it.
    """
    runs = [list(run) for run in runs if run]
    if not runs:
        return []
    shapes = {tuple(r.unit for r in run) for run in runs}
    if len(shapes) == 1:
        return [Summary.of([run[i] for run in runs]) for i in range(len(runs[0]))]
    by_name: dict[str, list[Result]] = {}
    for run in runs:
        for result in run:
            by_name.setdefault(result.name, []).append(result)
    return [Summary.of(group) for group in by_name.values()]
