"""`ringfence-agent ingest --kafka` and `replay --kafka` against the real broker: the .evtx samples'
events arrive once each, as EventBatch records keyed by device, with each device's seq from 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from shared_data import shared_datasets

from agents.cli import main
from agents.sysmon import load_many
from schemas.codec import decode_batch, encode_event
from schemas.events import EventBatch

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def samples() -> Path:
    """The six .evtx samples of ../shared/datasets (`RINGFENCE_SHARED` overrides; missing fails)."""
    return shared_datasets("evtx-samples")


async def read_batches(bootstrap: str, topic: str, want_events: int, timeout_s: float = 30) -> list[
        tuple[bytes, EventBatch]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    got: list[tuple[bytes, EventBatch]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while sum(len(b.events) for _k, b in got) < want_events and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend((record.key, decode_batch(record.value)) for record in records)
    finally:
        await consumer.stop()
    return got


def test_ingest_kafka_ships_the_evtx_samples_keyed_by_device(
    samples: Path, tmp_path: Path, kafka_bootstrap: str, unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = unique_name("it-ingest-events")
    monkeypatch.setenv("RINGFENCE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("RINGFENCE_AGENT_EVENTS_TOPIC", topic)
    expected = list(load_many(sorted(samples.glob("*.evtx"))))
    assert len(expected) >= 10 and len({e.device_id for e in expected}) >= 2

    code = main(["ingest", str(samples), "--kafka", "--spool-dir", str(tmp_path / "spool")])
    assert code == 0, capsys.readouterr().err
    got = asyncio.run(read_batches(kafka_bootstrap, topic, len(expected)))

    assert all(key == batch.device_id.encode() for key, batch in got)
    events = [event for _key, batch in got for event in batch.events]
    assert sorted(e.event_id for e in events) == sorted(e.event_id for e in expected)  # each once
    for device in {e.device_id for e in expected}:
        mine = [e for e in events if e.device_id == device]
        assert [e.seq for e in mine] == list(range(len(mine)))
        assert [e.event_id for e in mine] == [e.event_id for e in expected if e.device_id == device]


def test_replay_kafka_ships_a_recording(
    samples: Path, tmp_path: Path, kafka_bootstrap: str, unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = unique_name("it-replay-events")
    monkeypatch.setenv("RINGFENCE_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("RINGFENCE_AGENT_EVENTS_TOPIC", topic)
    recorded = list(load_many(sorted(samples.glob("*.evtx"))))
    recording = tmp_path / "rec.jsonl"
    recording.write_bytes(b"".join(encode_event(e) + b"\n" for e in recorded))

    spool_dir = str(tmp_path / "spool")
    assert main(["replay", str(recording), "--speed", "0", "--kafka", "--spool-dir", spool_dir]) == 0
    got = asyncio.run(read_batches(kafka_bootstrap, topic, len(recorded)))
    assert sorted(e.event_id for _k, b in got for e in b.events) == sorted(e.event_id for e in recorded)
    assert {key for key, _b in got} == {e.device_id.encode() for e in recorded}
