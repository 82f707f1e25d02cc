"""`ingest --kafka` / `replay --kafka`: events go through the durable spool and publisher; what the broker
does not acknowledge stays spooled, is reported, and goes first next time."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_fakes import FakeKafka

from agents.cli import main
from agents.kafka_sink import BacklogLeft, KafkaSinkConfig, kafka_sink
from agents.publisher import PublisherConfig
from agents.spool import Spool
from agents.sysmon import SysmonSource, load_events
from schemas.events import BehaviorEvent

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sysmon" / "otrf_excerpt.jsonl"
EVENTS = "t.events"


def sink_config(tmp_path: Path, flush_timeout_s: float = 5.0) -> KafkaSinkConfig:
    publisher = PublisherConfig(events_topic=EVENTS, devices_topic="t.devices", batch_max_events=4,
                                linger_ms=10, spool_commit_ms=0, retry_backoff_initial_s=0.01,
                                retry_backoff_max_s=0.05)
    return KafkaSinkConfig(spool_path=tmp_path / "spool.db", publisher=publisher,
                           flush_timeout_s=flush_timeout_s)


async def none() -> AsyncIterator[BehaviorEvent]:
    return
    yield  # an async generator with nothing in it


async def test_every_event_arrives_once_in_batches_keyed_by_device(tmp_path: Path) -> None:
    kafka = FakeKafka()
    count = await kafka_sink(sink_config(tmp_path), kafka.factory)(SysmonSource([FIXTURE]).events())
    expected = list(load_events(FIXTURE))
    batches = kafka.batches(EVENTS)
    assert count == len(expected) == 15
    assert sorted(e.event_id for b in batches for e in b.events) == sorted(e.event_id for e in expected)
    assert [key for key, _v in kafka.values(EVENTS)] == [b.device_id.encode() for b in batches]
    assert all(len(b.events) <= 4 for b in batches)
    for device in {e.device_id for e in expected}:  # per device: the log's order, seq from 0
        got = [e for b in batches if b.device_id == device for e in b.events]
        assert [e.event_id for e in got] == [e.event_id for e in expected if e.device_id == device]
        assert [e.seq for e in got] == list(range(len(got)))


async def test_an_unreachable_broker_leaves_a_reported_backlog_sent_first_next_time(tmp_path: Path) -> None:
    kafka = FakeKafka(down=True)
    with pytest.raises(BacklogLeft, match="15 events were not acknowledged") as raised:
        await kafka_sink(sink_config(tmp_path, flush_timeout_s=0.2), kafka.factory)(
            SysmonSource([FIXTURE]).events())
    assert raised.value.spool_path == tmp_path / "spool.db" and kafka.records == []

    kafka.down = False
    assert await kafka_sink(sink_config(tmp_path), kafka.factory)(none()) == 0
    assert sorted(e.event_id for b in kafka.batches(EVENTS) for e in b.events) == sorted(
        e.event_id for e in load_events(FIXTURE))


def test_ingest_kafka_with_no_broker_exits_2_and_keeps_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RINGFENCE_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("RINGFENCE_AGENT_RETRY_BACKOFF_INITIAL_S", "0.05")
    spool_dir = tmp_path / "spool"
    code = main(["ingest", str(FIXTURE), "--kafka", "--spool-dir", str(spool_dir),
                 "--flush-timeout-s", "0.5"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "15 events were not acknowledged" in err and str(spool_dir) in err
    assert "read 17, mapped 15, skipped 2" in err  # the summary is still printed
    spool = Spool(spool_dir / "spool.db")
    assert spool.pending_events == 15
    spool.close()


def test_a_spool_in_use_is_refused_with_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool_dir = tmp_path / "spool"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from pathlib import Path; from agents.spool import Spool; "
         f"s = Spool(Path({str(spool_dir / 'spool.db')!r})); print('ready', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert main(["ingest", str(FIXTURE), "--kafka", "--spool-dir", str(spool_dir)]) == 2
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert "is in use by another process" in capsys.readouterr().err


def test_output_options_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ingest", str(FIXTURE), "--kafka", "--stdout"])
    assert "not allowed with argument" in capsys.readouterr().err
