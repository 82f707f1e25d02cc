"""Real-Kafka plumbing for the worker integration tests: an isolated topic set, worker processes, I/O.

Every test gets its own topics and consumer group (uuid suffix) on the shared broker, runs
`ringfence worker` as real processes (so `kill -9` is a real crash), and deletes its topics after.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.demo_kit import assigned_partitions
from schemas.codec import encode_batch
from schemas.events import BehaviorEvent, EventBatch

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TopicSet:
    """One test's topics and group, and the environment that points a worker at them."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def name(self, kind: str) -> str:
        return f"rf-test-{kind}-{self.suffix}"

    @property
    def all(self) -> list[str]:
        return [self.name(k) for k in ("events", "dlq", "alerts", "verdicts", "commands", "devices", "policy",
                                       "state")]

    def env(self, bootstrap: str, keys_dir: Path, policy: Path | None = None) -> dict[str, str]:
        """The worker's environment. The model is pinned to the deterministic provisional rule scorer
        (an empty model folder): these tests are about the stream shell, and the trees' effect on an
        alert (its root) is known for that scorer; the trained model has its own tests."""
        no_model = keys_dir.parent / "no-trained-model"
        no_model.mkdir(exist_ok=True)
        env = {
            "RINGFENCE_MODEL_DIR": str(no_model),
            "RINGFENCE_KAFKA_BOOTSTRAP": bootstrap, "RINGFENCE_KEYS_DIR": str(keys_dir),
            "RINGFENCE_GROUP_ID": self.name("group"), "RINGFENCE_EVENTS_TOPIC": self.name("events"),
            "RINGFENCE_DLQ_TOPIC": self.name("dlq"), "RINGFENCE_ALERTS_TOPIC": self.name("alerts"),
            "RINGFENCE_VERDICTS_TOPIC": self.name("verdicts"),
            "RINGFENCE_COMMANDS_TOPIC": self.name("commands"),
            "RINGFENCE_DEVICES_TOPIC": self.name("devices"), "RINGFENCE_POLICY_TOPIC": self.name("policy"),
            "RINGFENCE_STATE_TOPIC": self.name("state"), "RINGFENCE_COMMIT_INTERVAL_MS": "300",
            "RINGFENCE_SESSION_TIMEOUT_MS": "6000", "RINGFENCE_HEARTBEAT_INTERVAL_MS": "1000",
        }
        if policy is not None:
            env["RINGFENCE_POLICY_PATH"] = str(policy)
        return env

    async def create(self, bootstrap: str, events_partitions: int) -> None:
        compact = {"cleanup.policy": "compact"}
        wanted = [NewTopic(self.name("events"), events_partitions, 1)]
        wanted += [NewTopic(self.name(k), 1, 1) for k in ("dlq", "alerts", "verdicts", "commands")]
        wanted += [NewTopic(self.name(k), 1, 1, topic_configs=compact) for k in ("devices", "policy")]
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            response = await admin.create_topics(wanted)
            assert all(error[1] == 0 for error in response.topic_errors), response.topic_errors
        finally:
            await admin.close()

    async def create_state(self, bootstrap: str, partitions: int) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.name("state"), partitions, 1,
                                                topic_configs={"cleanup.policy": "compact"})])
        finally:
            await admin.close()

    async def delete(self, bootstrap: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            ours = [t for t in self.all if t in existing]
            if ours:
                await admin.delete_topics(ours)
        finally:
            await admin.close()

    async def committed(self, bootstrap: str) -> dict[int, int]:
        """The worker group's committed offsets of the events topic, by partition."""
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.name("group"))
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == self.name("events")}


class WorkerProcess:
    """`ringfence worker` in its own process, its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"], cwd=REPO, env={**os.environ, **env},
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assigned(self) -> set[int] | None:
        """The partitions of its latest assignment (None before the first)."""
        found = assigned_partitions(self.log())
        return None if found is None else set(found)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout_s: float = 20) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str, *, every_s: float = 0.2) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None, int | None]]
                  ) -> list[int]:
    """Send (key, value, partition) records in order; returns their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        return [(await producer.send_and_wait(topic, value, key=key, partition=partition)).offset
                for key, value, partition in records]
    finally:
        await producer.stop()


def batch(events: list[BehaviorEvent], partition: int | None = None) -> tuple[bytes, bytes, int | None]:
    """One EventBatch record of a device's events, as an agent publishes it."""
    return events[0].device_id.encode(), encode_batch(EventBatch.of(events)), partition


class Collector:
    """Reads output topics from the beginning (no group) and keeps every record."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.records: dict[str, list[tuple[bytes | None, bytes | None]]] = {t: [] for t in topics}
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> Collector:
        await self._consumer.start()
        tps = [TopicPartition(t, 0) for t in self.records]  # a TopicSet's output topics have one partition
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(self, done: Callable[[Collector], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: "
                                     f"{ {t: len(r) for t, r in self.records.items()} }")
            for tp, records in (await self._consumer.getmany(timeout_ms=200)).items():
                self.records[tp.topic] += [(r.key, r.value) for r in records]

    def values(self, topic: str) -> list[bytes]:
        return [v for _, v in self.records[topic] if v is not None]
