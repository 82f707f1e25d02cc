"""OpenTelemetry: W3C trace context from an agent's batch through scoring to the command and the
device's action result (spans collected in-process), and the pipeline's metrics (in memory, Prometheus)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError
from worker_support import ransomware

from agents.action_reporter import KafkaActionReporter, action_result
from agents.command_follower import CommandFollower
from agents.telemetry import (
    TRACEPARENT,
    TraceContext,
    current,
    from_headers,
    parse_traceparent,
    span,
    to_headers,
)
from pipeline.detect import Detector
from pipeline.model.provisional import ProvisionalRules
from pipeline.policy import Policy, PolicyConfig
from pipeline.settings import WorkerSettings
from pipeline.telemetry import Telemetry, TelemetrySettings, configure
from pipeline.worker import BatchWorker, WorkerStats
from schemas.actions import ActionKind, Outcome
from schemas.codec import decode, encode_batch
from schemas.commands import Command
from schemas.common import Mode
from schemas.events import EventBatch
from schemas.signing import SigningKey

Headers = list[tuple[str, bytes]]


@dataclass
class Message:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)


@dataclass
class Producer:
    """Records what is sent, headers included (aiokafka's send / send_and_wait keywords)."""

    sent: list[tuple[str, bytes | None, Headers]] = field(default_factory=list)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None, headers: Headers | None = None) -> asyncio.Future[None]:
        self.sent.append((topic, value, list(headers or ())))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ack.set_result(None)
        return ack

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                            headers: Headers | None = None) -> None:
        await self.send(topic, value, key, headers=headers)


