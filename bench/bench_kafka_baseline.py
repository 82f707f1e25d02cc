"""The floor and the ceiling: raw Python Kafka clients vs Kafka's own perf tools, same topic and payloads.

Every other Kafka figure in BENCHMARKS.md is only meaningful against what the broker and the client
library can do on this machine at all. This module measures, in one run, on one fresh topic
(PARTITIONS partitions, compression.type=zstd like the events topic), with the same payloads
(EventBatch JSON records of 100 realistic events from `bench_contracts`, ~44 KB each, cycled):

- producers, all with acks=all, idempotence, zstd, linger 5 ms, 1 MiB batches:
  raw aiokafka `create_batch` + `send_batch` (batches filled by hand, round-robin over partitions),
  raw aiokafka `send()` per record (its accumulator batches them), and Kafka's
  `org.apache.kafka.tools.ProducerPerformance` (the `kafka-producer-perf-test` class) from the same
  4.4.0 jars as the broker, run with `java -cp 'libs/*'`, reading the same payload file;
- consumers of all the records the producers wrote: raw aiokafka `getmany` + `orjson.loads` of every
  value (assigned partitions, no group, timed first record to last), and Kafka's
  `org.apache.kafka.tools.ConsumerPerformance` (`fetch.nMsg.sec`: after the group join, as the
  Python side has no group to join), both with 4 MiB partition fetches.

Figures are events/s (records/s x 100); the baseline is the Java tool, so the ratio is the share of
the broker's ceiling the Python client reaches here. The JVM and the broker share the machine's
cores with the client under test, as the pipeline would.

    RINGFENCE_KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python -m bench.bench_kafka_baseline [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import Result
from bench.bench_contracts import make_events, records

NEEDS_KAFKA = True
DISTINCT_PAYLOADS = 20
PARTITIONS = 3
LINGER_MS = 5
BATCH_BYTES = 1 << 20
FETCH_BYTES = 4 << 20
JAVA_HEAP = "256m"
TOOL_TIMEOUT_S = 300.0
CONSUME_TIMEOUT_S = 120.0
TOPIC_READY_S = 20.0
JAVA_CEILING = "Kafka's {tool} (Java, same jars as the broker), same run"

_SENT = re.compile(r"(\d+) (?:steady state )?records sent, ([\d.]+) records/sec")


class BaselineError(RuntimeError):
    """A perf tool failed or printed nothing we can read (its output is in the message)."""


@dataclass(frozen=True)
class Sizes:
    records: int  # records written by each producer (all are read back by each consumer)
    warmup: int  # of which the first are not timed (the JVM's JIT; connections and metadata)


@dataclass(frozen=True)
class Shape:
    """A record shape: events per record and how many records each producer writes."""

    events_per_record: int
    quick: Sizes
    full: Sizes

    def payloads(self) -> list[bytes]:
        """Distinct record values (cycled by the producers): EventBatch JSON, or one event's JSON."""
        count = DISTINCT_PAYLOADS * max(self.events_per_record, 100)
        return records(make_events(count), self.events_per_record)

    def label(self, record_bytes: int) -> str:
        size = f"{record_bytes} B" if record_bytes < 4096 else f"{record_bytes / 1024:.0f} KB"
        return f"{self.events_per_record} ev/record, {size}"


SHAPES = (
    Shape(100, quick=Sizes(800, 300), full=Sizes(4000, 1000)),  # what agents publish
    Shape(1, quick=Sizes(20_000, 5_000), full=Sizes(150_000, 30_000)),  # per-record client overhead
)


@dataclass(frozen=True)
class Rates:
    """Records/s of each client in one run, for one shape."""

    shape: Shape
    record_bytes: int
    send_batch: float
    send: float
    java_producer: float
    getmany: float
    java_consumer: float


def run(quick: bool) -> list[Result]:
    """Each shape on its own fresh topic: producers, then consumers; topics are deleted at the end."""
    bootstrap, libs = _bootstrap(), kafka_libs()
    found: list[Result] = []
    for shape in SHAPES:
        found += results(asyncio.run(measure(bootstrap, libs, shape, shape.quick if quick else shape.full)))
    return found


