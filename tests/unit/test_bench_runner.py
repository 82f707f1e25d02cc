"""`python -m bench`: results print with their same-run baseline; a broken module fails the run."""

from __future__ import annotations

import pytest

from bench import Result
from bench.__main__ import discover, format_results, main, run_one


def test_ratio_is_figure_over_baseline() -> None:
    assert Result("p", 50.0, "events/s", baseline=200.0).ratio == 0.25
    assert Result("p", 50.0, "events/s").ratio is None
    assert Result("p", 50.0, "events/s", baseline=0.0).ratio is None


def test_table_shows_value_baseline_and_ratio() -> None:
    text = format_results([Result("pipeline: events/s", 1500.0, "events/s", 3000.0, "getmany + orjson")])
    assert "pipeline: events/s" in text
    assert "1,500.0 events/s" in text
    assert "0.50x" in text
    assert "baseline: getmany + orjson" in text


def test_discovery_only_picks_bench_modules() -> None:
    assert all(name.startswith("bench_") for name in discover(None))
    assert discover("no-such-benchmark") == []


def test_missing_module_is_a_failure_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    results, ok = run_one("bench_does_not_exist", quick=True)
    assert (results, ok) == ([], False)
    assert "bench_does_not_exist: FAILED" in capsys.readouterr().out


def test_no_matching_module_is_reported() -> None:
    assert main(["--only", "no-such-benchmark"]) == 0
