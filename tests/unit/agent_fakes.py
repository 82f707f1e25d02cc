"""A fake Kafka for agent unit tests: records what a publisher produces, can be 'down'."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.publisher import Producer
from schemas.codec import decode_batch
from schemas.events import EventBatch

Headers = list[tuple[str, bytes]]


@dataclass
class FakeKafka:
    """`factory` makes producers writing into `records` (topic, key, value) and `headers`."""

    down: bool = False
    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    headers: list[Headers] = field(default_factory=list)
    starts: int = 0

    def factory(self) -> Producer:
        return _FakeProducer(self)

    def values(self, topic: str) -> list[tuple[bytes, bytes]]:
        return [(key, value) for name, key, value in self.records if name == topic]

    def batches(self, topic: str) -> list[EventBatch]:
        return [decode_batch(value) for _key, value in self.values(topic)]


class _FakeProducer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka

    async def start(self) -> None:
        self.kafka.starts += 1
        if self.kafka.down:
            raise ConnectionError("broker unreachable")

    async def stop(self) -> None:
        return None

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            headers: Headers | None = None) -> Any:
        if self.kafka.down:
            raise ConnectionError("broker unreachable")
        assert value is not None and key is not None
        self.kafka.records.append((topic, key, value))
        self.kafka.headers.append(list(headers or ()))
