"""aiokafka adapters of the worker: clients, the state changelog, followers of compacted topics.

Everything that touches aiokafka for the worker is here, so `pipeline.worker` reads as the
algorithm (poll, decode, detect, produce, commit) and Kafka's errors are translated once, at this
boundary, into `KafkaIOError` naming the topic. aiokafka is untyped: its objects are `Any` here.

- `make_producer`: idempotent, acks=all, compressed; sized for a device's state record; its keyed
  records partitioned as aiokafka's default does, with recent keys' hashes remembered
  (`CachingPartitioner`); it knows every topic's partitions once started (`_WarmProducer`).
- `make_state_producer`: the same without compression: its values come compressed
  (`pipeline.state_out`, off the event loop's thread, where aiokafka would compress).
- `make_events_consumer`: the group consumer of the events topic; offsets are committed by hand.
- Both make aiokafka's zstd keep a context per thread (`pipeline.kafka_zstd.install`: the same frames,
  less CPU per fetched or produced batch); the events consumer's fetched zstd batches are also
  decompressed ahead, on a thread, while the worker handles the records before them
  (`pipeline.fetch_ahead.enable`: the same bytes, off the event loop's thread).
- `RebalanceHooks`: aiokafka's rebalance listener, forwarding to two coroutines of the worker.
- `read_compacted`: the latest value per key of some partitions of a compacted topic, read to the
  end offsets taken at the start (the worker's state restore).
- `TopicFollower`: a compacted topic read whole (no group) and then followed: the devices and
  policy topics, which every worker needs entirely whatever partitions it owns.
- `prepare_state_topic`: the state changelog exists, compacted, partitioned like the events topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from pipeline import fetch_ahead, kafka_zstd
from pipeline.errors import PipelineError
from schemas.topics import KafkaSettings

__all__ = [
    "CachingPartitioner",
    "KafkaIOError",
    "RebalanceHooks",
    "TopicFollower",
    "make_events_consumer",
    "make_producer",
    "make_state_producer",
    "prepare_state_topic",
    "read_compacted",
]

log = logging.getLogger(__name__)

Apply = Callable[[bytes | None, bytes | None], None]
PartitionsHook = Callable[[set[int]], Awaitable[None]]
_FETCH_MS = 200
STATE_BATCH_BYTES = 4 << 20  # the state producer's batches (see `make_state_producer`)
_EXISTS_WAIT_S = 3.0  # how long a follower looks for its topic before following it lazily


class KafkaIOError(PipelineError):
    """Kafka refused a request or did not answer in time; names the topic."""

    def __init__(self, message: str, topic: str | None = None) -> None:
        super().__init__(f"{topic}: {message}" if topic else message)
        self.topic = topic


class CachingPartitioner:
    """aiokafka's default partitioner (Java's murmur2 of the key bytes), remembering recent keys' hashes.

    Why: aiokafka's murmur2 is pure Python, ~8-13 µs per 36-64 byte key, paid on every keyed send; the
    worker's outputs are keyed by device (alerts, commands) or artifact (verdicts), which repeat. The
    partition is the default partitioner's for every key (tests/unit/test_kafka_io_partitioner.py);
    records without a key go to it unchanged. At most `size` hashes are kept (then it starts over).
    """

    def __init__(self, size: int = 1 << 16) -> None:
        self.size = size
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(_DEFAULT_PARTITIONER(key, all_partitions, available))
        masked = self._hashes.get(key)
        if masked is None:
            if len(self._hashes) >= self.size:
                self._hashes.clear()
            masked = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[masked % len(all_partitions)]


_DEFAULT_PARTITIONER = DefaultPartitioner()


class _WarmProducer(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka is untyped
    """An `AIOKafkaProducer` that knows the partitions of every topic once `start` returns.

    Why: aiokafka's producer starts knowing no topic's partitions, so its first send to a topic
    waits for a metadata round trip, which takes several turns of the event loop. The worker's
    first state record is sent while the loop is busy encoding the other devices' states (one turn
    per 10 ms slice): that wait took 86-108 ms of the benchmark's last commit point (BENCHMARKS.md,
    "Session J — the commit point"). One metadata request for every topic at start (the topics the
    worker writes exist by then: `prepare_state_topic`, `ringfence topics apply`) costs ~2 ms; if
    it fails, a first send fetches its topic's partitions as before. Its periodic refreshes then ask
    for every topic too, as an aiokafka producer does until its first send (a few dozen topics here).
    """

    async def start(self) -> None:
        await super().start()
        if not await self.client.force_metadata_update():
            log.warning("producer started without topic metadata: the first sends will fetch it")


def pick_compression() -> str:
    """zstd (as the topics store it, so the broker does not recompress) when available, else gzip."""
    from aiokafka import codec

    return "zstd" if codec.has_zstd() else "gzip"


def make_producer(
    kafka: KafkaSettings, *, max_request_bytes: int, compress: bool = True, batch_bytes: int = 1 << 20
) -> Any:
    """An idempotent producer (acks=all): a retried send never duplicates a record."""
    kafka_zstd.install()
    return _WarmProducer(
        **kafka.client_kwargs(),
        acks="all",
        enable_idempotence=True,
        compression_type=pick_compression() if compress else None,
        max_request_size=max_request_bytes,
        max_batch_size=batch_bytes,
        linger_ms=0,  # latency first: decisions are few, the state is sent at commit points
        request_timeout_ms=30_000,
        partitioner=CachingPartitioner(),
    )


def make_state_producer(kafka: KafkaSettings, *, max_request_bytes: int) -> Any:
    """The producer of state records, whose values `StateWriter` compressed already, off the worker's
    loop (aiokafka compressed ~1 MB batches on it); the state topic is `compression.type=producer`, so
    the broker stores them as sent.

    Its batches hold up to 4 MB, and never more than the state limit (`max_request_bytes` less 64 KB),
    which the state topic's `max.message.bytes` admits (`prepare_state_topic`, deploy/topics.yaml).
    The producer has one request in flight, so a checkpoint of 200 devices (~2.5 MB compressed) went
    out in 1 MB batches one round trip after the other, each waiting for turns of a loop busy
    encoding; and with a state limit under 1 MB a batch could exceed what the topic accepts."""
    batch = max(min(STATE_BATCH_BYTES, max_request_bytes - (64 << 10)), 64 << 10)
    return make_producer(kafka, max_request_bytes=max_request_bytes, compress=False, batch_bytes=batch)


def make_events_consumer(
    kafka: KafkaSettings, *, group_id: str, session_timeout_ms: int, heartbeat_interval_ms: int
) -> Any:
    """The events group consumer: manual commits, from the earliest offset for a new group."""
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        max_poll_interval_ms=300_000,
        fetch_max_wait_ms=_FETCH_MS,
        max_partition_fetch_bytes=4 << 20,
    )
    fetch_ahead.enable(consumer)  # installs `kafka_zstd` too
    return consumer


class RebalanceHooks(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Forwards aiokafka's rebalance callbacks (awaited by aiokafka before fetching resumes)."""

    def __init__(self, topic: str, on_revoked: PartitionsHook, on_assigned: PartitionsHook) -> None:
        self._topic, self._on_revoked, self._on_assigned = topic, on_revoked, on_assigned

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        await self._on_revoked({tp.partition for tp in revoked if tp.topic == self._topic})

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        await self._on_assigned({tp.partition for tp in assigned if tp.topic == self._topic})


