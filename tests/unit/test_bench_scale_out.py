"""The scale-out measure's start condition: the backlog is written only once every worker holds its share.

Before session I the backlog was written first and the clock started at the first worker's
assignment, so the second worker's start-up and the rebalance were inside the measure (two workers
measured slower than one). These tests pin what "every worker holds its share" reads from the
worker processes' logs (`pipeline.worker`'s "assigned events partitions [..]" line).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._pipeline_kafka import WorkerProcess
from bench.bench_pipeline import SCALE_PARTITIONS, _shared

LINE = "2026-11-27 18:59:20,801 INFO pipeline.worker: assigned events partitions {} (kept 0, restored 0)\n"
REVOKED = "2026-11-27 18:59:20,061 INFO pipeline.worker: revoked events partitions [0, 1, 2, 3]\n"


def _process(tmp_path: Path, name: str, log: str) -> WorkerProcess:
    """A WorkerProcess reading `log` (no process is started)."""
    worker = WorkerProcess.__new__(WorkerProcess)
    worker.log = tmp_path / name
    worker.log.write_text(log)
    return worker


def test_the_latest_assignment_is_read_from_the_log(tmp_path: Path) -> None:
    assert _process(tmp_path, "none.log", "worker starting\n").partitions() == []
    first_then_split = LINE.format("[0, 1, 2, 3]") + REVOKED + LINE.format("[0, 2]")
    assert _process(tmp_path, "split.log", first_then_split).partitions() == [0, 2]
    assert _process(tmp_path, "empty.log", LINE.format("[]")).partitions() == []


@pytest.mark.parametrize(
    ("logs", "shared"),
    [
        ([LINE.format("[0, 1, 2, 3]")], True),  # one worker holds them all
        ([LINE.format("[0, 1, 2]")], False),  # a partition is nobody's yet
        ([LINE.format("[0, 1, 2, 3]"), ""], False),  # the second has not joined yet
        ([LINE.format("[0, 1, 2, 3]"), LINE.format("[1, 3]")], False),  # mid-rebalance: 1 and 3 twice
        ([LINE.format("[0, 1, 2, 3]") + REVOKED + LINE.format("[0, 2]"), LINE.format("[1, 3]")], True),
        ([LINE.format("[0, 1, 2, 3]") + REVOKED + LINE.format("[]"), LINE.format("[0, 1, 2, 3]")], False),
    ],
)
def test_the_backlog_waits_until_every_worker_holds_its_share(
    tmp_path: Path, logs: list[str], shared: bool
) -> None:
    assert SCALE_PARTITIONS == 4
    workers = [_process(tmp_path, f"w{i}.log", log) for i, log in enumerate(logs)]
    assert _shared(workers) is shared
