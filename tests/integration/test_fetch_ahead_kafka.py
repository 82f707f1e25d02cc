"""The events consumer reads zstd batches decompressed ahead on a thread (`pipeline.fetch_ahead`).

What a user would notice: nothing but the CPU. The worker's consumer reads the very records a plain
aiokafka consumer reads from the same topic, and another consumer of the same process (the state
restore's, the bench's raw reader) is left as it was.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline import fetch_ahead
from pipeline.kafka_io import make_events_consumer, make_producer
from schemas.topics import KafkaSettings

pytestmark = pytest.mark.integration

RECORDS = 600


async def _read_all(consumer: Any, topic: str, subscribe: bool) -> list[tuple[int, int, bytes, bytes]]:
    """Every record, a few at a time with a pause between polls (as a worker handles them: the
    thread decodes the next batches meanwhile)."""
    if subscribe:
        consumer.subscribe([topic])
    await consumer.start()
    try:
        read: list[tuple[int, int, bytes, bytes]] = []
        for _ in range(1000):
            await asyncio.sleep(0.005)
            batch = await consumer.getmany(timeout_ms=100, max_records=20)
            read.extend((tp.partition, r.offset, r.key, r.value) for tp, records in batch.items()
                        for r in records)
            if len(read) >= RECORDS:
                return sorted(read)
        pytest.fail(f"read {len(read)} of {RECORDS} records in 1000 polls")
    finally:
        await consumer.stop()


async def test_the_events_consumer_reads_ahead_what_a_plain_consumer_reads(
        kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_ahead, "MIN_AHEAD_BYTES", 1)  # this test's batches are small, and few
    monkeypatch.setattr(fetch_ahead, "BACKLOG_BATCHES", 1)
    kafka, suffix = kafka_settings, uuid.uuid4().hex[:8]
    topic = f"rf-test-ahead-{suffix}"
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
        for _ in range(200):  # a busy broker answers the create before its metadata lists the topic
            if topic in await admin.list_topics():
                break
            await asyncio.sleep(0.05)
        assert fetch_ahead.install()  # process-wide, as once the worker made its consumer
        producer = make_producer(kafka, max_request_bytes=1 << 20)  # zstd batches
        await producer.start()
        try:
            for first in range(0, RECORDS, 50):  # acked before the next: ~12 batches a partition
                sent = [await producer.send(topic, key=b"dev-%d" % (i % 7),
                                            value=b'{"seq":%d,"x":"%s"}' % (i, b"y" * (i % 300)))
                        for i in range(first, first + 50)]
                await asyncio.gather(*sent)
        finally:
            await producer.stop()
        taken, late = fetch_ahead._ahead.taken, fetch_ahead._ahead.late
        plain = await _read_all(AIOKafkaConsumer(topic, **kafka.client_kwargs(), auto_offset_reset="earliest",
                                                 enable_auto_commit=False), topic, subscribe=False)
        assert (fetch_ahead._ahead.taken, fetch_ahead._ahead.late) == (taken, late)  # not enabled: as before
        events = make_events_consumer(kafka, group_id=f"rf-test-ahead-{suffix}", session_timeout_ms=10_000,
                                      heartbeat_interval_ms=1_000)
        assert await _read_all(events, topic, subscribe=True) == plain
        assert fetch_ahead._ahead.taken > taken  # its batches were decompressed on the thread
        assert len(plain) == RECORDS
    finally:
        await admin.delete_topics([topic])
        await admin.close()
