"""`python -m bench.bench_pipeline --throughput-only`: the raw read and the whole worker path on one
backlog, against the real broker, with the worker thread's CPU share; and its refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench(*args: str, bootstrap: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RINGFENCE_KAFKA_BOOTSTRAP": bootstrap, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bench.bench_pipeline", "--throughput-only", *args],
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
    done = _bench("--events", "2000", "--repeat", "2", bootstrap=kafka_bootstrap)
    assert done.returncode == 0, done.stderr[-2000:]
    for run in (1, 2):
        rate = re.search(
            rf"full worker path, 50 ev/record, backlog of 2,000 events, run {run}\s+([\d,.]+) events/s\s+"
            r"([\d,.]+)\s+([\d.]+)x",
            done.stdout,
        )
        assert rate, done.stdout
        figure, raw, ratio = (float(v.replace(",", "")) for v in rate.groups())
        assert figure > 0 and raw > 0 and abs(ratio - figure / raw) < 0.01
        busy = re.search(rf"worker thread on the CPU, run {run}\s+([\d.]+) % of the timed", done.stdout)
        assert busy, done.stdout
        assert 0.0 < float(busy.group(1)) <= 110.0  # thread CPU over wall time: at most about all of it


def test_throughput_only_refuses_a_backlog_too_small_to_time_before_touching_kafka() -> None:
    done = _bench("--events", "10", bootstrap="127.0.0.1:1")  # nothing listens there: refused first
    assert done.returncode == 2
    assert "--throughput-only needs --events >= 1000" in done.stderr
