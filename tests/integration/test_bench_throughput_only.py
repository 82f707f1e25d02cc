"""`python -m bench.bench_pipeline --throughput-only`: the raw read and the whole worker path on one
backlog, against the real broker, with the worker thread's CPU share; and its refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench._worker_parts import DECODE, FLUSH, INCIDENTS, OTHER, PART_NAMES, TREE, WAITING

REPO = Path(__file__).resolve().parents[2]


def _bench(*args: str, bootstrap: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RINGFENCE_KAFKA_BOOTSTRAP": bootstrap, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bench.bench_pipeline", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_throughput_only_prints_each_run_against_its_raw_read_and_the_worker_threads_cpu_share(
    kafka_bootstrap: str,
) -> None:
    done = _bench("--throughput-only", "--events", "2000", "--repeat", "2", bootstrap=kafka_bootstrap)
    assert done.returncode == 0, done.stderr[-2000:]
    for run in (1, 2):
        rate = re.search(
            r"full worker path, 50 ev/record, backlog of 2,000 generated events, "
            rf"model ringfence-\S+, run {run}\s+"
            r"([\d,.]+) events/s\s+"
            r"([\d,.]+)\s+([\d.]+)x",
            done.stdout,
        )
        assert rate, done.stdout
        figure, raw, ratio = (float(v.replace(",", "")) for v in rate.groups())
        assert figure > 0 and raw > 0 and abs(ratio - figure / raw) < 0.01
        busy = re.search(rf"worker thread on the CPU, run {run}\s+([\d.]+) % of the timed", done.stdout)
        assert busy, done.stdout
        assert 0.0 < float(busy.group(1)) <= 100.5  # one thread's CPU time over wall time: at most all of it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--throughput-only", "--events", "10"), "--throughput-only needs --events >= 1000"),
        (("--throughput-only", "--repeat", "0"), "needs --events >= 1000 and --repeat >= 1"),
        (("--throughput-only", "--quick"), "--quick, --latency-only, --max-rate and --seconds do not apply"),
        (("--events", "5000"), "--events, --repeat, --breakdown and --workload go with --throughput-only"),
        (("--breakdown",), "--events, --repeat, --breakdown and --workload go with --throughput-only"),
        (
            ("--workload", "recorded"),
            "--events, --repeat, --breakdown and --workload go with --throughput-only",
        ),
        (("--throughput-only", "--workload", "lab"), "invalid choice: 'lab'"),
    ],
)
def test_bad_throughput_only_arguments_are_refused_before_touching_kafka(
    args: tuple[str, ...], message: str
) -> None:
    done = _bench(*args, bootstrap="127.0.0.1:1")  # nothing listens there: refused first
    assert done.returncode == 2
    assert message in done.stderr


def test_breakdown_gives_each_part_of_the_path_its_share_of_the_window(kafka_bootstrap: str) -> None:
    done = _bench(
        "--throughput-only", "--events", "2000", "--repeat", "1", "--breakdown", bootstrap=kafka_bootstrap
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shares = {
        name.strip(): float(value)
        for name, value in re.findall(
            r"^\s+(\S[^\n]*?), run 1\s+([\d.]+) % of the timed window", done.stdout, re.M
        )
    }
    busy = shares.pop("worker thread on the CPU")
    assert sorted(shares) == sorted(PART_NAMES), done.stdout
    # the wrapped functions claim the thread's work: what none claims is the loop's glue, a small part
    assert shares[OTHER] < 20.0, shares
    for part in (DECODE, TREE, FLUSH, INCIDENTS):  # the 2,000 events decode, fold, score and alert
        assert shares[part] > 0.0, shares
    assert abs(100.0 - shares[WAITING] - busy) < 0.5  # what was not waiting was on the CPU


def test_the_recorded_workload_measures_the_worker_on_real_telemetry_against_its_raw_read(
    kafka_bootstrap: str,
) -> None:
    """`--workload recorded`: ../shared's OTRF recordings replayed as agents publish them, the worker's
    rate against the raw read of the same topic; without the recordings, a clear refusal."""
    done = _bench(
        "--throughput-only",
        "--events",
        "3000",
        "--repeat",
        "1",
        "--workload",
        "recorded",
        bootstrap=kafka_bootstrap,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rate = re.search(
        r"full worker path, recorded telemetry, up to 50 ev/record, backlog of ([\d,]+) recorded events, "
        r"model ringfence-\S+, run 1\s+"
        r"([\d,.]+) events/s\s+([\d,.]+)\s+([\d.]+)x",
        done.stdout,
    )
    assert rate, done.stdout
    backlog, figure, raw, ratio = (float(v.replace(",", "")) for v in rate.groups())
    assert 3000 <= backlog < 3000 + 50 and figure > 0 and raw > 0 and abs(ratio - figure / raw) < 0.01
    missing = subprocess.run(
        [sys.executable, "-m", "bench.bench_pipeline", "--throughput-only", "--workload", "recorded"],
        cwd=REPO,
        env={
            **os.environ,
            "RINGFENCE_SHARED": str(REPO / "no-such-folder"),
            "RINGFENCE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode == 2 and "--workload recorded needs the recordings" in missing.stderr
