"""`python -m bench`: medians over runs, selection by name, failures reported, the broker always stopped.

The benchmark modules here are fakes written to a temporary package (no broker, no CPU load): the
runner discovers and imports them exactly as it does `bench/bench_*.py`.
"""

from __future__ import annotations

import importlib
import json
import os
import textwrap
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import bench.__main__ as runner
from bench import Result, Spread, Summary, summarize
from bench._machine import machine

STEADY = """
    from bench import Result
    NEEDS_KAFKA = False
    _RUNS = iter([(10.0, 100.0), (30.0, 100.0), (20.0, 50.0)])

    def run(quick):
        figure, baseline = next(_RUNS)
        return [Result("steady throughput", figure, "events/s", baseline, "raw reads"),
                Result("steady latency", figure / 10, "ms", higher_is_better=False)]
"""
BROKEN = """
    NEEDS_KAFKA = False

    def run(quick):
        raise RuntimeError("the broker exploded")
"""
QUICKCHECK = """
    from bench import Result
    NEEDS_KAFKA = False

    def run(quick):
        return [Result("quick flag", 1.0 if quick else 0.0, "bool")]
"""
LATE_FAILURE = """
    def run(quick):
        raise RuntimeError("boom")
"""
USES_KAFKA = """
    import os
    from bench import Result

    def run(quick):
        return [Result("bootstrap seen: " + os.environ.get("RINGFENCE_KAFKA_BOOTSTRAP", "none"), 1.0, "x")]
"""


