"""Kafka plumbing of `bench_pipeline`: topics, filling, the raw baseline, the in-process worker, processes.

Each measurement runs on its own uniquely named topics and consumer group, and everything is
deleted at the end, so runs never disturb each other or other users of the broker.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench._worker_parts import Parts, worker_parts
from pipeline import kafka_zstd
from pipeline.demo_kit import assigned_partitions
from pipeline.enroll import KeysFolder
from pipeline.kafka_io import (
    make_events_consumer,
    make_producer,
    make_state_producer,
    prepare_state_topic,
    read_compacted,
)
from pipeline.settings import WorkerSettings
from pipeline.worker import BatchWorker
from pipeline.worker_runtime import build_detector, live_policy, tune_gc
from schemas.topics import KafkaSettings

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("dlq", "alerts", "verdicts", "commands", "devices", "policy")


@dataclass
class Bench:
    """One benchmark run's broker, names, keys and policy; `cleanup()` deletes its topics."""

    kafka: KafkaSettings
    workdir: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    topics: list[str] = field(default_factory=list)

    def name(self, kind: str) -> str:
        return f"rf-bench-{kind}-{self.suffix}"

    def settings(self, tag: str, events_topic: str, **overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = {f"{k}_topic": self.name(k) for k in OUTPUTS}
        values.update(
            kafka=self.kafka,
            events_topic=events_topic,
            state_topic=self.name(f"state-{tag}"),
            group_id=self.name(f"group-{tag}"),
            keys_dir=self.workdir / "keys",
            policy_path=self.workdir / "policy.yaml",
        )
        self.topics.append(values["state_topic"])
        return WorkerSettings(**{**values, **overrides})

    def env(self, settings: WorkerSettings) -> dict[str, str]:
        names = ("events", *OUTPUTS, "state")
        env = {f"RINGFENCE_{n.upper()}_TOPIC": getattr(settings, f"{n}_topic") for n in names}
        env.update(
            RINGFENCE_KAFKA_BOOTSTRAP=self.kafka.bootstrap_servers,
            RINGFENCE_GROUP_ID=settings.group_id,
            RINGFENCE_KEYS_DIR=str(settings.keys_dir),
            RINGFENCE_POLICY_PATH=str(settings.policy_path),
            RINGFENCE_COMMIT_INTERVAL_MS=str(settings.commit_interval_ms),
        )
        return env

    async def setup(self) -> None:
        KeysFolder(self.workdir / "keys").init(_now())
        (self.workdir / "policy.yaml").write_text("default_mode: block\n")
        await self.create([(self.name(k), 1) for k in OUTPUTS])

    async def create(self, topics: Iterable[tuple[str, int]]) -> None:
        wanted = [NewTopic(name, partitions, 1) for name, partitions in topics]
        self.topics += [t.name for t in wanted]
        async with _admin(self.kafka) as admin:
            await admin.create_topics(wanted)

    async def cleanup(self) -> None:
        async with _admin(self.kafka) as admin:
            existing = set(await admin.list_topics())
            ours = [t for t in self.topics if t in existing]
            if ours:
                await admin.delete_topics(ours)

    async def committed(self, group: str, topic: str) -> int:
        """Records committed by `group` on `topic`, all partitions."""
        async with _admin(self.kafka) as admin:
            offsets = await admin.list_consumer_group_offsets(group)
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


class _admin:  # an async context manager named like the client it yields
    def __init__(self, kafka: KafkaSettings) -> None:
        self.client = AIOKafkaAdminClient(**kafka.client_kwargs())

    async def __aenter__(self) -> Any:
        await self.client.start()
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def fill(kafka: KafkaSettings, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce `records` (acks=all, zstd like the agents), round-robin by key; returns how many."""
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        acks="all",
        enable_idempotence=True,
        compression_type="zstd",
        linger_ms=20,
        max_batch_size=1 << 20,
    )
    await producer.start()
    count = 0
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
            count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


async def raw_rate(kafka: KafkaSettings, topic: str, records: int, max_records: int) -> tuple[float, int]:
    """aiokafka getmany + orjson.loads of every value: (events/s, events), first record to last.

    With the worker's zstd codec installed (`pipeline.kafka_zstd`, as the worker's clients install it),
    so that the baseline decompresses as fast as the worker does: the full/raw ratio then measures what
    the worker does with the records, not which codec each side happened to get (before this, the first
    raw measure of a run used aiokafka's stock codec and every later one the worker's)."""
    kafka_zstd.install()
    gc.collect()  # a clean heap: not collecting a worker run's cyclic trees (just before) while timed
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(), enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = events = 0
        started = 0.0
        while seen < records:
            batch = await consumer.getmany(timeout_ms=200, max_records=max_records)
            if batch and not started:
                started = time.perf_counter()
            for values in batch.values():
                for record in values:
                    obj = orjson.loads(record.value)
                    events += len(obj["events"]) if "events" in obj else 1
                    seen += 1
        return events / (time.perf_counter() - started), events
    finally:
        await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> set[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()  # a harness may use it
    raise RuntimeError(f"no metadata for {topic}")


class _Timed:
    """Wraps the worker's consumer: notes the first non-empty batch, stops the worker once all is read."""

    def __init__(self, consumer: Any, records: int, parts: Parts | None = None) -> None:
        self.consumer, self.records, self.parts = consumer, records, parts
        self.worker: BatchWorker | None = None
        self.started = 0.0
        self.started_cpu = 0.0  # this thread's CPU time at the first record (`main_thread_busy`)
        self.parts_at_start: dict[str, float] = {}  # `parts` when the window began

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)

    async def getmany(self, **kwargs: Any) -> Any:
        assert self.worker is not None
        if self.worker.stats.records >= self.records:
            self.worker.request_stop()
        batch = await self.consumer.getmany(**kwargs)
        if batch and not self.started:
            self.started, self.started_cpu = time.perf_counter(), time.thread_time()
            self.parts_at_start = {} if self.parts is None else self.parts.snapshot()
        return batch


