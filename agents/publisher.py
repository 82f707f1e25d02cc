"""Ship events to Kafka through the spool: sources -> bounded queue -> spool (disk) -> EventBatch records.

The path of one event:
1. `submit()` puts it on a bounded in-memory queue; when the queue is full the source waits
   (backpressure), so memory stays bounded whatever the source's rate.
2. The writer task takes what is queued (gathering for up to `spool_commit_ms`), numbers it per
   device and commits it to the spool in one transaction: one fsync for many events. From here on
   a crash or a reboot loses nothing; before it, a crash of the agent loses the events gathered so
   far (at most `spool_commit_ms` of them; a clean stop commits them at once). The default, 500 ms,
   is one linger: measured with bench/bench_agent.py at 100 events/s, committing every 100 ms
   cost about 1 % of a core more (the fsync, and a writer and sender wake-up per commit).
3. The sender task takes the oldest device's oldest spooled events (up to `batch_max_events` /
   `batch_max_bytes`, waiting for a batch to fill until the oldest unsent event is `linger_ms` old:
   counted from when the writer took it, so the group commit's wait is not paid twice), publishes
   one EventBatch keyed by device_id with acks=all and idempotence, and trims the spool only after
   the broker's ack.
   One batch is in flight at a time: strict per-device order, and a failed send is simply offered
   again. When the broker is unreachable the producer is dropped and re-created with exponential
   backoff while the spool absorbs events; when it returns the backlog drains in order.
   The record value is spliced from the spooled bytes (`agents.batch_codec`); only records an
   earlier process wrote are decoded first, so one that no longer validates is skipped and logged
   instead of poisoning the batch downstream.
4. Each send is an OpenTelemetry producer span `ringfence.agent.publish_batch` (`agents.telemetry`:
   recorded when a tracer provider is installed, ids only otherwise) whose W3C `traceparent` goes
   in the record's headers, so the pipeline's scoring, the command and the device's action result
   join one trace.
Delivery is at-least-once: a batch whose ack was lost (a crash between the broker's write and our
trim) is sent again after restart with the same event ids and seqs, so consumers can drop it.

The producer is built by an injected factory (`ProducerFactory`) so tests swap in a fake; the real
one is `kafka_producer_factory(KafkaSettings)`. Heartbeats go to the devices topic every
`heartbeat_interval_s` through the same producer; they are state, not events, so they are not spooled.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from agents.batch_codec import splice_batch
from agents.settings import AgentSettings
from agents.spool import Spool, SpoolBatch, SpoolClosed
from agents.telemetry import span, to_headers
from schemas.codec import decode_event
from schemas.errors import ContractError
from schemas.events import BehaviorEvent
from schemas.topics import KafkaSettings

__all__ = [
    "Producer",
    "ProducerFactory",
    "Publisher",
    "PublisherConfig",
    "PublisherStats",
    "kafka_producer_factory",
    "pick_compression",
]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 5.0  # bound on stopping the tasks and the producer at close


class Producer(Protocol):
    """The part of aiokafka's producer the publisher uses."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any: ...


ProducerFactory = Callable[[], Producer]
HeartbeatFn = Callable[["PublisherStats"], tuple[str, bytes]]  # -> (device_id key, record value)


def pick_compression() -> str:
    """lz4 when aiokafka can do it here (cramjam), else gzip (always available)."""
    from aiokafka import codec

    return "lz4" if codec.has_lz4() else "gzip"


