"""`ringfence worker` processes on the real broker, observed the way an operator would.

- Prometheus: the worker serves /metrics on a loopback port; after events (one of them malformed),
  a heartbeat and an action result, a scrape over HTTP shows the events, records, dead letters and
  decisions counted, the predict calls' batch sizes and durations, the consumer lag, the agent's
  spool depth and the fan-out latency the device reported;
- OTLP: an in-process OTLP/HTTP receiver (protobuf, decoded with opentelemetry-proto) gets the
  worker's metrics and its spans, continuing the trace of the agent's batch (decide) and of the
  device's action result;
- console: `RINGFENCE_OTEL_CONSOLE=true` prints the spans and metrics on the worker's stderr.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from worker_kafka import Collector, TopicSet, WorkerProcess, batch, wait_for
from worker_support import ransomware

from agents.action_reporter import action_result
from agents.telemetry import TraceContext, to_headers
from pipeline.enroll import KeysFolder
from schemas.actions import ActionKind, Outcome
from schemas.codec import encode
from schemas.common import Mode, Platform
from schemas.devices import Heartbeat

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = datetime(2026, 5, 1, tzinfo=UTC)
PROMETHEUS_PORT = re.compile(r"telemetry: console=\S+ otlp=\S+ prometheus=(\d+)")
FANOUT_READY = "fan-out latency: reading action results of"
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@pytest.fixture
async def topics(kafka_bootstrap: str) -> AsyncIterator[TopicSet]:
    topic_set = TopicSet()
    yield topic_set
    await topic_set.delete(kafka_bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        if topic_set.name("actions") in await admin.list_topics():
            await admin.delete_topics([topic_set.name("actions")])
    finally:
        await admin.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        started.append(WorkerProcess(env, tmp_path / f"worker-{len(started)}.log"))
        return started[-1]

    yield start
    for worker in started:
        worker.stop(10)


async def prepared(bootstrap: str, topics: TopicSet, tmp_path: Path, **otel: str) -> dict[str, str]:
    """The topics (actions included) and a worker environment with these RINGFENCE_OTEL_* settings."""
    await topics.create(bootstrap, events_partitions=1)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topics.name("actions"), 1, 1)])
    finally:
        await admin.close()
    keys = KeysFolder(tmp_path / "keys")
    keys.init(T0)
    env = topics.env(bootstrap, keys.path)
    env["RINGFENCE_OTEL_ACTIONS_TOPIC"] = topics.name("actions")
    env.update({f"RINGFENCE_OTEL_{name.upper()}": value for name, value in otel.items()})
    return env


async def send(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, partition=0, headers=headers)
    finally:
        await producer.stop()


def attack(device: str, headers: list[tuple[str, bytes]] | None = None) -> tuple[int, Record]:
    """(number of events, the record) of a whole ransomware run on `device`."""
    first, second = ransomware(device, "ab" * 32)
    key, value, _ = batch(first + second)
    return len(first) + len(second), (key, value, headers or [])


def heartbeat(device: str, spooled: int) -> Record:
    beat = Heartbeat(device_id=device, hostname=device, platform=Platform.LINUX, mode=Mode.AUDIT,
                     agent_version="1.0", spooled_events=spooled, ts=datetime.now(UTC))
    return device.encode(), encode(beat), []


def applied_verdict(device: str, latency_ms: int, headers: list[tuple[str, bytes]] | None = None) -> Record:
    """A device's report that it applied a verdict `latency_ms` after it was issued."""
    now = datetime.now(UTC)
    result = action_result(device, ActionKind.APPLY_VERDICT, Outcome.SUCCEEDED, now=now,
                           since=now - timedelta(milliseconds=latency_ms), artifact_id="ab" * 32)
    return device.encode(), encode(result), headers or []


def scrape(port: int) -> Samples:
    """/metrics over HTTP: (sample name, labels without the otel_scope ones) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    return {(sample.name, frozenset((k, v) for k, v in sample.labels.items() if not k.startswith("otel_"))):
            sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_prometheus_endpoint_shows_what_the_worker_did(
    kafka_bootstrap: str, topics: TopicSet, tmp_path: Path,
    workers: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    env = await prepared(kafka_bootstrap, topics, tmp_path, prometheus_port="0")
    await send(kafka_bootstrap, topics.name("devices"), [heartbeat("dev-h", 40)])
    worker = workers(env)
    port = int((await wait_for(lambda: PROMETHEUS_PORT.search(worker.log()), 30, "the metrics port"))[1])
    await wait_for(lambda: FANOUT_READY in worker.log(), 30, "the fan-out consumer's assignment")
    events, record = attack("dev-a")
    await send(kafka_bootstrap, topics.name("events"), [record, (b"dev-x", b"\xff\xfe not json", [])])
    async with Collector(kafka_bootstrap, [topics.name("alerts")]) as out:
        await out.until(lambda c: len(c.values(topics.name("alerts"))) >= 1, 45, "an alert")

    async def fanout_seen() -> Samples | None:  # "latest" may skip a result sent during the reset
        await send(kafka_bootstrap, topics.name("actions"), [applied_verdict("dev-a", 180)])
        samples = await asyncio.to_thread(scrape, port)
        return samples if value(samples, "ringfence_fanout_latency_milliseconds_count",
                                action="apply_verdict", outcome="succeeded") else None

    await wait_for(fanout_seen, 30, "the fan-out latency", every_s=1.0)
    samples = await wait_for(lambda: _settled(scrape(port)), 15, "the lag sampled")
    assert value(samples, "ringfence_events_total") == events
    assert value(samples, "ringfence_records_total") == 2
    assert value(samples, "ringfence_dlq_records_total") == 1
    assert (value(samples, "ringfence_decisions_total", kind="alert") or 0) >= 1
    rows = value(samples, "ringfence_scoring_batch_size_count") or 0
    assert rows >= 1 and (value(samples, "ringfence_scoring_batch_size_sum") or 0) >= rows
    assert value(samples, "ringfence_scoring_duration_milliseconds_count") == rows
    assert (value(samples, "ringfence_scoring_duration_milliseconds_sum") or 0) > 0
    assert value(samples, "ringfence_agent_spool_depth", device_id="dev-h") == 40
    count = value(samples, "ringfence_fanout_latency_milliseconds_count", action="apply_verdict",
                  outcome="succeeded")
    assert count and value(samples, "ringfence_fanout_latency_milliseconds_sum", action="apply_verdict",
                           outcome="succeeded") == pytest.approx(180 * count)
    assert worker.stop() == 0


def _settled(samples: Samples) -> Samples | None:
    """The scrape once the events partition's lag is reported and caught up."""
    lag = [v for (name, _), v in samples.items() if name == "ringfence_consumer_lag"]
    return samples if lag == [0] else None


