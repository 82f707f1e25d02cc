"""`--throughput-only --repeat K` ends with the median of its runs' ratios: one run moves with the host.

The goal is judged on the worker's rate against the raw read of the same run; single runs minutes
apart have read 0.22 and 0.29, so the line a reader compares with the goal is the runs' middle,
printed with their range.
"""

from __future__ import annotations

import pytest

from bench.bench_pipeline import _median_ratio


def test_the_median_of_the_runs_ratios_is_printed_in_percent_with_their_range() -> None:
    line = _median_ratio([0.29, 0.22, 0.26])
    assert line.figure == pytest.approx(26.0)
    assert line.unit == "% of raw [22.0 .. 29.0]"
    assert "3 runs" in line.name and "25 %" in line.name


def test_an_even_number_of_runs_takes_the_mean_of_the_middle_two() -> None:
    assert _median_ratio([0.24, 0.30, 0.26, 0.28]).figure == pytest.approx(27.0)
