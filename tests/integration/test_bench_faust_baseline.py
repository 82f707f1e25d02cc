"""The pipeline benchmark's faust baseline (`bench._pipeline_faust`, its own process): it measures the
agent path over a real topic, and leaves nothing behind outside the benchmark's temporary folder (the
parent stops it with a signal, so a folder of its own in the system's temp dir was never removed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench._pipeline_kafka import Bench
from bench.bench_pipeline import _faust_rate, _filled_topic
from schemas.topics import KafkaSettings


def test_the_faust_baseline_measures_a_rate_and_keeps_its_data_in_the_benchmarks_folder(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))  # the child's tempfile.gettempdir()
    workdir = tmp_path / "bench"
    workdir.mkdir()
    bench = Bench(KafkaSettings(bootstrap=kafka_bootstrap), workdir)

    async def measure() -> float:
        await bench.setup()
        try:
            topic, _, count = await _filled_topic(bench, 50, 1_000)
            return await asyncio.to_thread(_faust_rate, bench, topic, count)
        finally:
            await bench.cleanup()

    rate = asyncio.run(measure())
    assert rate > 0
    assert list(system_tmp.iterdir()) == []  # nothing left where the system keeps temporary files
    assert any(p.name.endswith("-data") for p in workdir.iterdir())  # its data: in the bench's folder