class Receiver:
    """An OTLP/HTTP endpoint on loopback keeping every decoded export request."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.metrics: list[Any] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.take(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def take(self, path: str, body: bytes) -> None:
        if path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            self.spans += [span for rs in request.resource_spans for ss in rs.scope_spans
                           for span in ss.spans]
        elif path == "/v1/metrics":
            request = ExportMetricsServiceRequest.FromString(body)
            self.metrics += [(rm.resource, m) for rm in request.resource_metrics for sm in rm.scope_metrics
                             for m in sm.metrics]

    def span(self, name: str, parent: TraceContext) -> Any:
        return next((s for s in list(self.spans) if s.name == name and s.trace_id.hex() == parent.trace_id
                     and s.parent_span_id.hex() == parent.span_id), None)

    def latest_sum(self, name: str) -> int | None:
        found = [m.sum.data_points[0].as_int for _, m in list(self.metrics)
                 if m.name == name and m.sum.data_points]
        return found[-1] if found else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


async def test_otlp_receiver_gets_the_worker_spans_and_metrics(
    kafka_bootstrap: str, topics: TopicSet, tmp_path: Path, receiver: Receiver,
    workers: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    env = await prepared(kafka_bootstrap, topics, tmp_path, otlp_endpoint=receiver.endpoint,
                         metric_interval_ms="500")
    worker = workers(env)
    agent_batch, agent_action = TraceContext.new(), TraceContext.new()  # as the agent's spans would be
    events, record = attack("dev-a", to_headers(agent_batch))
    await send(kafka_bootstrap, topics.name("events"), [record])
    await wait_for(lambda: FANOUT_READY in worker.log(), 30, "the fan-out consumer's assignment")

    async def action_span() -> Any:
        result = applied_verdict("dev-a", 90, to_headers(agent_action))
        await send(kafka_bootstrap, topics.name("actions"), [result])
        return receiver.span("ringfence.pipeline.action_result", agent_action)

    decide = await wait_for(lambda: receiver.span("ringfence.pipeline.decide", agent_batch), 45,
                            "the decide span continuing the agent's batch trace")
    closing = await wait_for(action_span, 30, "the action result's span", every_s=1.0)
    attributes = {a.key: a.value.string_value or a.value.int_value for a in decide.attributes}
    assert attributes["device_id"] == "dev-a" and attributes["decisions"] >= 1
    assert {a.key: a.value.string_value for a in closing.attributes}["action"] == "apply_verdict"
    await wait_for(lambda: receiver.latest_sum("ringfence.events") == events, 15, "the events counter")
    resource, _ = receiver.metrics[-1]
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "ringfence-pipeline"
    names = {m.name for _, m in receiver.metrics}
    assert {"ringfence.scoring.batch_size", "ringfence.scoring.duration", "ringfence.consumer.lag",
            "ringfence.fanout.latency", "ringfence.records", "ringfence.dlq.records"} <= names
    assert worker.stop() == 0


async def test_console_exporter_prints_spans_and_metrics(
    kafka_bootstrap: str, topics: TopicSet, tmp_path: Path,
    workers: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    env = await prepared(kafka_bootstrap, topics, tmp_path, console="true", metric_interval_ms="300",
                         fanout="false")
    worker = workers(env)
    trace = TraceContext.new()
    _, record = attack("dev-c", to_headers(trace))
    await send(kafka_bootstrap, topics.name("events"), [record])
    await wait_for(lambda: f'"trace_id": "0x{trace.trace_id}"' in worker.log(), 45, "the decide span printed")
    await wait_for(lambda: '"name": "ringfence.events"' in worker.log(), 15, "the metrics printed")
    assert '"name": "ringfence.pipeline.decide"' in worker.log()
    assert FANOUT_READY not in worker.log()
    assert worker.stop() == 0
