"""The one reconnecting follow loop of the agent's groupless consumers (verdicts, commands, modes).

Why one shell: every topic an agent follows is read the same way, with no consumer group (its
position lives in the agent's own SQLite state, next to what it applied), from a saved offset or
the beginning, until cancelled, through broker outages and deleted topics. Only three things
differ per topic, and a subclass supplies them:
- `_assign(consumer)`: which partitions, and where to start in each (`seek_saved` helps);
- `_on_batch(batch)`: what to do with one `getmany` result (apply, then save the position);
- `_on_caught_up()` / `_on_connected()`: what to do when the end offsets seen at connect time are
  reached (or the connection is up).

The loop: start a consumer, assign, read the end offsets, then fetch, hand over, check that the
topic still exists (aiokafka spins on a deleted topic, see `check_topic_still_exists`) and check
for catching up, forever. Any error but cancellation stops the consumer and retries after a
doubling backoff (`backoff_initial_s` .. `backoff_max_s`); the backoff does not reset, as before
the loops were folded together (a flapping broker is not hammered).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from schemas.topics import KafkaSettings

__all__ = [
    "ConsumerFactory",
    "TopicFollower",
    "check_topic_still_exists",
    "kafka_consumer_factory",
    "partitions_of",
    "seek_saved",
]

log = logging.getLogger(__name__)

ConsumerFactory = Callable[[], Any]  # -> an unstarted aiokafka AIOKafkaConsumer (or a test double)


def kafka_consumer_factory(kafka: KafkaSettings, *, fetch_max_wait_ms: int = 500) -> ConsumerFactory:
    """Consumers with no group and no auto-commit: offsets live in the agent's own state."""

    def make() -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=fetch_max_wait_ms)

    return make


async def partitions_of(consumer: Any, topic: str) -> list[int]:
    """The partition numbers of `topic`; LookupError if it does not exist.

    aiokafka's consumer learns a topic's partitions only once its client tracks the topic (the
    public `topics()` returns a separate copy of the metadata), so the topic is added first.
    """
    await consumer._client.add_topic(topic)
    numbers = consumer.partitions_for_topic(topic)
    if not numbers:
        raise LookupError(f"topic {topic} does not exist (yet)")
    return sorted(numbers)


def check_topic_still_exists(consumer: Any, topic: str) -> None:
    """Raise LookupError when the consumer's metadata no longer lists `topic` (it was deleted).

    aiokafka keeps asking for metadata without any pause while an assigned topic is missing (two
    agents whose topics a test deleted were seen at ~40 % of a core each), so a follower checks
    after every fetch and, when its topic is gone, stops the consumer and retries with backoff.
    """
    if not consumer.partitions_for_topic(topic):
        raise LookupError(f"topic {topic} no longer exists")


async def seek_saved(consumer: Any, partitions: Sequence[Any], saved: Mapping[int, int]) -> int:
    """Assign `partitions`, seek each to its saved next offset or else to the beginning.

    Returns how many partitions resumed from a saved offset.
    """
    consumer.assign(list(partitions))
    fresh = [tp for tp in partitions if tp.partition not in saved]
    for tp in partitions:
        if tp.partition in saved:
            consumer.seek(tp, saved[tp.partition])
    if fresh:
        await consumer.seek_to_beginning(*fresh)
    return len(partitions) - len(fresh)


class TopicFollower:
    """Runs one consumer (no group) on `topic`, forever; subclasses say what a batch does."""

    kind = "topic"  # for log lines: "verdict", "command", "mode"

    def __init__(self, consumer_factory: ConsumerFactory, topic: str, *, device_id: str,
                 fetch_timeout_ms: int = 500, max_records: int = 1000,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.topic = topic
        self.device_id = device_id
        self.caught_up = asyncio.Event()  # set once the end offsets seen at connect were reached
        self.connected = False
        self._factory = consumer_factory
        self._fetch_timeout_ms = fetch_timeout_ms
        self._max_records = max_records
        self._backoff = (backoff_initial_s, backoff_max_s)

    async def run(self) -> None:
        """Follow until cancelled; reconnects with backoff."""
        backoff_s = self._backoff[0]
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker away, topic missing, auth: retry, never give up
                self.connected = False
                log.warning("%s follower of device %s on %s: %s: %s; retry in %.1fs", self.kind,
                            self.device_id, self.topic, type(exc).__name__, exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self._backoff[1])

    async def _follow(self) -> None:
        consumer = self._factory()
        await consumer.start()
        try:
            partitions = await self._assign(consumer)
            targets = await consumer.end_offsets(partitions)
            self.connected = True
            self._on_connected()
            await self._check_caught_up(consumer, targets)
            while True:
                batch = await consumer.getmany(timeout_ms=self._fetch_timeout_ms,
                                               max_records=self._max_records)
                await self._on_batch(batch)
                check_topic_still_exists(consumer, self.topic)
                await self._check_caught_up(consumer, targets)
        finally:
            self.connected = False
            await consumer.stop()

    async def _check_caught_up(self, consumer: Any, targets: Mapping[Any, int]) -> None:
        if self.caught_up.is_set():
            return
        for tp, end in targets.items():
            if await consumer.position(tp) < end:
                return
        self._on_caught_up()
        self.caught_up.set()

    # -- what a subclass supplies -----------------------------------------------------------------

    async def _assign(self, consumer: Any) -> list[Any]:
        """Assign and seek; returns the TopicPartitions followed."""
        raise NotImplementedError

    async def _on_batch(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        """Handle one `getmany` result (TopicPartition -> records) and save the position."""
        raise NotImplementedError

    def _on_connected(self) -> None:
        """Called each time a consumer is assigned and its end offsets are known."""

    def _on_caught_up(self) -> None:
        """Called once, when the end offsets seen at the first successful connect are reached."""