async def worker_rate(
    bench: Bench, settings: WorkerSettings, records: int, parts: Parts | None = None
) -> WorkerRate:
    """The whole worker path in this process (decode, tree, features, batched score, policy, signed
    outputs, state at commit points, commits), timed from the first record to the end of the last
    checkpoint. With `parts`, the worker's functions are wrapped to count their thread's CPU time
    into it (`bench._worker_parts`), and the rate's `parts` holds the window's seconds per part."""
    from pipeline.worker_runtime import load_signing_key

    await prepare_state_topic(
        settings.kafka,
        settings.events_topic,
        settings.state_topic,
        max_message_bytes=settings.max_state_bytes,
    )
    consumer = _Timed(
        make_events_consumer(
            settings.kafka,
            group_id=settings.group_id,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
        ),
        records,
        parts,
    )
    producer = make_producer(settings.kafka, max_request_bytes=settings.max_state_bytes + (64 << 10))
    state_producer = make_state_producer(
        settings.kafka, max_request_bytes=settings.max_state_bytes + (64 << 10)
    )

    async def restore(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
        return await read_compacted(settings.kafka, settings.state_topic, partitions, 60)

    worker = BatchWorker(
        settings,
        build_detector(settings, live_policy(settings)),
        load_signing_key(settings),
        consumer=consumer,
        producer=producer,
        restore=restore,
        state_producer=state_producer,
    )
    consumer.worker = worker
    await producer.start()
    await state_producer.start()
    await consumer.consumer.start()
    previous = tune_gc()  # as `ringfence worker` does
    try:
        with worker_parts(parts) if parts is not None else nullcontext():
            await asyncio.wait_for(worker.run(), 600)  # its last commit point (state, acks, commit) included
        finished, finished_cpu = time.perf_counter(), time.thread_time()
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
        await consumer.consumer.stop()
        await producer.stop()
        await state_producer.stop()
    seconds, cpu = finished - consumer.started, finished_cpu - consumer.started_cpu
    window = {} if parts is None else parts.window(consumer.parts_at_start, cpu, seconds)
    return WorkerRate(worker.stats.events / seconds, worker, cpu / seconds, window)


@dataclass(frozen=True)
class WorkerRate:
    """`worker_rate`'s measure: events/s from the first record to the end of the last checkpoint, the
    worker, and the share of that window the worker's thread (the event loop's) spent on the CPU — near
    1 when the path is CPU-bound on that thread, with no waiting to win back."""

    events_per_s: float
    worker: BatchWorker
    main_thread_busy: float
    parts: dict[str, float] = field(default_factory=dict)  # seconds of the window per part, when asked


class WorkerProcess:
    """`ringfence worker` as a process (its log in the bench's folder)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "worker"],
                cwd=REPO,
                env={**os.environ, **env},
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def assigned(self) -> bool:
        return "assigned events partitions" in self.log.read_text(errors="replace")

    def partitions(self) -> list[int]:
        """The events partitions of its latest assignment (none yet: [])."""
        return assigned_partitions(self.log.read_text(errors="replace")) or []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


async def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