def results(rates: Rates) -> list[Result]:
    """Events/s of the Python clients, each against the Java tool measured in the same run."""
    shape = rates.shape.label(rates.record_bytes)
    producer = JAVA_CEILING.format(tool="ProducerPerformance")
    consumer = JAVA_CEILING.format(tool="ConsumerPerformance")
    per = rates.shape.events_per_record
    return [
        Result(f"raw aiokafka send_batch ({shape})", rates.send_batch * per, "events/s",
               rates.java_producer * per, producer),
        Result(f"raw aiokafka send() per record ({shape})", rates.send * per, "events/s",
               rates.java_producer * per, producer),
        Result(f"raw aiokafka getmany + orjson.loads ({shape})", rates.getmany * per, "events/s",
               rates.java_consumer * per, consumer),
    ]


def _bootstrap() -> str:
    return os.environ.get("RINGFENCE_KAFKA_BOOTSTRAP", "").strip() or "127.0.0.1:9092"


async def measure(bootstrap: str, libs: Path, shape: Shape, sizes: Sizes) -> Rates:
    values = shape.payloads()
    topic = f"rf-bench-kafka-baseline-{uuid.uuid4().hex[:8]}"
    await _create_topic(bootstrap, topic)
    try:
        with tempfile.TemporaryDirectory(prefix="rf-bench-kafka-") as folder:
            payload_file = Path(folder) / "payloads.txt"
            payload_file.write_bytes(b"\n".join(values))  # orjson never writes a raw newline
            send_batch = await produce_batches(bootstrap, topic, values, sizes)
            send = await produce_each(bootstrap, topic, values, sizes)
            java_producer = await asyncio.to_thread(java_produce, libs, bootstrap, topic, payload_file, sizes)
        total = 3 * sizes.records  # everything the three producers wrote
        getmany = await consume(bootstrap, topic, total)
        java_consumer = await asyncio.to_thread(java_consume, libs, bootstrap, topic, total)
    finally:
        await _delete_topic(bootstrap, topic)
    record_bytes = sum(map(len, values)) // len(values)
    return Rates(shape, record_bytes, send_batch, send, java_producer, getmany, java_consumer)


# ---------------------------------------------------------------- Python clients


def _producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                            compression_type="zstd", linger_ms=LINGER_MS, max_batch_size=BATCH_BYTES,
                            max_request_size=2 * BATCH_BYTES)


async def produce_batches(bootstrap: str, topic: str, values: Sequence[bytes], sizes: Sizes) -> float:
    """Records/s through `create_batch` + `send_batch`, after `sizes.warmup` acked records."""
    producer = _producer(bootstrap)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        await _send_batches(producer, topic, partitions, values, range(sizes.warmup))
        started = time.perf_counter()
        await _send_batches(producer, topic, partitions, values, range(sizes.warmup, sizes.records))
        return (sizes.records - sizes.warmup) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _send_batches(producer: Any, topic: str, partitions: Sequence[int], values: Sequence[bytes],
                        indexes: range) -> None:
    """Fill batches by hand with values[i] for i in `indexes`, round-robin over partitions; await the acks."""
    acks: list[Any] = []
    pending = [values[i % len(values)] for i in indexes]
    while pending:
        batch, taken = producer.create_batch(), 0
        while taken < len(pending):
            if batch.append(key=None, value=pending[taken], timestamp=None) is None:  # full
                break
            taken += 1
        if taken == 0:
            raise BaselineError(f"a {len(pending[0])}-byte record does not fit a batch")
        del pending[:taken]
        partition = partitions[len(acks) % len(partitions)]
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acks)


