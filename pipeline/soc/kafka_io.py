"""Kafka adapters of the SOC tools: read topics without a consumer group, publish records durably.

Why no consumer group: an analyst's `alerts tail` or a console must see *every* alert (a group would
split the partitions between two analysts) and must not move any committed offset the pipeline or a
SIEM connector relies on. So readers assign themselves every partition and seek: to the beginning,
to the end, or to the last N records of each partition. Everything else in the SOC package sees
`Record` values and never touches aiokafka.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agents.verdict_follower import partitions_of
from pipeline.soc.errors import TopicMissing
from schemas.topics import KafkaSettings

log = logging.getLogger(__name__)

StartAt = Literal["earliest", "latest"] | int
"""Where a reader starts in each partition: the beginning, the end, or the last N records."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record as the SOC code needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @property
    def where(self) -> str:
        """`topic[partition]@offset`, for log lines."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


class TopicReader:
    """An aiokafka consumer without a group that owns every partition of some topics."""

    def __init__(self, consumer: Any, missing: tuple[str, ...] = ()) -> None:
        self._consumer = consumer
        self.missing = missing  # topics skipped because they do not exist (with missing_ok)

    @classmethod
    async def open(cls, kafka: KafkaSettings, starts: Mapping[str, StartAt], *,
                   missing_ok: bool = False) -> TopicReader:
        """Start a consumer, assign all partitions of `starts`' topics and seek as asked.

        A missing topic raises TopicMissing, or with `missing_ok` is skipped and listed in `missing`.
        """
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=200)
        await consumer.start()
        try:
            missing = await _assign_and_seek(consumer, starts, missing_ok)
        except BaseException:
            await consumer.stop()
            raise
        return cls(consumer, missing)

    async def batch(self, timeout_ms: int = 500, max_records: int = 500) -> list[Record]:
        """The next records of any partition (empty after `timeout_ms` without any)."""
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [_record(message) for messages in fetched.values() for message in messages]

    async def caught_up(self, ends: Mapping[Any, int]) -> bool:
        """Whether every partition's position has reached the offsets in `ends`."""
        for partition, end in ends.items():
            if await self._consumer.position(partition) < end:
                return False
        return True

    async def end_offsets(self) -> dict[Any, int]:
        """The current end offset of every assigned partition."""
        ends: dict[Any, int] = await self._consumer.end_offsets(list(self._consumer.assignment()))
        return ends

    async def close(self) -> None:
        await self._consumer.stop()


async def _assign_and_seek(consumer: Any, starts: Mapping[str, StartAt], missing_ok: bool) -> tuple[str, ...]:
    from aiokafka import TopicPartition

    wanted: dict[Any, StartAt] = {}
    missing: list[str] = []
    for topic, start in starts.items():
        try:
            numbers = await partitions_of(consumer, topic)
        except LookupError:
            if not missing_ok:
                raise TopicMissing(f"topic {topic} does not exist") from None
            missing.append(topic)
            continue
        wanted.update({TopicPartition(topic, number): start for number in numbers})
    consumer.assign(list(wanted))
    begins = await consumer.beginning_offsets(list(wanted))
    ends = await consumer.end_offsets(list(wanted))
    for partition, start in wanted.items():
        if start == "earliest":
            offset = begins[partition]
        elif start == "latest":
            offset = ends[partition]
        else:
            offset = max(begins[partition], ends[partition] - int(start))
        consumer.seek(partition, offset)
    return tuple(missing)


def _record(message: Any) -> Record:
    return Record(message.topic, message.partition, message.offset, message.key, message.value,
                  int(message.timestamp))


async def read_existing(
    kafka: KafkaSettings, topic: str, *, max_records: int, timeout_s: float
) -> AsyncIterator[Record]:
    """Every record in `topic` at the time of the call (bounded in count and time), oldest first."""
    reader = await TopicReader.open(kafka, {topic: "earliest"})
    try:
        ends = await reader.end_offsets()
        loop = asyncio.get_running_loop()
        deadline, seen = loop.time() + timeout_s, 0
        while seen < max_records and loop.time() < deadline and not await reader.caught_up(ends):
            for record in await reader.batch(timeout_ms=300):
                if record.offset < ends.get(_tp(record), 0) and seen < max_records:
                    seen += 1
                    yield record
    finally:
        await reader.close()


def _tp(record: Record) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(record.topic, record.partition)


class Publisher:
    """A durable producer (acks=all, idempotent) whose sends are bounded in time."""

    def __init__(self, producer: Any, send_timeout_s: float = 15.0) -> None:
        self._producer = producer
        self._timeout_s = send_timeout_s

    @classmethod
    async def open(cls, kafka: KafkaSettings, send_timeout_s: float = 15.0) -> Publisher:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**kafka.client_kwargs(), acks="all", enable_idempotence=True,
                                    compression_type="zstd", linger_ms=0)
        try:
            await asyncio.wait_for(producer.start(), send_timeout_s)
        except BaseException:
            await producer.stop()
            raise
        return cls(producer, send_timeout_s)

    async def send(self, topic: str, key: str, value: bytes | None) -> tuple[int, int]:
        """Publish and wait for the broker's acknowledgement; returns (partition, offset)."""
        metadata = await asyncio.wait_for(
            self._producer.send_and_wait(topic, key=key.encode(), value=value), self._timeout_s
        )
        log.debug("published %s key %s at [%d]@%d", topic, key, metadata.partition, metadata.offset)
        return int(metadata.partition), int(metadata.offset)

    async def close(self) -> None:
        await self._producer.stop()
