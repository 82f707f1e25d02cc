"""What the design relies on from Kafka, checked on the real broker with aiokafka.

- an idempotent, acks=all, zstd producer and a consumer group see every record, in order per key;
- a group resumes from its committed offset;
- a compacted topic keeps only the latest value per key and keeps tombstones (the verdict topic is
  the fleet blocklist and a tombstone lifts a verdict).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

pytestmark = pytest.mark.integration

Record = tuple[bytes, bytes | None]


async def _create(bootstrap: str, topic: str, partitions: int, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=config)])
        assert response.topic_errors[0][1] == 0, response.topic_errors
    finally:
        await admin.close()


async def _drop(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                compression_type="zstd", linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def _canon(records: list[Record]) -> list[Record]:
    """Order-free comparison that tolerates tombstones (None values)."""
    return sorted(records, key=lambda r: (r[0], r[1] is None, r[1] or b""))


async def _consume(consumer: AIOKafkaConsumer, want: int, timeout_s: float) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500)
        got += [(m.key, m.value) for records in batches.values() for m in records]
    return got


async def test_group_round_trip_keeps_per_key_order_and_resumes(
        kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    topic, group = unique_name("it-roundtrip"), unique_name("it-group")
    await _create(kafka_bootstrap, topic, 3, {})
    try:
        sent = [(f"device-{i % 5}".encode(), f"event-{i}".encode()) for i in range(60)]
        await _produce(kafka_bootstrap, topic, sent)
        first = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        await first.start()
        try:
            got = await _consume(first, len(sent), timeout_s=30)
            await first.commit()
        finally:
            await first.stop()
        assert sorted(got) == sorted(sent)
        for device in {key for key, _ in sent}:
            assert [v for k, v in got if k == device] == [v for k, v in sent if k == device]

        await _produce(kafka_bootstrap, topic, [(b"device-0", b"after-commit")])
        second = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                                  auto_offset_reset="earliest", enable_auto_commit=False)
        await second.start()
        try:
            resumed = await _consume(second, 1, timeout_s=30)
            resumed += await _consume(second, 1, timeout_s=1)  # nothing else may arrive
        finally:
            await second.stop()
        assert resumed == [(b"device-0", b"after-commit")]
    finally:
        await _drop(kafka_bootstrap, topic)


async def _read_from_start(bootstrap: str, topic: str) -> list[Record]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        got: list[Record] = []
        deadline = time.monotonic() + 10
        while await consumer.position(partition) < end and time.monotonic() < deadline:
            batches = await consumer.getmany(partition, timeout_ms=500)
            got += [(m.key, m.value) for m in batches.get(partition, [])]
        return got
    finally:
        await consumer.stop()


async def test_compacted_topic_keeps_latest_value_per_key(
        kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("it-compact")
    # Tiny segments and an eager cleaner so compaction happens within the test; tombstones stay a day.
    await _create(kafka_bootstrap, topic, 1, {
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "86400000"})
    try:
        keys = [f"sha256-{i}".encode() for i in range(5)]
        await _produce(kafka_bootstrap, topic, [(k, b"v1") for k in keys] + [(b"lifted", b"v1")])
        await _produce(kafka_bootstrap, topic, [(k, b"v2") for k in keys] + [(b"lifted", None)])
        await asyncio.sleep(0.3)
        await _produce(kafka_bootstrap, topic, [(b"roll", b"x")])  # rolls the segment: older ones compactable

        expected = _canon([(k, b"v2") for k in keys] + [(b"lifted", None), (b"roll", b"x")])
        deadline = time.monotonic() + 90  # the broker's cleaner wakes every log.cleaner.backoff.ms (<= 15 s)
        records = await _read_from_start(kafka_bootstrap, topic)
        while _canon(records) != expected and time.monotonic() < deadline:
            await asyncio.sleep(2)
            records = await _read_from_start(kafka_bootstrap, topic)
        assert _canon(records) == expected, f"not compacted within 90 s: {records}"
    finally:
        await _drop(kafka_bootstrap, topic)