async def read_compacted(
    kafka: KafkaSettings, topic: str, partitions: Iterable[int], timeout_s: float
) -> dict[int, dict[bytes, bytes | None]]:
    """partition -> key -> latest value (None: tombstone), up to the end offsets seen at the start."""
    wanted = [TopicPartition(topic, p) for p in sorted(set(partitions))]
    result: dict[int, dict[bytes, bytes | None]] = {tp.partition: {} for tp in wanted}
    if not wanted:
        return result
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(), enable_auto_commit=False, fetch_max_wait_ms=_FETCH_MS
    )
    try:
        await asyncio.wait_for(_read_to_end(consumer, wanted, result), timeout_s)
    except TimeoutError:
        raise KafkaIOError(
            f"state of partitions {sorted(result)} not read within {timeout_s} s", topic
        ) from None
    except KafkaError as exc:
        raise KafkaIOError(f"cannot read state: {exc}", topic) from None
    finally:
        await consumer.stop()
    return result


async def _read_to_end(consumer: Any, wanted: list[Any], into: dict[int, dict[bytes, bytes | None]]) -> None:
    await consumer.start()
    consumer.assign(wanted)
    await consumer.seek_to_beginning(*wanted)
    ends: dict[Any, int] = await consumer.end_offsets(wanted)
    pending = {tp for tp in wanted if ends[tp] > 0}
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=_FETCH_MS)
        for tp, records in batch.items():
            for record in records:
                if record.key is not None and record.offset < ends[tp]:
                    into[tp.partition][record.key] = record.value
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)