def kafka_producer_factory(kafka: KafkaSettings, max_record_bytes: int = 1 << 20) -> ProducerFactory:
    """A factory of aiokafka producers with acks=all, idempotence, compression, TLS/SASL from `kafka`."""

    def make() -> Producer:
        from aiokafka import AIOKafkaProducer

        producer: Producer = AIOKafkaProducer(
            **kafka.client_kwargs(), acks="all", enable_idempotence=True,
            compression_type=pick_compression(), max_request_size=max_record_bytes,
            max_batch_size=max_record_bytes, request_timeout_ms=15_000,
        )
        return producer

    return make


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    events_topic: str
    devices_topic: str
    batch_max_events: int = 500
    batch_max_bytes: int = 512 << 10
    linger_ms: int = 500
    queue_max_events: int = 10_000
    retry_backoff_initial_s: float = 0.5
    retry_backoff_max_s: float = 30.0
    heartbeat_interval_s: float = 30.0
    send_timeout_s: float = 30.0  # an ack not received by then counts as a failed send (retried)
    spool_commit_ms: int = 500  # gather events this long before one spool transaction (one fsync)

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> PublisherConfig:
        return cls(
            events_topic=settings.events_topic, devices_topic=settings.devices_topic,
            batch_max_events=settings.batch_max_events, batch_max_bytes=settings.batch_max_bytes,
            linger_ms=settings.linger_ms, queue_max_events=settings.queue_max_events,
            retry_backoff_initial_s=settings.retry_backoff_initial_s,
            retry_backoff_max_s=settings.retry_backoff_max_s,
            heartbeat_interval_s=settings.heartbeat_interval_s, send_timeout_s=settings.send_timeout_s,
            spool_commit_ms=settings.spool_commit_ms,
        )


@dataclass
class PublisherStats:
    """Counters for heartbeats and logs; mutable on purpose."""

    submitted: int = 0
    sent_events: int = 0
    sent_batches: int = 0
    send_failures: int = 0
    rejected_records: int = 0  # spool records that no longer decode (logged at ERROR with ids)
    connected: bool = False
    last_error: str | None = None


