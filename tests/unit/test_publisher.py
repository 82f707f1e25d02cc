"""Publisher with a fake producer: batching, order, outage and restart behaviour without a broker."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agents import telemetry
from agents.publisher import Producer, Publisher, PublisherConfig, PublisherStats
from agents.spool import Spool
from schemas.codec import decode_batch
from schemas.events import BehaviorEvent, EventBatch, FileWrite, Platform

EVENTS, DEVICES = "t.events", "t.devices"


def event(device: str = "dev-a", n: int = 0) -> BehaviorEvent:
    return BehaviorEvent(
        event_id=f"{device}-{n}-{uuid.uuid4().hex[:6]}", device_id=device, seq=0,
        ts=datetime(2026, 1, 1, tzinfo=UTC), platform=Platform.LINUX, process_key="k" * 32,
        payload=FileWrite(path=f"/f/{n}"),
    )


@dataclass
class FakeBroker:
    """Records what was produced; `down` makes start and send fail like an unreachable broker."""

    down: bool = False
    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    headers: list[list[tuple[str, bytes]]] = field(default_factory=list)  # per record, as sent
    starts: int = 0

    def factory(self) -> Producer:
        return FakeProducer(self)

    def batches(self) -> list[EventBatch]:
        return [decode_batch(value) for topic, _key, value in self.records if topic == EVENTS]


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def start(self) -> None:
        self.broker.starts += 1
        if self.broker.down:
            raise ConnectionError("broker unreachable")

    async def stop(self) -> None:
        return None

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            headers: list[tuple[str, bytes]] | None = None) -> Any:
        if self.broker.down:
            raise ConnectionError("broker unreachable")
        assert value is not None and key is not None
        self.broker.records.append((topic, key, value))
        self.broker.headers.append(list(headers or ()))


def config(**overrides: Any) -> PublisherConfig:
    base: dict[str, Any] = dict(events_topic=EVENTS, devices_topic=DEVICES, batch_max_events=10,
                                linger_ms=20, spool_commit_ms=10, retry_backoff_initial_s=0.01,
                                retry_backoff_max_s=0.05,
                                heartbeat_interval_s=0.05)
    return PublisherConfig(**{**base, **overrides})


async def wait_until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_batches_are_keyed_by_device_numbered_and_in_order(tmp_path: Path) -> None:
    broker = FakeBroker()
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, config())
    publisher.start()
    sent = [event("dev-a" if n % 3 else "dev-b", n) for n in range(25)]
    for item in sent:
        await publisher.submit(item)
    await publisher.close()

    assert all(len(b.events) <= 10 for b in broker.batches())
    assert all(key == b.device_id.encode() for (_t, key, _v), b in zip(broker.records, broker.batches(),
                                                                          strict=True))
    for device in ("dev-a", "dev-b"):
        got = [e for b in broker.batches() if b.device_id == device for e in b.events]
        assert [e.event_id for e in got] == [e.event_id for e in sent if e.device_id == device]
        assert [e.seq for e in got] == list(range(len(got)))
    assert publisher.spool.pending_events == 0


async def test_outage_spools_then_drains_everything_once_in_order(tmp_path: Path) -> None:
    broker = FakeBroker(down=True)
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, config())
    publisher.start()
    sent = [event("dev-a", n) for n in range(40)]
    for item in sent:
        await publisher.submit(item)
    await wait_until(lambda: broker.starts >= 3)  # it keeps retrying with backoff
    assert broker.records == [] and publisher.stats.send_failures >= 3
    assert publisher.spool.pending_events == 40

    broker.down = False
    await wait_until(lambda: publisher.spool.pending_events == 0)
    await publisher.close()
    got = [e.event_id for b in broker.batches() for e in b.events]
    assert got == [e.event_id for e in sent]


async def test_restart_while_broker_down_sends_old_spool_first_and_continues_seq(tmp_path: Path) -> None:
    broker = FakeBroker(down=True)
    first = Publisher(Spool(tmp_path / "s.db"), broker.factory, config())
    first.start()
    for n in range(5):
        await first.submit(event("dev-a", n))
    await first.close(flush_timeout_s=0.1)
    first.spool.close()
    assert broker.records == []

    broker.down = False
    second = Publisher(Spool(tmp_path / "s.db"), broker.factory, config())
    second.start()
    for n in range(5, 8):
        await second.submit(event("dev-a", n))
    await second.close()
    got = [e for b in broker.batches() for e in b.events]
    assert [e.event_id.split("-")[2] for e in got] == [str(n) for n in range(8)]
    assert [e.seq for e in got] == list(range(8))


async def test_lingers_for_a_fuller_batch_but_sends_a_partial_one(tmp_path: Path) -> None:
    broker = FakeBroker()
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, config(linger_ms=300))
    publisher.start()
    await publisher.submit(event("dev-a", 0))
    await asyncio.sleep(0.1)
    assert broker.records == []  # still lingering
    await publisher.submit(event("dev-a", 1))
    await wait_until(lambda: len(broker.records) == 1, timeout_s=2)
    assert [len(b.events) for b in broker.batches()] == [2]
    await publisher.close()


async def test_submit_blocks_when_queue_and_spool_are_full(tmp_path: Path) -> None:
    broker = FakeBroker(down=True)
    probe = Spool(tmp_path / "probe.db")
    probe.append([event()])
    one = probe.pending_bytes
    publisher = Publisher(Spool(tmp_path / "s.db", max_bytes=one * 3), broker.factory,
                          config(queue_max_events=2))
    publisher.start()
    submitted = 0

    async def producer() -> None:
        nonlocal submitted
        for n in range(20):
            await publisher.submit(event("dev-a", n))
            submitted += 1

    task = asyncio.create_task(producer())
    await asyncio.sleep(0.3)
    assert not task.done() and submitted < 20  # the source is held back, nothing dropped
    assert publisher.spool.pending_events <= 3
    broker.down = False
    await asyncio.wait_for(task, timeout=5)
    await publisher.close()
    assert [e.seq for b in broker.batches() for e in b.events] == list(range(20))


async def test_submit_nowait_queues_while_there_is_room_and_refuses_when_full_or_closing(
    tmp_path: Path,
) -> None:
    broker = FakeBroker(down=True)  # nothing is sent: the queue and spool fill up
    probe = Spool(tmp_path / "probe.db")
    probe.append([event()])
    publisher = Publisher(Spool(tmp_path / "s.db", max_bytes=probe.pending_bytes), broker.factory,
                          config(queue_max_events=2))
    publisher.start()
    taken = 0
    for n in range(10):  # a source's callback: never waits, stops offering when refused
        await asyncio.sleep(0.05)  # the writer takes what it can (one group fits the spool)
        if not publisher.has_room:
            break
        publisher.submit_nowait(event("dev-a", n))
        taken += 1
    assert 2 <= taken < 10 and not publisher.has_room
    with pytest.raises(asyncio.QueueFull):
        publisher.submit_nowait(event("dev-a", 99))
    broker.down = False
    await wait_until(lambda: publisher.has_room)
    await publisher.close()
    assert not publisher.has_room
    with pytest.raises(RuntimeError, match="closing"):
        publisher.submit_nowait(event("dev-a", 100))
    assert [e.seq for b in broker.batches() for e in b.events] == list(range(taken))
    assert publisher.stats.submitted == taken


async def test_heartbeats_go_to_the_devices_topic_once_connected(tmp_path: Path) -> None:
    broker = FakeBroker()
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, config())

    def beat(stats: PublisherStats) -> tuple[str, bytes]:
        return "dev-a", f"sent={stats.sent_events}".encode()

    publisher.set_heartbeat(beat)
    publisher.start()
    await publisher.submit(event("dev-a", 0))
    await wait_until(lambda: any(topic == DEVICES for topic, _k, _v in broker.records))
    await publisher.close()
    beats = [(key, value) for topic, key, value in broker.records if topic == DEVICES]
    assert beats[0][0] == b"dev-a"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans recorded in-process through the agent's telemetry hook (as the pipeline installs it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    yield exporter
    telemetry.use_tracer_provider(None)
    provider.shutdown()


async def test_each_batch_carries_the_traceparent_of_its_producer_span(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    broker = FakeBroker()
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, config(batch_max_events=3))
    publisher.start()
    for n in range(5):
        await publisher.submit(event("dev-a", n))
    await publisher.close()

    finished = [s for s in spans.get_finished_spans() if s.name == "ringfence.agent.publish_batch"]
    assert len(finished) == len(broker.records) == 2
    for record_headers, span, batch in zip(broker.headers, finished, broker.batches(), strict=True):
        parent = telemetry.from_headers(record_headers)
        assert parent is not None and span.context is not None, record_headers
        assert parent.trace_id == f"{span.context.trace_id:032x}"  # the pipeline continues this trace
        assert parent.span_id == f"{span.context.span_id:016x}"
        assert span.kind is SpanKind.PRODUCER and span.attributes is not None
        assert span.attributes["ringfence.device_id"] == "dev-a"
        assert span.attributes["messaging.batch.message_count"] == len(batch.events)
    assert finished[0].context.trace_id != finished[1].context.trace_id


async def test_without_a_tracer_provider_records_still_carry_a_valid_traceparent(tmp_path: Path) -> None:
    broker = FakeBroker()
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, config())
    publisher.start()
    await publisher.submit(event("dev-a", 0))
    await publisher.close()
    assert [telemetry.from_headers(h) is not None for h in broker.headers] == [True]


async def test_records_of_an_earlier_run_that_no_longer_decode_are_skipped_not_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    earlier = Spool(tmp_path / "s.db")
    written = earlier.append([event("dev-a", n) for n in range(4)])
    earlier.close()
    with sqlite3.connect(tmp_path / "s.db") as db:  # an older agent, or a damaged disk
        db.execute("UPDATE events SET data = ? WHERE seq = 1", (b'{"not": "an event"}',))
    db.close()

    broker = FakeBroker()
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, config())
    publisher.start()
    await publisher.submit(event("dev-a", 4))  # written by this run: spliced without a decode
    with caplog.at_level(logging.ERROR):
        await publisher.close()

    got = [e for b in broker.batches() for e in b.events]
    assert [e.event_id for e in got][:3] == [written[n].event_id for n in (0, 2, 3)]
    assert [e.seq for e in got] == [0, 2, 3, 4]  # the gap stays visible to consumers
    assert publisher.stats.rejected_records == 1 and publisher.spool.pending_events == 0
    assert "device dev-a seq 1 no longer decodes" in caplog.text


async def test_linger_counts_from_when_the_event_was_taken_not_from_its_commit(tmp_path: Path) -> None:
    broker = FakeBroker()
    lingering = config(spool_commit_ms=600, linger_ms=600)
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, lingering)
    publisher.start()
    loop = asyncio.get_running_loop()
    submitted_at = loop.time()
    await publisher.submit(event("dev-a", 0))
    await wait_until(lambda: len(broker.records) == 1, timeout_s=3)
    waited_s = loop.time() - submitted_at
    await publisher.close()
    assert 0.55 < waited_s < 1.05  # one linger; lingering again after the group commit would be >= 1.2


async def test_close_commits_and_sends_what_is_gathered_without_waiting_for_the_group_commit(
    tmp_path: Path,
) -> None:
    broker = FakeBroker()
    publisher = Publisher(Spool(tmp_path / "s.db"), broker.factory, config(spool_commit_ms=10_000))
    publisher.start()
    await publisher.submit(event("dev-a", 0))
    await asyncio.sleep(0.05)  # the writer has taken it and is gathering more
    loop = asyncio.get_running_loop()
    started = loop.time()
    await publisher.close(flush_timeout_s=5)
    assert loop.time() - started < 2  # not the 10 s group-commit wait
    assert [len(b.events) for b in broker.batches()] == [1] and publisher.spool.pending_events == 0


async def test_the_sender_stops_quietly_when_the_spool_is_closed_under_it(tmp_path: Path) -> None:
    """A shutdown that gave up waiting for the sender closes the spool: the sender ends without an
    error, and the unsent events are still in the spool for the next run."""
    broker = FakeBroker()
    broker.down = True
    spool = Spool(tmp_path / "s.db")
    publisher = Publisher(spool, broker.factory, config())
    publisher.start()
    for n in range(3):
        await publisher.submit(event("dev-a", n))
    await wait_until(lambda: spool.pending_events == 3)
    [sender] = [t for t in asyncio.all_tasks() if t.get_name() == "publisher-sender"]
    spool.close()
    publisher._batch_full.set()  # wake it now instead of after its linger
    await asyncio.wait_for(sender, 5)
    assert sender.exception() is None
    for task in asyncio.all_tasks():
        if task.get_name().startswith("publisher-"):
            task.cancel()
    assert Spool(tmp_path / "s.db").pending_events == 3