class TopicFollower:
    """Reads a compacted topic from the beginning (no group, every partition), then follows it.

    `start()` returns once the records present at start time are applied, so a worker decides
    with the whole devices table and policy from its first event. Without a group aiokafka assigns
    every partition itself, including partitions (or the whole topic) that appear later: metadata
    is refreshed every `retry_s`.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, apply: Apply, *, retry_s: float = 5.0) -> None:
        self.kafka, self.topic, self.apply, self.retry_s = kafka, topic, apply, retry_s
        self.records = 0
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float) -> None:
        """Connect, apply everything up to the current end, then follow in the background."""
        self._consumer = AIOKafkaConsumer(
            self.topic, **self.kafka.client_kwargs(), enable_auto_commit=False, auto_offset_reset="earliest",
            fetch_max_wait_ms=_FETCH_MS, metadata_max_age_ms=int(self.retry_s * 1000),
        )
        try:
            await asyncio.wait_for(self._catch_up(min(timeout_s, _EXISTS_WAIT_S)), timeout_s)
        except TimeoutError:
            raise KafkaIOError(f"not read to its end within {timeout_s} s", self.topic) from None
        except KafkaError as exc:
            raise KafkaIOError(f"cannot read: {exc}", self.topic) from None
        self._task = asyncio.create_task(self._follow(), name=f"follow {self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _catch_up(self, exists_wait_s: float) -> None:
        await self._consumer.start()
        deadline = time.monotonic() + exists_wait_s
        while not self._consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assignment = list(self._consumer.assignment())
        if not assignment:
            log.warning("%s does not exist yet: following it once it does", self.topic)
            return
        ends: dict[Any, int] = await self._consumer.end_offsets(assignment)
        while await _behind(self._consumer, ends):
            self._apply_batch(await self._consumer.getmany(timeout_ms=_FETCH_MS))

    async def _follow(self) -> None:
        while True:
            try:
                self._apply_batch(await self._consumer.getmany(timeout_ms=1000))
            except KafkaError as exc:  # the consumer reconnects by itself; say so and go on
                log.warning("%s: fetch failed, retrying: %s", self.topic, exc)
                await asyncio.sleep(1.0)

    def _apply_batch(self, batch: dict[Any, list[Any]]) -> None:
        for records in batch.values():
            for record in records:
                self.records += 1
                self.apply(record.key, record.value)


async def _behind(consumer: Any, ends: dict[Any, int]) -> bool:
    """Whether some partition's position is still before its end offset."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def prepare_state_topic(
    kafka: KafkaSettings, events_topic: str, state_topic: str, *, max_message_bytes: int
) -> int:
    """Number of events partitions; creates the state topic like it when missing, refuses a smaller one."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=15_000)
    try:
        await asyncio.wait_for(admin.start(), 30)
        counts = await _partition_counts(admin, [events_topic, state_topic])
        events = counts.get(events_topic)
        if events is None:
            raise KafkaIOError("the events topic does not exist (run `ringfence topics apply`)", events_topic)
        state = counts.get(state_topic)
        if state is None:
            await _create_state_topic(admin, state_topic, events, max_message_bytes)
        elif state < events:
            raise KafkaIOError(
                f"has {state} partitions, fewer than {events_topic}'s {events}: a device's state must live "
                "in the partition number of its events (add partitions with `ringfence topics apply`)",
                state_topic,
            )
        return events
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaIOError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc!r}") from None
    finally:
        await admin.close()


async def _partition_counts(admin: Any, topics: list[str]) -> dict[str, int]:
    existing = set(await admin.list_topics())
    names = [t for t in topics if t in existing]
    described = await admin.describe_topics(names) if names else []
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}


async def _create_state_topic(admin: Any, topic: str, partitions: int, max_message_bytes: int) -> None:
    brokers = len((await admin.describe_cluster())["brokers"])
    configs = {
        "cleanup.policy": "compact",
        "max.message.bytes": str(max_message_bytes + (64 << 10)),
        "compression.type": "producer",  # values are zstd frames already (pipeline.state_out)
    }
    if brokers >= 3:
        configs["min.insync.replicas"] = "2"
    new = NewTopic(topic, partitions, min(3, brokers), topic_configs=configs)
    response = await admin.create_topics([new])
    for error in response.topic_errors:
        if error[1] not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another worker was quicker)
            raise KafkaIOError(f"cannot create the state topic (error code {error[1]})", topic)
    log.info("created state topic %s (%d partitions, compacted)", topic, partitions)
    deadline = time.monotonic() + 15
    while topic not in await _partition_counts(admin, [topic]) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