async def produce_each(bootstrap: str, topic: str, values: Sequence[bytes], sizes: Sizes) -> float:
    """Records/s through `send()` per record (keyless: the default partitioner spreads them)."""
    producer = _producer(bootstrap)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, values[i % len(values)])
                               for i in range(sizes.warmup)])
        started = time.perf_counter()
        acks = [await producer.send(topic, values[i % len(values)])
                for i in range(sizes.warmup, sizes.records)]
        await asyncio.gather(*acks)
        return (sizes.records - sizes.warmup) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int) -> float:
    """Records/s of `getmany` + `orjson.loads` of every value, first record to last."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=FETCH_BYTES)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen, started = 0, 0.0
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while seen < count:
            if time.monotonic() > deadline:
                raise BaselineError(f"getmany read {seen} of {count} records in {CONSUME_TIMEOUT_S:.0f} s")
            batch = await consumer.getmany(timeout_ms=200)
            started = started or (time.perf_counter() if batch else 0.0)
            for values in batch.values():
                for record in values:
                    orjson.loads(record.value)
                    seen += 1
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def _create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        zstd = {"compression.type": "zstd"}  # as the events topic: the broker does not recompress
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=zstd)])
        deadline = time.monotonic() + TOPIC_READY_S
        while not _has_leaders(await admin.describe_topics([topic])):  # clients then find it at once
            if time.monotonic() > deadline:
                raise BaselineError(f"topic {topic} has no leaders after {TOPIC_READY_S:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def _has_leaders(described: Sequence[dict[str, Any]]) -> bool:
    ok = [topic for topic in described if topic.get("error_code") == 0]
    partitions = [p for topic in ok for p in topic.get("partitions", [])]
    return len(partitions) == PARTITIONS and all(p.get("leader", -1) >= 0 for p in partitions)


async def _delete_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


# ---------------------------------------------------------------- Kafka's own tools


def kafka_libs() -> Path:
    """The jars of the Kafka version the project runs (resolved with Maven once, then cached)."""
    from pipeline.kafka_local import LocalKafka

    return LocalKafka.from_env(0, os.environ).fetch_jars()


def _java(libs: Path, main_class: str, *args: str) -> str:
    from pipeline.kafka_local import java_executable

    command = [java_executable(os.environ), f"-Xmx{JAVA_HEAP}", "-Djava.awt.headless=true",
               "-cp", f"{libs}/*", main_class, *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BaselineError(f"{main_class} did not finish in {TOOL_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        raise BaselineError(f"{main_class} exited with {done.returncode}: {_tail(done.stdout + done.stderr)}")
    return done.stdout


def java_produce(libs: Path, bootstrap: str, topic: str, payload_file: Path, sizes: Sizes) -> float:
    """Steady-state records/s reported by ProducerPerformance with the Python producers' settings."""
    out = _java(libs, "org.apache.kafka.tools.ProducerPerformance", "--bootstrap-server", bootstrap,
                "--topic", topic, "--num-records", str(sizes.records), "--warmup-records", str(sizes.warmup),
                "--throughput", "-1",
                "--payload-file", str(payload_file), "--command-property", "acks=all",
                "enable.idempotence=true", "compression.type=zstd", f"linger.ms={LINGER_MS}",
                f"batch.size={BATCH_BYTES}", f"max.request.size={2 * BATCH_BYTES}")
    return parse_producer(out)


def java_consume(libs: Path, bootstrap: str, topic: str, count: int) -> float:
    """fetch.nMsg.sec reported by ConsumerPerformance (records/s once the group is joined)."""
    out = _java(libs, "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bootstrap,
                "--topic", topic, "--num-records", str(count), "--fetch-size", str(FETCH_BYTES),
                "--group", f"rf-bench-perf-{uuid.uuid4().hex[:8]}", "--timeout", "30000")
    return parse_consumer(out, count)


def parse_producer(out: str) -> float:
    """The records/sec of ProducerPerformance's last summary line (the steady state after warm-up)."""
    found = _SENT.findall(out)
    if not found:
        raise BaselineError(f"no summary line in ProducerPerformance output: {_tail(out)}")
    return float(found[-1][1])


def parse_consumer(out: str, expected: int) -> float:
    """fetch.nMsg.sec of ConsumerPerformance's CSV summary (header line, then values)."""
    lines = [line for line in out.splitlines() if line.count(",") >= 9]
    if len(lines) < 2:
        raise BaselineError(f"no summary in ConsumerPerformance output: {_tail(out)}")
    row = dict(zip((h.strip() for h in lines[0].split(",")), (v.strip() for v in lines[-1].split(",")),
                   strict=False))
    try:
        consumed, rate = int(row["data.consumed.in.nMsg"]), float(row["fetch.nMsg.sec"])
    except (KeyError, ValueError) as exc:
        raise BaselineError(f"unexpected ConsumerPerformance summary: {lines[0]!r} / {lines[-1]!r}") from exc
    if consumed < expected:
        raise BaselineError(f"ConsumerPerformance read {consumed} of {expected} records")
    return rate


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_kafka_baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer records per producer (see SHAPES)")
    args = parser.parse_args(argv)
    from bench.__main__ import format_results

    print(format_results(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
