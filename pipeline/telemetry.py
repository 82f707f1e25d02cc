"""Telemetry of the fleet service: OpenTelemetry traces and metrics, exported by OTLP, Prometheus or console.

Why OpenTelemetry: the trace of one attack crosses processes (agent → worker → agent) through Kafka,
and W3C trace context in record headers (`agents.telemetry`) is what every tracing backend joins on.
Metrics answer the operator's questions about the stream: events/s and DLQ rate (counters — the
backend takes the rate), scoring batch size and latency, consumer lag, fan-out latency (verdict
published → applied on a device) and agents' spool depth (from heartbeats).

`configure()` is called once per process with `TelemetrySettings` (env prefix `RINGFENCE_OTEL_`;
`ringfence worker` does it through `pipeline.worker_telemetry`, which also feeds the instruments
from outside the events loop); nothing is set up at import time. Tests pass their own in-memory
exporter and reader.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from threading import Lock
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.telemetry import TraceContext, use_tracer_provider
from pipeline.policy import Decision
from schemas.alerts import Alert
from schemas.commands import Command
from schemas.topics import ACTIONS

log = logging.getLogger(__name__)

METER_NAME = "ringfence.pipeline"


class TelemetrySettings(BaseSettings):
    """Where traces and metrics go (env prefix `RINGFENCE_OTEL_`); all off by default."""

    model_config = SettingsConfigDict(env_prefix="RINGFENCE_OTEL_", frozen=True, extra="ignore")

    service_name: str = "ringfence-pipeline"
    console: bool = False  # print spans and metrics on stderr (local runs)
    otlp_endpoint: str | None = None  # OTLP/HTTP collector, e.g. http://127.0.0.1:4318
    prometheus_port: int | None = Field(default=None, ge=0, le=65535)  # serve /metrics here (0: any)
    prometheus_host: str = "127.0.0.1"
    metric_interval_ms: int = Field(default=10_000, ge=100)  # console and OTLP export period
    # one OTLP export, retries included: bounds the stop of a worker whose collector is down
    otlp_timeout_s: float = Field(default=3.0, gt=0, le=60)
    actions_topic: str = ACTIONS  # action results: the fan-out latency is read from them
    fanout: bool = True  # follow actions_topic for the fan-out latency (when metrics are on)

    @property
    def metrics_enabled(self) -> bool:
        """Whether any metric exporter is configured (else feeding the instruments is wasted work)."""
        return self.console or bool(self.otlp_endpoint) or self.prometheus_port is not None

    def describe(self) -> str:
        """One loggable line."""
        where = "-" if self.prometheus_port is None else f"{self.prometheus_host}:{self.prometheus_port}"
        return (f"console={self.console} otlp={self.otlp_endpoint or '-'} prometheus={where} "
                f"interval={self.metric_interval_ms} ms fanout={self.fanout and self.actions_topic}")


class StreamCounts(Protocol):
    """Running totals of a worker's stream (`pipeline.worker.WorkerStats` is one)."""

    records: int
    events: int
    dead_letters: int
    alerts: int
    verdicts: int
    commands: int


# Bucket boundaries for the histograms (the SDK's default stops at 10 s and starts at 5 ms/rows).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
SCORING_BUCKETS_MS = (0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
FANOUT_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000, 3_600_000)