class OneBatchConsumer:
    """Assigns partition 0, hands out one batch, then stops the worker."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages, self.listener, self.worker = messages, None, None
        self.committed_offsets: dict[int, int] = {}

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Message]]:
        assert self.listener is not None and self.worker is not None
        if not self.worker.owned:
            await self.listener.on_partitions_assigned({TopicPartition("t.events", 0)})
        if self.messages:
            batch, self.messages = self.messages, []
            return {TopicPartition("t.events", 0): batch}
        self.worker.request_stop()
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed_offsets.update({tp.partition: o for tp, o in offsets.items()})

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp.partition)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry = configure(TelemetrySettings(), span_exporters=[exporter])
    yield exporter
    telemetry.shutdown()


def test_traceparent_is_strict_w3c_version_00() -> None:
    context = TraceContext.new()
    assert parse_traceparent(context.traceparent.encode()) == context
    assert from_headers([("other", b"x"), ("Traceparent", context.traceparent.encode())]) == context
    zero_trace = "00-" + "0" * 32 + "-1234567890abcdef-01"
    for bad in ("ff-" + context.traceparent[3:], context.traceparent.upper(), zero_trace, "00-abc-def-01", "",
                "\udcff"):
        assert parse_traceparent(bad) is None, bad
    assert parse_traceparent(b"\xff\xfe") is None and from_headers(None) is None
    assert not parse_traceparent("00-" + "a" * 32 + "-" + "b" * 16 + "-00").sampled  # type: ignore[union-attr]


def test_without_a_tracer_provider_the_context_still_flows() -> None:
    parent = TraceContext.new()
    assert current() is None
    with span("x", parent) as child:
        assert current() == child
        assert child.trace_id == parent.trace_id and child.span_id != parent.span_id
    assert current() is None
    assert to_headers(child) == [(TRACEPARENT, child.traceparent.encode())] and to_headers(None) == []


async def _worker_commands(tmp_path: Path, headers: Headers) -> list[tuple[str, bytes | None, Headers]]:
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    settings = WorkerSettings(events_topic="t.events", alerts_topic="t.alerts", verdicts_topic="t.verdicts",
                              commands_topic="t.commands", dlq_topic="t.dlq", state_topic="t.state",
                              keys_dir=tmp_path, commit_interval_ms=60_000)
    producer = Producer()
    consumer = OneBatchConsumer([Message(0, b"dev-a", encode_batch(EventBatch.of(phase1 + phase2)), headers)])
    detector = Detector(ProvisionalRules(), Policy(PolicyConfig(default_mode=Mode.BLOCK)))
    worker = BatchWorker(settings, detector, SigningKey.generate(), consumer=consumer, producer=producer,
                         restore=lambda partitions: _no_state(partitions))
    consumer.worker = worker  # type: ignore[assignment]
    await worker.run()
    return [sent for sent in producer.sent if sent[0] in ("t.commands", "t.verdicts", "t.alerts")]


async def _no_state(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
    return {p: {} for p in partitions}


@dataclass
class Handler:
    """Acts on a command as the enforcer would: reports one ActionResult."""

    reporter: KafkaActionReporter
    device_id: str = "dev-a"
    store: Any = field(default_factory=lambda: type("Store", (), {"save_position": lambda *a: None,
                                                                   "handling": lambda *a: None})())

    def is_mine(self, key: bytes | None) -> bool:
        return key == self.device_id.encode()

    async def handle(self, value: bytes | None) -> None:
        command = decode(Command, value or b"")
        kind = ActionKind(command.action.value)
        self.reporter.report(action_result(self.device_id, kind, Outcome.SUCCEEDED, now=datetime.now(UTC),
                                           command_id=command.command_id))


async def test_one_trace_runs_from_the_agent_batch_to_the_action_result(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    with span("ringfence.agent.publish_batch", kind="producer") as batch:  # what the publisher does
        batch_headers = to_headers(batch)
    outputs = await _worker_commands(tmp_path, batch_headers)
    commands = [(value, headers) for topic, value, headers in outputs if topic == "t.commands"]
    assert outputs and all(from_headers(headers) is not None for _, _, headers in outputs)

    producer = Producer()
    reporter = KafkaActionReporter(lambda: producer, "t.actions")
    follower = CommandFollower(Handler(reporter), lambda: None, "t.commands")  # type: ignore[arg-type]
    for offset, (value, headers) in enumerate(commands):
        await follower._one(0, Message(offset, b"dev-a", value, headers))
    sending = asyncio.create_task(reporter.run())
    assert await reporter.flush(5)
    sending.cancel()
    [(_, _, result_headers), *_] = producer.sent
    with span("ringfence.pipeline.action_result", from_headers(result_headers), kind="consumer"):
        pass  # what the actions consumer (fan-out latency) does

    finished = spans.get_finished_spans()
    by_id = {_ids(s)[1]: s for s in finished}
    [last] = [s for s in finished if s.name == "ringfence.pipeline.action_result"]
    walk = [last]
    while walk[-1].parent is not None and walk[-1].parent.span_id in by_id:
        walk.append(by_id[walk[-1].parent.span_id])
    assert [s.name for s in reversed(walk)] == [  # one trace, detect -> block, across the processes' hops
        "ringfence.agent.publish_batch", "ringfence.pipeline.decide", "ringfence.agent.command",
        "ringfence.pipeline.action_result"]
    assert len({_ids(s)[0] for s in finished}) == 1
    decide = walk[-2]
    assert decide.attributes == {"device_id": "dev-a", "decisions": 4}
    assert [s.kind.name for s in reversed(walk)] == ["PRODUCER", "PRODUCER", "CONSUMER", "CONSUMER"]


def _ids(span_: ReadableSpan) -> tuple[int, int]:
    assert span_.context is not None
    return span_.context.trace_id, span_.context.span_id


async def test_records_without_a_trace_get_no_headers(tmp_path: Path) -> None:
    outputs = await _worker_commands(tmp_path, [])
    assert outputs and all(headers == [] for _, _, headers in outputs)


def _collect(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {metric.name: list(metric.data.data_points) for resource in data.resource_metrics
            for scope in resource.scope_metrics for metric in scope.metrics}


def test_pipeline_metrics_reach_the_reader() -> None:
    reader = InMemoryMetricReader()
    telemetry: Telemetry = configure(TelemetrySettings(), metric_readers=[reader])
    try:
        metrics = telemetry.metrics
        stats = WorkerStats(records=30, events=1200, dead_letters=3, alerts=2, verdicts=1, commands=4)
        metrics.watch_stream(stats)
        metrics.record_scoring(64, 4.5)
        metrics.record_fanout(180.0, "apply_verdict", "succeeded")
        metrics.set_lag("ringfence.events.v1", {0: 12, 1: -1})
        metrics.set_spool_depth("dev-a", 40)
        points = _collect(reader)
        stats.events, stats.dead_letters = 1500, 4  # counters read the totals at each collection
        metrics.set_lag("ringfence.events.v1", {1: 7})  # partition 0 revoked: no longer reported
        metrics.set_spool_depth("dev-a", None)
        later = _collect(reader)
    finally:
        telemetry.shutdown()
    assert points["ringfence.events"][0].value == 1200 and points["ringfence.dlq.records"][0].value == 3
    assert points["ringfence.records"][0].value == 30
    assert {dict(p.attributes)["kind"]: p.value for p in points["ringfence.decisions"]} == {
        "alert": 2, "verdict": 1, "command": 4}
    assert points["ringfence.scoring.batch_size"][0].sum == 64
    assert points["ringfence.scoring.duration"][0].sum == 4.5
    [fanout] = points["ringfence.fanout.latency"]
    assert fanout.count == 1
    assert dict(fanout.attributes) == {"action": "apply_verdict", "outcome": "succeeded"}
    lag = {dict(p.attributes)["partition"]: p.value for p in points["ringfence.consumer.lag"]}
    assert lag == {0: 12, 1: 0}
    assert [(dict(p.attributes), p.value) for p in points["ringfence.agent.spool_depth"]] == [
        ({"device_id": "dev-a"}, 40)]
    assert later["ringfence.events"][0].value == 1500 and later["ringfence.dlq.records"][0].value == 4
    assert [(dict(p.attributes), p.value) for p in later["ringfence.consumer.lag"]] == [
        ({"topic": "ringfence.events.v1", "partition": 1}, 7)]
    assert "ringfence.agent.spool_depth" not in later


def test_histograms_have_buckets_for_their_ranges() -> None:
    """Rows up to a full micro-batch, sub-millisecond predicts, fan-out to a device that was offline."""
    reader = InMemoryMetricReader()
    telemetry = configure(TelemetrySettings(), metric_readers=[reader])
    try:
        telemetry.metrics.record_scoring(512, 0.3)
        telemetry.metrics.record_fanout(600_000.0, "apply_verdict", "succeeded")
        points = _collect(reader)
    finally:
        telemetry.shutdown()
    [rows] = points["ringfence.scoring.batch_size"]
    assert 512 in rows.explicit_bounds and rows.bucket_counts[list(rows.explicit_bounds).index(512)] == 1
    assert points["ringfence.scoring.duration"][0].bucket_counts[1] == 1  # (0.25, 0.5] ms
    [fanout] = points["ringfence.fanout.latency"]
    assert fanout.explicit_bounds[-1] == 3_600_000 and fanout.bucket_counts[-2] == 1  # (5 min, 1 h]


def test_without_a_stream_the_counters_report_nothing() -> None:
    reader = InMemoryMetricReader()
    telemetry = configure(TelemetrySettings(), metric_readers=[reader])
    try:
        telemetry.metrics.record_scoring(1, 0.1)
        data = reader.get_metrics_data()
    finally:
        telemetry.shutdown()
    assert data is not None
    names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert "ringfence.events" not in names and "ringfence.dlq.records" not in names


def test_prometheus_endpoint_serves_the_metrics() -> None:
    telemetry = configure(TelemetrySettings(prometheus_port=0))
    try:
        telemetry.metrics.watch_stream(WorkerStats(events=5))
        telemetry.metrics.record_scoring(3, 1.0)
        assert telemetry.prometheus_port
        url = f"http://127.0.0.1:{telemetry.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as page:
            text = page.read().decode()
    finally:
        telemetry.shutdown()
    assert re.search(r"^ringfence_events_total(\{[^}]*\})? 5\.0$", text, re.M), text
    assert re.search(r"^ringfence_scoring_batch_size_count(\{[^}]*\})? 1\.0$", text, re.M), text


def test_console_exporter_prints_spans_and_metrics_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = configure(TelemetrySettings(console=True, metric_interval_ms=60_000))
    telemetry.metrics.watch_stream(WorkerStats(events=42))
    with span("ringfence.pipeline.decide", TraceContext.new(), kind="producer"):
        pass
    telemetry.shutdown()  # a last export of the metrics
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays the CLI's
    assert '"name": "ringfence.pipeline.decide"' in err and '"name": "ringfence.events"' in err
    assert '"value": 42' in err


def test_settings_come_from_ringfence_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_OTEL_PROMETHEUS_PORT", "9464")
    monkeypatch.setenv("RINGFENCE_OTEL_CONSOLE", "true")
    monkeypatch.setenv("RINGFENCE_OTEL_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    settings = TelemetrySettings()
    assert (settings.prometheus_port, settings.console, settings.otlp_endpoint) == (
        9464, True, "http://127.0.0.1:4318")
    assert settings.metrics_enabled
    assert not TelemetrySettings(console=False, otlp_endpoint=None, prometheus_port=None).metrics_enabled
    monkeypatch.setenv("RINGFENCE_OTEL_PROMETHEUS_PORT", "70000")
    with pytest.raises(ValidationError):
        TelemetrySettings()


def test_a_dead_otlp_collector_delays_the_stop_by_the_export_timeout_only() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    telemetry = configure(TelemetrySettings(otlp_endpoint=f"http://127.0.0.1:{port}", otlp_timeout_s=1.0,
                                            metric_interval_ms=60_000))
    telemetry.metrics.watch_stream(WorkerStats(events=3))
    with span("ringfence.pipeline.decide", TraceContext.new()):
        pass
    started = time.monotonic()
    telemetry.shutdown()  # a last export of spans and metrics, both refused and retried
    assert time.monotonic() - started < 6  # default exporter retries took 12 s


def test_metrics_only_records_no_spans_and_the_trace_still_flows() -> None:
    """Prometheus alone: spans would be exported nowhere, so none is made (the ids still propagate)."""
    from agents import telemetry as agent_telemetry

    telemetry = configure(TelemetrySettings(prometheus_port=0))
    try:
        assert agent_telemetry._provider is None
        parent = TraceContext.new()
        with span("ringfence.pipeline.decide", parent) as child:
            assert child.trace_id == parent.trace_id and child.span_id != parent.span_id
    finally:
        telemetry.shutdown()
    exporter = InMemorySpanExporter()
    traced = configure(TelemetrySettings(), span_exporters=[exporter])
    try:
        assert agent_telemetry._provider is traced.tracer_provider
    finally:
        traced.shutdown()
