"""The spool across a broker outage and an agent restart, against the real broker.

The shared dev broker cannot be stopped, and a TCP proxy only covers the bootstrap connection
(the broker advertises 127.0.0.1:19092 in its metadata, so clients then connect to it directly).
So the outage is made where the agent sees it: while "down", the producer factory points at a port
where nothing listens (real aiokafka connection failures on start), and the producer that was
connected before the outage loses its connection (its sends fail). Mid-outage the publisher is
also shut down and a new one is started on the same spool, as after an agent crash or reboot.
Then the broker "returns" and we read the topic back.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from agents.publisher import Producer, Publisher, PublisherConfig, kafka_producer_factory
from agents.spool import Spool
from schemas.codec import decode_batch
from schemas.events import BehaviorEvent, FileWrite, Platform
from schemas.topics import KafkaSettings

pytestmark = pytest.mark.integration

DEVICES = ("outage-dev-a", "outage-dev-b")


def dead_bootstrap() -> str:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    return f"127.0.0.1:{port}"


class Network:
    """The test's view of the broker: up or down; hands out producers accordingly."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.up = True
        self._good = kafka
        self._dead = kafka.model_copy(update={"bootstrap": dead_bootstrap()})
        self.starts_while_down = 0

    def factory(self) -> Producer:
        if not self.up:
            self.starts_while_down += 1
        inner = kafka_producer_factory(self._good if self.up else self._dead)()
        return Breakable(inner, self)


class Breakable:
    """A real producer whose connection is lost while the network is down."""

    def __init__(self, inner: Producer, network: Network) -> None:
        self._inner, self._network = inner, network

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            headers: list[tuple[str, bytes]] | None = None) -> Any:
        if not self._network.up:
            raise KafkaConnectionError("connection to the broker lost (test outage)")
        return await self._inner.send_and_wait(topic, value=value, key=key, headers=headers)


def make_events(start: int, count: int) -> list[BehaviorEvent]:
    return [BehaviorEvent(
        event_id=f"ev-{n:04d}-{uuid.uuid4().hex[:8]}", device_id=DEVICES[n % 2], seq=0,
        ts=datetime.now(UTC), platform=Platform.LINUX, process_key="p" * 32,
        payload=FileWrite(path=f"/outage/{n}"),
    ) for n in range(start, start + count)]


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def read_back(bootstrap: str, topic: str, want: int, timeout_s: float = 30) -> list[BehaviorEvent]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    events: list[BehaviorEvent] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(events) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                events.extend(e for record in records for e in decode_batch(record.value).events)
        await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive now
        for records in (await consumer.getmany(timeout_ms=500)).values():
            events.extend(e for record in records for e in decode_batch(record.value).events)
    finally:
        await consumer.stop()
    return events


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()


async def test_outage_and_restart_mid_stream_deliver_every_event_once_in_device_order(
    tmp_path: Path, kafka_settings: KafkaSettings, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("it-agent-outage")
    await create_topic(kafka_bootstrap, topic)
    network = Network(kafka_settings)
    config = PublisherConfig(events_topic=topic, devices_topic=unique_name("it-agent-devices"),
                             batch_max_events=25, linger_ms=20, retry_backoff_initial_s=0.05,
                             retry_backoff_max_s=0.3, send_timeout_s=10)
    sent = make_events(0, 180)

    # 1. broker up: the first third is delivered
    first = Publisher(Spool(tmp_path / "spool.db"), network.factory, config)
    first.start()
    for event in sent[:60]:
        await first.submit(event)
    await until(lambda: first.stats.sent_events == 60, 30, "the first 60 events to be acknowledged")

    # 2. outage mid-stream: events go to disk, retries fail with backoff, nothing is lost
    network.up = False
    for event in sent[60:120]:
        await first.submit(event)
    await until(lambda: network.starts_while_down >= 2, 30, "reconnect attempts during the outage")
    assert first.spool.pending_events == 60 and first.stats.sent_events == 60

    # 3. the agent stops (crash, reboot) while the broker is still down, then starts again
    await first.close(flush_timeout_s=0.2)
    first.spool.close()
    second = Publisher(Spool(tmp_path / "spool.db"), network.factory, config)
    assert second.spool.pending_events == 60
    second.start()
    for event in sent[120:]:
        await second.submit(event)
    await until(lambda: second.spool.pending_events == 120, 10, "new events spooled behind the old")

    # 4. the broker returns: the backlog drains, oldest first
    network.up = True
    await until(lambda: second.spool.pending_events == 0, 60, "the spool to drain")
    await second.close()
    second.spool.close()

    got = await read_back(kafka_bootstrap, topic, len(sent))
    ids = [e.event_id for e in got]
    assert len(ids) == len(set(ids)) == len(sent), "every event exactly once per event_id"
    per_device: dict[str, list[BehaviorEvent]] = defaultdict(list)
    for event in got:
        per_device[event.device_id].append(event)
    for device in DEVICES:
        expected = [e.event_id for e in sent if e.device_id == device]
        assert [e.event_id for e in per_device[device]] == expected, f"order of {device}"
        assert [e.seq for e in per_device[device]] == list(range(len(expected)))