class PipelineMetrics:
    """The instruments of the fleet service.

    Counters are *observed*: they read the totals a worker keeps anyway (`watch_stream`) when a
    reader collects, so the event loop pays nothing per event or per batch for them. Histograms are
    recorded once per predict call and once per action result; gauges hold the latest values that
    `set_lag` / `set_spool_depth` stored.
    """

    def __init__(self, meter: Meter) -> None:
        self.scoring_batch_size = meter.create_histogram("ringfence.scoring.batch_size", unit="{row}",
                                                         description="rows per model predict call")
        self.scoring_latency = meter.create_histogram("ringfence.scoring.duration", unit="ms",
                                                      description="time of one micro-batch predict call")
        self.fanout_latency = meter.create_histogram(
            "ringfence.fanout.latency", unit="ms",
            description="verdict or command issued -> applied on a device (ActionResult.latency_ms)")
        self._lock = Lock()
        self._stream: StreamCounts | None = None
        self._lag: dict[tuple[str, int], int] = {}
        self._spool: dict[str, int] = {}
        for name, unit, description, callback in (
            ("ringfence.events", "{event}", "events decoded and processed (rate: events/s)", self._events),
            ("ringfence.records", "{record}", "event batch records consumed", self._records),
            ("ringfence.dlq.records", "{record}", "records sent to the dead-letter topic",
             self._dead_letters),
            ("ringfence.decisions", "{decision}", "alerts, verdicts and commands emitted", self._decisions),
        ):
            meter.create_observable_counter(name, [callback], unit=unit, description=description)
        meter.create_observable_gauge("ringfence.consumer.lag", [self._observe_lag], unit="{record}",
                                      description="records between the consumer's position and the end")
        meter.create_observable_gauge("ringfence.agent.spool_depth", [self._observe_spool], unit="{event}",
                                      description="events waiting on an agent's disk (from heartbeats)")

    def watch_stream(self, counts: StreamCounts) -> None:
        """Report these totals as the stream counters from now on."""
        self._stream = counts

    def record_scoring(self, rows: int, duration_ms: float) -> None:
        """One predict call of `rows` rows that took `duration_ms`."""
        self.scoring_batch_size.record(rows)
        self.scoring_latency.record(duration_ms)

    def record_fanout(self, latency_ms: float, action: str, outcome: str) -> None:
        """A device's report that it acted `latency_ms` after the verdict or command was issued."""
        self.fanout_latency.record(latency_ms, {"action": action, "outcome": outcome})

    def set_lag(self, topic: str, lag_by_partition: Mapping[int, int]) -> None:
        """The lag of every partition of `topic` this process consumes now (others are dropped)."""
        with self._lock:
            self._lag = {key: lag for key, lag in self._lag.items() if key[0] != topic}
            self._lag.update({(topic, partition): max(lag, 0) for partition, lag in lag_by_partition.items()})

    def set_spool_depth(self, device_id: str, spooled_events: int | None) -> None:
        """The spool depth a device's latest heartbeat stated (None: forget the device)."""
        with self._lock:
            if spooled_events is None:
                self._spool.pop(device_id, None)
            else:
                self._spool[device_id] = spooled_events

    def _events(self, options: CallbackOptions) -> Iterable[Observation]:
        return [] if self._stream is None else [Observation(self._stream.events)]

    def _records(self, options: CallbackOptions) -> Iterable[Observation]:
        return [] if self._stream is None else [Observation(self._stream.records)]

    def _dead_letters(self, options: CallbackOptions) -> Iterable[Observation]:
        return [] if self._stream is None else [Observation(self._stream.dead_letters)]

    def _decisions(self, options: CallbackOptions) -> Iterable[Observation]:
        stream = self._stream
        if stream is None:
            return []
        return [Observation(stream.alerts, {"kind": "alert"}),
                Observation(stream.verdicts, {"kind": "verdict"}),
                Observation(stream.commands, {"kind": "command"})]

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [Observation(lag, {"topic": topic, "partition": partition})
                    for (topic, partition), lag in self._lag.items()]

    def _observe_spool(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [Observation(depth, {"device_id": device}) for device, depth in self._spool.items()]


@dataclass
class Telemetry:
    """What `configure` set up; `shutdown()` flushes and stops every exporter."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    metrics: PipelineMetrics
    prometheus_port: int | None = None
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def shutdown(self) -> None:
        use_tracer_provider(None)
        for stop in reversed(self._stops):
            stop()


def configure(settings: TelemetrySettings, *, span_exporters: Sequence[SpanExporter] = (),
              metric_readers: Sequence[MetricReader] = ()) -> Telemetry:
    """Tracer and meter providers with the configured exporters (plus the given ones, for tests)."""
    resource = Resource.create({"service.name": settings.service_name,
                                "service.instance.id": f"{socket.gethostname()}-{os.getpid()}"})
    tracer_provider = TracerProvider(resource=resource)
    for exporter in span_exporters:
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    readers, stops = list(metric_readers), []
    _exporters(settings, tracer_provider, readers)
    prometheus_port = None
    if settings.prometheus_port is not None:
        prometheus_port, stop_server = _prometheus(settings, readers)
        stops.append(stop_server)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, views=_views())
    if span_exporters or settings.console or settings.otlp_endpoint:  # else spans would go nowhere
        use_tracer_provider(tracer_provider)
    metrics = PipelineMetrics(meter_provider.get_meter(METER_NAME))
    telemetry = Telemetry(tracer_provider, meter_provider, metrics, prometheus_port)
    telemetry._stops += [*stops, tracer_provider.shutdown, meter_provider.shutdown]
    log.info("telemetry: console=%s otlp=%s prometheus=%s", settings.console, settings.otlp_endpoint,
             prometheus_port)
    return telemetry


def _exporters(settings: TelemetrySettings, tracer_provider: TracerProvider, readers: list[MetricReader]
               ) -> None:
    interval = settings.metric_interval_ms
    if settings.console:
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr),
                                                     export_interval_millis=interval))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = settings.otlp_endpoint.rstrip("/")
        timeout = settings.otlp_timeout_s
        spans = OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=timeout)
        tracer_provider.add_span_processor(BatchSpanProcessor(spans))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics",
                                                                        timeout=timeout),
                                                     export_interval_millis=interval))


def _views() -> list[View]:
    return [View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(buckets))
            for name, buckets in (("ringfence.scoring.batch_size", BATCH_BUCKETS),
                                  ("ringfence.scoring.duration", SCORING_BUCKETS_MS),
                                  ("ringfence.fanout.latency", FANOUT_BUCKETS_MS))]


def _prometheus(settings: TelemetrySettings, readers: list[MetricReader]) -> tuple[int, Callable[[], None]]:
    """A Prometheus reader and its /metrics HTTP endpoint: (the port it listens on, its stop)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    readers.append(PrometheusMetricReader())
    server: Any
    server, thread = start_http_server(settings.prometheus_port or 0, addr=settings.prometheus_host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return int(server.server_port), stop


def trace_groups(decisions: Sequence[Decision], traces: Mapping[str, TraceContext]
                 ) -> list[tuple[TraceContext | None, str | None, list[Decision]]]:
    """Consecutive decisions about one device, with the trace its latest event batch carried.

    Scoring is micro-batched across devices, so the decisions of one flush belong to several
    traces; a verdict belongs to the device of the alert it names.
    """
    device_of_alert: dict[str, str] = {}
    groups: list[tuple[TraceContext | None, str | None, list[Decision]]] = []
    for decision in decisions:
        if isinstance(decision, Alert | Command):
            device: str | None = decision.device_id
            if isinstance(decision, Alert):
                device_of_alert[decision.alert_id] = decision.device_id
        else:
            device = device_of_alert.get(decision.alert_id or "")
        if groups and groups[-1][1] == device:
            groups[-1][2].append(decision)
        else:
            groups.append((traces.get(device) if device else None, device, [decision]))
    return groups