def make_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **modules: str) -> ModuleType:
    """A package `fakebench_<random>` holding `bench_<name>.py` for each keyword."""
    name = f"fakebench_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for module, source in modules.items():
        (folder / f"bench_{module}.py").write_text(textwrap.dedent(source))
    (folder / "helper_not_a_bench.py").write_text("raise AssertionError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def run_main(package: ModuleType, *argv: str) -> int:
    return runner.main(list(argv), package=package)


# ---------------------------------------------------------------- medians, min/max, ratios


def test_medians_min_max_and_the_median_of_per_run_ratios() -> None:
    runs = [[Result("t", 10.0, "events/s", 100.0)], [Result("t", 30.0, "events/s", 100.0)],
            [Result("t", 20.0, "events/s", 50.0)]]
    (summary,) = summarize(runs)
    assert summary.figure == Spread(20.0, 10.0, 30.0)
    assert summary.baseline == Spread(100.0, 50.0, 100.0)
    # per-run ratios 0.1, 0.3, 0.4: the median is 0.3, not 20/100 (a ratio of two medians)
    assert summary.ratio is not None
    assert (summary.ratio.median, summary.ratio.low, summary.ratio.high) == pytest.approx((0.3, 0.1, 0.4))
    assert summary.runs == 3


def test_even_run_count_takes_the_mean_of_the_middle_two() -> None:
    (summary,) = summarize([[Result("t", v, "ms", higher_is_better=False)] for v in (4.0, 1.0, 3.0, 2.0)])
    assert summary.figure == Spread(2.5, 1.0, 4.0)
    assert summary.baseline is None and summary.ratio is None
    assert summary.higher_is_better is False


def test_names_with_per_run_counts_still_line_up_by_position() -> None:
    runs = [[Result("p99 (40 samples)", 90.0, "ms"), Result("rate", 5.0, "events/s")],
            [Result("p99 (38 samples)", 110.0, "ms"), Result("rate", 7.0, "events/s")]]
    p99, rate = summarize(runs)
    assert p99.name == "p99 (40 samples)" and p99.other_names == ("p99 (38 samples)",)
    assert p99.figure == Spread(100.0, 90.0, 110.0)
    assert rate.figure.median == 6.0


def test_runs_of_different_shapes_are_matched_by_name() -> None:
    runs = [[Result("a", 1.0, "x"), Result("b", 10.0, "y")], [Result("b", 30.0, "y")]]
    a, b = summarize(runs)
    assert (a.name, a.runs, a.figure.median) == ("a", 1, 1.0)
    assert (b.name, b.runs, b.figure.median) == ("b", 2, 20.0)


def test_zero_baseline_gives_no_ratio_instead_of_a_crash() -> None:
    summary = Summary.of([Result("t", 5.0, "x", baseline=0.0)])
    assert summary.ratio is None and summary.baseline == Spread(0.0, 0.0, 0.0)


def test_the_table_shows_median_spread_baseline_and_ratio() -> None:
    text = runner.format_summaries(summarize([[Result("t", 10.0, "events/s", 100.0, "raw")],
                                              [Result("t", 30.0, "events/s", 100.0, "raw")]]))
    assert "20.0 events/s" in text and "[10.0 .. 30.0]" in text
    assert "0.2x [0.1 .. 0.3]" in text
    assert "baseline: raw [100.0 .. 100.0]" in text


# ---------------------------------------------------------------- selection


AVAILABLE = ["bench_agent", "bench_contracts", "bench_kafka_baseline", "bench_pipeline"]


@pytest.mark.parametrize("name", ["pipeline", "bench_pipeline", "pipe"])
def test_a_name_selects_its_module(name: str) -> None:
    assert runner.select([name], AVAILABLE) == ["bench_pipeline"]


def test_hyphens_and_order_are_kept_and_duplicates_dropped() -> None:
    chosen = runner.select(["kafka-baseline", "agent", "kafka"], AVAILABLE)
    assert chosen == ["bench_kafka_baseline", "bench_agent"]


def test_no_names_selects_everything() -> None:
    assert runner.select([], AVAILABLE) == AVAILABLE


def test_an_unknown_name_lists_what_exists() -> None:
    with pytest.raises(runner.UnknownBenchmark, match=r"unknown benchmark 'pipelines'.*agent, contracts"):
        runner.select(["pipelines"], AVAILABLE)


def test_an_ambiguous_prefix_is_refused() -> None:
    with pytest.raises(runner.UnknownBenchmark, match="ambiguous"):
        runner.select(["a"], ["bench_agent", "bench_alerts"])


def test_unknown_name_on_the_command_line_exits_2_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = make_package(tmp_path, monkeypatch, steady=STEADY)
    assert run_main(package, "steady", "nope") == 2
    captured = capsys.readouterr()
    assert "unknown benchmark 'nope'; available: steady" in captured.err
    assert "== steady" not in captured.out


def test_only_the_named_benchmark_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = make_package(tmp_path, monkeypatch, steady=STEADY, broken=BROKEN)
    assert run_main(package, "steady", "--repeat", "1") == 0
    out = capsys.readouterr().out
    assert "steady throughput" in out and "broken" not in out


# ---------------------------------------------------------------- running


def test_repeats_report_medians_and_write_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = make_package(tmp_path, monkeypatch, steady=STEADY)
    out_file = tmp_path / "out.json"
    assert run_main(package, "--repeat", "3", "--json", str(out_file)) == 0
    out = capsys.readouterr().out
    assert "steady: 3 run(s)" in out and "20.0 events/s" in out and "0.3x [0.1 .. 0.4]" in out
    report = json.loads(out_file.read_text())
    steady = report["benchmarks"]["steady"]
    assert steady["ok"] is True and len(steady["runs"]) == 3 and len(steady["seconds"]) == 3
    assert steady["summary"][0]["figure"] == {"median": 20.0, "low": 10.0, "high": 30.0}
    assert report["machine"]["cores"] >= 1 and report["machine"]["memory_gib"] > 0


def test_a_failing_benchmark_is_reported_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = make_package(tmp_path, monkeypatch, broken=BROKEN, steady=STEADY)
    out_file = tmp_path / "out.json"
    assert run_main(package, "--repeat", "2", "--json", str(out_file)) == 1
    out = capsys.readouterr().out
    assert "steady throughput" in out  # ran after the broken one (alphabetical order)
    assert "1 of 2 benchmark(s) succeeded" in out
    assert "broken: FAILED (RuntimeError: the broker exploded)" in out
    report = json.loads(out_file.read_text())["benchmarks"]
    assert report["broken"]["ok"] is False and report["broken"]["runs"] == []
    assert report["steady"]["ok"] is True


def test_quick_passes_the_flag_and_runs_a_fast_benchmark_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = make_package(tmp_path, monkeypatch, quickcheck=QUICKCHECK)
    assert run_main(package, "--quick") == 0
    out = capsys.readouterr().out
    assert "quickcheck: 2 run(s)" in out and "1 bool" in out


def test_quick_runs_a_slow_benchmark_once() -> None:
    quick = runner.Options(quick=True)
    assert runner.repeats(quick, first_run_s=runner.QUICK_SECOND_RUN_S + 1) == 1
    assert runner.repeats(quick, first_run_s=1.0) == 2
    assert runner.repeats(runner.Options(), first_run_s=100.0) == runner.FULL_REPEAT
    assert runner.repeats(runner.Options(quick=True, repeat=4), first_run_s=100.0) == 4


def test_repeat_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        runner.main(["--repeat", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_header_names_machine_date_and_commit() -> None:
    text = runner.header(machine(), runner.Options(quick=True))
    assert "cores (" in text and "GiB memory" in text and "commit " in text and "UTC" in text
    assert "quick, 1-2 run(s)" in text


# ---------------------------------------------------------------- the broker


def test_a_configured_broker_is_used_and_nothing_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RINGFENCE_KAFKA_BOOTSTRAP", "10.9.8.7:9092")
    monkeypatch.setattr("pipeline.kafka_local.LocalKafka.from_env", _must_not_start)
    package = make_package(tmp_path, monkeypatch, kafka=USES_KAFKA)
    assert run_main(package, "--repeat", "1") == 0
    assert "bootstrap seen: 10.9.8.7:9092" in capsys.readouterr().out


def test_no_broker_is_started_for_benchmarks_that_need_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RINGFENCE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setattr("pipeline.kafka_local.LocalKafka.from_env", _must_not_start)
    package = make_package(tmp_path, monkeypatch, steady=STEADY)
    assert run_main(package, "--repeat", "1") == 0


def test_a_started_broker_is_exported_then_stopped_and_purged_even_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RINGFENCE_KAFKA_BOOTSTRAP", raising=False)
    started: list[FakeKafka] = []

    def from_env(port: int, environ: Any) -> FakeKafka:
        started.append(FakeKafka(port))
        return started[-1]

    monkeypatch.setattr("pipeline.kafka_local.LocalKafka.from_env", from_env)
    package = make_package(tmp_path, monkeypatch, kafka=USES_KAFKA, late=LATE_FAILURE)
    assert run_main(package, "--repeat", "1") == 1
    assert len(started) == 1  # one broker for the whole run, started for the first module that needs it
    broker = started[0]
    assert broker.calls == ["up fresh=True", "down purge=True"]
    assert f"bootstrap seen: 127.0.0.1:{broker.port}" in capsys.readouterr().out
    assert "RINGFENCE_KAFKA_BOOTSTRAP" not in os.environ


def test_a_broker_that_cannot_start_fails_only_the_benchmarks_needing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.kafka_local import JavaMissingError

    monkeypatch.delenv("RINGFENCE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setattr("pipeline.kafka_local.LocalKafka.from_env",
                        lambda port, environ: FakeKafka(port, JavaMissingError("Java not found")))
    package = make_package(tmp_path, monkeypatch, kafka=USES_KAFKA, steady=STEADY)
    assert run_main(package, "--repeat", "1") == 1
    out = capsys.readouterr().out
    assert "kafka: FAILED (RuntimeError: no Kafka" in out and "Java not found" in out
    assert "steady throughput" in out


class FakeKafka:
    """Stands in for LocalKafka: records up/down, optionally fails to start."""

    def __init__(self, port: int, failure: Exception | None = None) -> None:
        self.port = port
        self.failure = failure
        self.calls: list[str] = []
        self.paths = type("Paths", (), {"port": port})()

    def up(self, fresh: bool = False) -> None:
        self.calls.append(f"up fresh={fresh}")
        if self.failure is not None:
            raise self.failure

    def down(self, purge: bool = False) -> bool:
        self.calls.append(f"down purge={purge}")
        return True


def _must_not_start(port: int, environ: Any) -> None:
    raise AssertionError("the runner started a local broker")


def test_the_real_suite_has_the_documented_benchmarks() -> None:
    names = runner.discover(None)
    assert {"bench_contracts", "bench_kafka_baseline", "bench_xgboost"} <= set(names)
    assert all(n.startswith("bench_") for n in names)


# ---------------------------------------------------------------- `ringfence bench`


def test_ringfence_bench_reports_an_unknown_name_as_a_cli_error(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main as ringfence

    assert ringfence(["bench", "no-such-benchmark"]) == 2
    err = capsys.readouterr().err
    assert "ringfence: error: unknown benchmark 'no-such-benchmark'" in err
    assert "kafka_baseline" in err and "xgboost" in err


def test_ringfence_bench_runs_the_same_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import main as ringfence

    seen: list[runner.Options] = []

    def run_suite(options: runner.Options) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(runner, "run_suite", run_suite)
    assert ringfence(["bench", "contracts", "xgboost", "--quick", "--repeat", "2"]) == 0
    assert seen == [runner.Options(("contracts", "xgboost"), quick=True, repeat=2)]