class Publisher:
    """Runs the writer, sender and heartbeat tasks; `submit` events, `close` to flush and stop."""

    def __init__(self, spool: Spool, producer_factory: ProducerFactory, config: PublisherConfig,
                 heartbeat: HeartbeatFn | None = None) -> None:
        self.spool = spool
        self.config = config
        self.stats = PublisherStats()
        self._factory = producer_factory
        self._heartbeat = heartbeat
        self._queue: asyncio.Queue[BehaviorEvent] = asyncio.Queue(config.queue_max_events)
        self._spooled = asyncio.Event()  # the writer committed something
        self._batch_full = asyncio.Event()  # enough is spooled for a full batch: stop lingering
        self._producer: Producer | None = None
        self._unsent_since: float | None = None  # monotonic time the oldest unsent event was taken
        self._flush_now = asyncio.Event()  # set by close(): commit what is gathered without waiting
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- public API -----------------------------------------------------------------------------

    def set_heartbeat(self, heartbeat: HeartbeatFn) -> None:
        """Set the heartbeat builder (before `start`)."""
        self._heartbeat = heartbeat

    async def submit(self, event: BehaviorEvent) -> None:
        """Queue one event; waits while the queue (and behind it the spool) is full."""
        if self._closing:
            raise RuntimeError("publisher is closing")
        await self._queue.put(event)
        self.stats.submitted += 1

    @property
    def has_room(self) -> bool:
        """`submit_nowait` would take an event now (the queue is not full and not closing)."""
        return not self._closing and not self._queue.full()

    def submit_nowait(self, event: BehaviorEvent) -> None:
        """Queue one event without waiting (from a source's callback); check `has_room` first:
        raises `asyncio.QueueFull` when there is none, RuntimeError when closing."""
        if self._closing:
            raise RuntimeError("publisher is closing")
        self._queue.put_nowait(event)
        self.stats.submitted += 1

    def start(self) -> None:
        """Start the background tasks on the running loop."""
        self._tasks = [asyncio.create_task(self._writer(), name="publisher-writer"),
                       asyncio.create_task(self._sender(), name="publisher-sender")]
        if self._heartbeat is not None:
            beats = self._heartbeats(self._heartbeat)
            self._tasks.append(asyncio.create_task(beats, name="publisher-heartbeat"))

    async def close(self, flush_timeout_s: float = 10.0) -> None:
        """Spool everything queued, try to send the backlog for up to `flush_timeout_s`, then stop.

        Whatever is not acknowledged by then stays in the spool for the next run.
        """
        self._closing = True
        self._flush_now.set()
        deadline = time.monotonic() + flush_timeout_s
        try:  # the writer commits every submitted event (it only fails to if the disk does)
            await asyncio.wait_for(self._queue.join(), timeout=flush_timeout_s)
        except TimeoutError:
            log.error("publisher closing: %d submitted events could not be spooled and are lost",
                      self._queue.qsize())
        while self.spool.pending_events and time.monotonic() < deadline:
            self._batch_full.set()  # no lingering while flushing
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=_STOP_TIMEOUT_S)
        await self._drop_producer()
        if self.spool.pending_events:
            log.warning("publisher stopped with %d events still spooled; they are sent on the next run",
                        self.spool.pending_events)

    # -- writer ---------------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            group = [await self._queue.get()]
            taken_at = time.monotonic()
            if self.config.spool_commit_ms and not self._closing:  # group commit: one fsync for many
                await _wait_at_most(self._flush_now, self.config.spool_commit_ms / 1000)
            while len(group) < self.config.batch_max_events * 4 and not self._queue.empty():
                group.append(self._queue.get_nowait())
            await self._spool_group(group)
            for _ in group:
                self._queue.task_done()
            if self._unsent_since is None:
                self._unsent_since = taken_at
            self._spooled.set()
            if self.spool.pending_events >= self.config.batch_max_events:
                self._batch_full.set()

    async def _spool_group(self, group: list[BehaviorEvent]) -> None:
        """Commit a group to the spool; if the disk fails, retry (sources wait) rather than drop."""
        backoff_s = self.config.retry_backoff_initial_s
        while True:
            try:
                await self.spool.put(group)
                return
            except (sqlite3.Error, OSError) as exc:
                log.error("spool write of %d events failed (%s); retrying in %.1fs, sources wait",
                          len(group), exc, backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self.config.retry_backoff_max_s)

    # -- sender ---------------------------------------------------------------------------------

    async def _sender(self) -> None:
        backoff_s = self.config.retry_backoff_initial_s
        while True:
            try:
                batch = await self._next_batch()
            except SpoolClosed:  # the agent is stopping (close() gave up waiting): what is left stays spooled
                log.info("publisher sender stops: the spool is closed")
                return
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any producer failure: keep the batch, back off, reconnect
                await self._on_send_failure(batch, exc, backoff_s)
                backoff_s = min(backoff_s * 2, self.config.retry_backoff_max_s)
                continue
            backoff_s = self.config.retry_backoff_initial_s

    async def _next_batch(self) -> SpoolBatch:
        """Wait for spooled events; linger for a fuller batch unless one is full already. The spool
        is read once, when the batch goes: commits during the linger do not wake the sender (only a
        full batch does), so a linger longer than the group commit costs no extra query."""
        while True:
            pending = self.spool.pending_events  # kept in memory: no query to learn it is empty
            if not pending:
                self._spooled.clear()
                await self._spooled.wait()
                continue
            linger_s = self._linger_left_s()
            if pending < self.config.batch_max_events and linger_s > 0 and not self._closing:
                self._batch_full.clear()
                await _wait_at_most(self._batch_full, linger_s)
            batch = self._peek()
            if batch is not None:
                return batch

    def _linger_left_s(self) -> float:
        """How much longer to wait for a fuller batch: `linger_ms` after the oldest unsent event."""
        waited_s = time.monotonic() - self._unsent_since if self._unsent_since is not None else 0.0
        return self.config.linger_ms / 1000 - waited_s

    def _peek(self) -> SpoolBatch | None:
        return self.spool.peek(self.config.batch_max_events, self.config.batch_max_bytes)

    async def _send(self, batch: SpoolBatch) -> None:
        records, (first_seq, last_seq) = self._sendable(batch)
        producer = await self._connected_producer()
        if records:
            value = splice_batch(batch.device_id, first_seq, last_seq, records)
            with span("ringfence.agent.publish_batch", kind="producer", attributes={
                "messaging.system": "kafka", "messaging.destination.name": self.config.events_topic,
                "messaging.batch.message_count": len(records), "ringfence.device_id": batch.device_id,
                "ringfence.first_seq": first_seq,
            }) as trace:
                async with asyncio.timeout(self.config.send_timeout_s):  # no task per send (wait_for)
                    await producer.send_and_wait(self.config.events_topic, value=value,
                                                 key=batch.device_id.encode(), headers=to_headers(trace))
        self.spool.ack(batch)
        # What is still spooled was taken before now: let it linger from here (close enough, and
        # under a steady load it sends once per linger, as intended).
        self._unsent_since = time.monotonic() if self.spool.pending_events else None
        self.stats.sent_events += len(records)
        self.stats.sent_batches += 1

    def _sendable(self, batch: SpoolBatch) -> tuple[list[bytes], tuple[int, int]]:
        """The batch's records and their first and last seq. Rows an earlier process wrote are
        validated first (another agent version, a damaged disk); those that fail are skipped and
        logged, leaving a gap in the device's seqs that consumers can see."""
        if batch.first_id > self.spool.earlier_last_id:  # written by this process from valid events
            return list(batch.records), (batch.first_seq, batch.last_seq)
        kept: list[tuple[int, bytes]] = []
        for offset, record in enumerate(batch.records):
            try:
                decode_event(record)
            except ContractError as exc:  # never loop on a record that cannot be sent
                self.stats.rejected_records += 1
                log.error("spool record of device %s seq %d no longer decodes, skipped: %s",
                          batch.device_id, batch.first_seq + offset, exc)
                continue
            kept.append((batch.first_seq + offset, record))
        seqs = (kept[0][0], kept[-1][0]) if kept else (batch.first_seq, batch.last_seq)
        return [record for _seq, record in kept], seqs

    async def _connected_producer(self) -> Producer:
        if self._producer is None:
            producer = self._factory()
            try:
                await asyncio.wait_for(producer.start(), timeout=self.config.send_timeout_s)
            except BaseException:
                with suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
            self.stats.connected = True
            log.info("publisher connected; %d events spooled", self.spool.pending_events)
        return self._producer

    async def _on_send_failure(self, batch: SpoolBatch, exc: Exception, backoff_s: float) -> None:
        self.stats.send_failures += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("send of device %s seq %d..%d failed (%s); %d events spooled, retry in %.1fs",
                    batch.device_id, batch.first_seq, batch.last_seq, self.stats.last_error,
                    self.spool.pending_events, backoff_s)
        await self._drop_producer()
        await asyncio.sleep(backoff_s)

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.stats.connected = False
        if producer is not None:
            with suppress(Exception):  # includes TimeoutError: a producer that will not stop is abandoned
                await asyncio.wait_for(producer.stop(), timeout=_STOP_TIMEOUT_S)

    # -- heartbeats -----------------------------------------------------------------------------

    async def _heartbeats(self, make: HeartbeatFn) -> None:
        interval_s = self.config.heartbeat_interval_s
        while True:
            sent = await self._send_heartbeat(make)
            # not connected yet: try again soon, so the fleet hears of a new device right away
            await asyncio.sleep(interval_s if sent else min(1.0, interval_s))

    async def _send_heartbeat(self, make: HeartbeatFn) -> bool:
        producer = self._producer
        if producer is None:
            return False  # disconnected: the next heartbeat after reconnecting says it all
        try:
            key, value = make(self.stats)
        except Exception:  # a bug in building the record must not end the heartbeats silently
            log.exception("heartbeat record could not be built")
            return False
        try:
            async with asyncio.timeout(10):
                await producer.send_and_wait(self.config.devices_topic, value=value, key=key.encode())
        except Exception as exc:  # a lost heartbeat is superseded by the next one
            log.debug("heartbeat of device %s not sent: %s", key, exc)
            return False
        return True


async def _wait_at_most(event: asyncio.Event, timeout_s: float) -> None:
    """Wait until `event` is set or `timeout_s` passed. `asyncio.timeout` rather than `wait_for`:
    no task is created per wait (this runs for every group commit and every lingered batch)."""
    with suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
