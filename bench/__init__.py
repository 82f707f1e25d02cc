"""Benchmarks, run by `make bench` (`python -m bench`): each `bench/bench_*.py` module exposes
`run(quick: bool) -> list[Result]`.

Figures are reported next to a baseline measured *in the same run on the same machine* (e.g. raw
aiokafka `getmany` + orjson for the pipeline), because absolute numbers on a shared machine mean
little while the ratio says what our code costs on top of the floor.
"""

from __future__ import annotations

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
