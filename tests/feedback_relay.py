"""Only the tests' own processes reach the worker: a relay for tests that play a device on a shared host.

The feedback-loop tests run a real `ringfence-agent run` with the live Linux source, which reports
every process of the host. Sent straight to a block-mode worker, that made the worker alert on, and
the agent kill, whatever else ran on the host at the time (seen once: another engineer's
three-process tree, killed as PrivilegeEscalation while a test waited for its agents), and two test
runs on one host killed each other's attacks. So the reporting device sends its events to a private
topic, and this relay forwards only the events of processes whose tree starts at an executable under
the test's folder (the attack kits), in the agent's batches and with its sequence numbers.

`AttackScope` is the pure filter; `Relay` runs it in a thread with its own event loop, because the
module-scoped fleet outlives each test's event loop; `create_topic`/`delete_topic` make and remove
the private topics.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from schemas.codec import decode_batch, encode_batch
from schemas.events import BehaviorEvent, EventBatch, ProcessStart
from schemas.topics import KafkaSettings


class AttackScope:
    """Process keys of the trees that start at an executable under `root` (remembered across batches)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root).rstrip("/") + "/"
        self.keys: set[str] = set()

    def keep(self, batch: EventBatch) -> EventBatch | None:
        """The batch with only in-scope events (None when none is)."""
        kept = [event for event in batch.events if self._in_scope(event)]
        if not kept:
            return None
        seqs = [event.seq for event in kept]
        return EventBatch(device_id=batch.device_id, first_seq=min(seqs), last_seq=max(seqs),
                          events=tuple(kept))

    def _in_scope(self, event: BehaviorEvent) -> bool:
        payload = event.payload
        if isinstance(payload, ProcessStart) and (
            payload.image.startswith(self.root) or event.parent_process_key in self.keys
        ):
            self.keys.add(event.process_key)
        if event.process_key in self.keys:
            return True
        path = getattr(payload, "path", None)  # unattributed file events of the kits' folders
        return isinstance(path, str) and path.startswith(self.root)


class Relay:
    """Forwards `source`'s in-scope events to `target` until `stop()`."""

    def __init__(self, kafka: KafkaSettings, source: str, target: str, scope: AttackScope) -> None:
        self.kafka, self.source, self.target, self.scope = kafka, source, target, scope
        self.forwarded = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="attack-relay", daemon=True)

    def start(self, timeout_s: float = 60.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self.error is not None:
            raise RuntimeError(f"relay did not start in {timeout_s:g} s: {self.error!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by start() or the caller's check of `error`
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        consumer = AIOKafkaConsumer(**self.kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        producer = AIOKafkaProducer(**self.kafka.client_kwargs(), acks="all", linger_ms=0)
        await consumer.start()
        await producer.start()
        try:
            partitions = [TopicPartition(self.source, n) for n in await self._partitions(consumer)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            self._ready.set()
            while not self._stop.is_set():
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    await self._forward(producer, records)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _partitions(self, consumer: Any, timeout_s: float = 30.0) -> list[int]:
        """The source's partitions, once the broker's metadata has the just-created topic."""
        from agents.verdict_follower import partitions_of

        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                return sorted(await partitions_of(consumer, self.source))
            except LookupError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
                await consumer._client.force_metadata_update()  # a tracked topic is not re-asked for

    async def _forward(self, producer: Any, records: list[Any]) -> None:
        for record in records:
            batch = self.scope.keep(decode_batch(record.value))
            if batch is not None:
                await producer.send_and_wait(self.target, encode_batch(batch), key=record.key)
                self.forwarded += len(batch.events)


async def create_topic(kafka: KafkaSettings, name: str, partitions: int = 3) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def delete_topic(kafka: KafkaSettings, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()
