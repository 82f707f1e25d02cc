"""The worker's metrics, fed from outside its events loop.

Why outside: the loop (`pipeline.worker`) is tuned for latency, and a metric call per event — or
even per batch — is work it does not need to do. Every number is available elsewhere:

- events, records, dead letters, decisions: the `WorkerStats` totals the worker keeps anyway,
  *observed* by the counters when an exporter collects (`PipelineMetrics.watch_stream`);
- scoring batch size and duration: `TimedScorer` replaces the detector's scorer and notes each
  predict call (once per micro-batch); the values are recorded every `LAG_EVERY_S`;
- consumer lag: a task samples the events consumer's high water and position every `LAG_EVERY_S`;
- agents' spool depth: the heartbeats on the devices topic, which every worker follows anyway for
  the device directory (`WorkerObserver.heartbeats` taps that follower);
- fan-out latency: the `latency_ms` of the ActionResults devices publish (the verdict's or command's
  `issued_at` -> applied on the device). One consumer group shared by the workers
  (`<group_id>.fanout`, starting at the latest offset) reads the actions topic, so every result is
  counted once however many workers run. Results of blocked process starts are not fan-out
  (their latency starts at the process start) and are left out. A result whose record carries a
  W3C `traceparent` ends its trace here with a `ringfence.pipeline.action_result` span, so one
  trace shows agent batch -> decision -> command -> action result, as received by the pipeline.

With no exporter configured (`TelemetrySettings.metrics_enabled` false) nothing is set up at all:
the worker runs exactly as without this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError

from agents.telemetry import continued, from_headers
from pipeline.detect import Detector
from pipeline.errors import PipelineError
from pipeline.scoring import BatchScores, Matrix, RunningPredict, ScoreJob, Scorer, route_of
from pipeline.telemetry import PipelineMetrics, StreamCounts, Telemetry, TelemetrySettings, configure
from schemas.actions import ActionKind, ActionResult
from schemas.codec import decode, decode_device_value
from schemas.devices import Heartbeat
from schemas.errors import ContractError
from schemas.topics import KafkaSettings

__all__ = ["LAG_EVERY_S", "TelemetryStartError", "TimedScorer", "WorkerObserver", "sample_lag"]

log = logging.getLogger(__name__)

Apply = Callable[[bytes | None, bytes | None], None]
LAG_EVERY_S = 1.0  # lag sampling and scoring histogram recording period
MAX_NOTED = 100_000  # predict calls kept between two drains
_POSITION_TIMEOUT_S = 1.0
_FANOUT_ACTIONS = frozenset(ActionKind) - {ActionKind.BLOCK_EXECUTION}


class TelemetryStartError(PipelineError):
    """An exporter could not start (e.g. the Prometheus port is taken)."""


class TimedScorer(Scorer):
    """The detector's scorer, noting rows and duration of every predict call for `drain`.

    Recording into an OpenTelemetry histogram costs ~20 µs a value (measured: two of them per
    predict, 44 µs, against a predict of ~1 ms), so the predict path only appends to a list and
    the observer's sampling task records the values once a second, off the detection path.
    """

    def __init__(self, inner: Scorer, metrics: PipelineMetrics) -> None:
        super().__init__(inner.model)
        self.stats = inner.stats
        self._metrics = metrics
        self._noted: list[tuple[int, float]] = []
        self.dropped = 0  # values not kept because nobody drained them (bounded memory)

    def score(self, matrix: Matrix) -> BatchScores:
        started = time.perf_counter()
        scores = super().score(matrix)
        self.note(len(matrix), started)
        return scores

    def start(self, matrix: Matrix) -> ScoreJob:
        """`Scorer.start`, on the C trees' thread as without telemetry (`pipeline.flush_overlap`); the
        duration noted runs from the start until the caller takes the probabilities."""
        started = time.perf_counter()
        lone = route_of(self.model, matrix)  # once for the flush, as `Scorer.start` does
        running = self._predict_start(matrix, lone)
        if running is None:  # no C trees: scored (and noted) now
            return ScoreJob(self, matrix, self.score(matrix))
        return ScoreJob(self, matrix, _TimedPredict(running, self, len(matrix), started), lone)

    def note(self, rows: int, started: float) -> None:
        """Keep one predict call's rows and duration (since `started`, a perf_counter time)."""
        if len(self._noted) < MAX_NOTED:
            self._noted.append((rows, (time.perf_counter() - started) * 1000.0))
        else:
            self.dropped += 1

    def drain(self) -> int:
        """Record the noted predict calls into the histograms; returns how many."""
        noted, self._noted = self._noted, []
        for rows, duration_ms in noted:
            self._metrics.record_scoring(rows, duration_ms)
        return len(noted)


class _TimedPredict:
    """A `RunningPredict` whose duration is noted by its `TimedScorer` when its result is taken."""

    __slots__ = ("_rows", "_running", "_scorer", "_started")

    def __init__(self, running: RunningPredict, scorer: TimedScorer, rows: int, started: float) -> None:
        self._running, self._scorer, self._rows, self._started = running, scorer, rows, started

    def done(self) -> bool:
        return self._running.done()

    def wait(self) -> Matrix:
        probabilities = self._running.wait()
        self._scorer.note(self._rows, self._started)
        return probabilities


async def sample_lag(consumer: Any, topic: str, metrics: PipelineMetrics) -> dict[int, int]:
    """Store (and return) high water - position of every assigned partition of `topic`.

    A partition not fetched yet has no high water and is left out; one revoked while sampling too.
    """
    lags: dict[int, int] = {}
    for tp in list(consumer.assignment()):
        if tp.topic != topic:
            continue
        try:
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = await asyncio.wait_for(consumer.position(tp), _POSITION_TIMEOUT_S)
        except (IllegalStateError, AssertionError, TimeoutError):  # aiokafka asserts "is assigned"
            continue
        lags[tp.partition] = high - position
    metrics.set_lag(topic, lags)
    return lags


def fanout_latencies(results: Iterable[ActionResult]) -> list[tuple[float, str, str]]:
    """(latency ms, action, outcome) of the results that measure a verdict's or command's fan-out."""
    return [(r.latency_ms, r.action.value, r.outcome.value) for r in results
            if r.latency_ms is not None and r.action in _FANOUT_ACTIONS]


class WorkerObserver:
    """Telemetry of one worker process: `open`, tap and `watch`, `run` as a task, `close`."""

    def __init__(self, settings: TelemetrySettings | None, telemetry: Telemetry | None) -> None:
        self.settings, self.telemetry = settings, telemetry
        self.fanout_records = 0  # action results read from the actions topic
        self.scorer: TimedScorer | None = None

    @classmethod
    def open(cls, settings: TelemetrySettings | None) -> WorkerObserver:
        """Providers and exporters for `settings`; none at all when nothing is to be exported."""
        if settings is None or not settings.metrics_enabled:
            return cls(settings, None)
        try:
            telemetry = configure(settings)
        except OSError as exc:
            raise TelemetryStartError(f"telemetry: cannot start an exporter ({settings.describe()}): {exc}"
                                      ) from None
        log.info("telemetry on: %s", settings.describe())
        return cls(settings, telemetry)

    @property
    def metrics(self) -> PipelineMetrics | None:
        return self.telemetry.metrics if self.telemetry is not None else None

    def heartbeats(self, apply: Apply) -> Apply:
        """`apply` of the devices follower, also storing each heartbeat's spool depth."""
        metrics = self.metrics
        if metrics is None:
            return apply

        def tapped(key: bytes | None, value: bytes | None) -> None:
            apply(key, value)
            _spool_depth(metrics, key, value)

        return tapped

    def watch(self, stats: StreamCounts, detector: Detector) -> None:
        """Observe the worker's totals and time the detector's predict calls."""
        if (metrics := self.metrics) is not None:
            metrics.watch_stream(stats)
            self.scorer = detector.scorer = TimedScorer(detector.scorer, metrics)

    async def run(self, consumer: Any, events_topic: str, kafka: KafkaSettings, group_id: str) -> None:
        """Sample the lag and read action results until cancelled."""
        metrics, settings = self.metrics, self.settings
        if metrics is None or settings is None:
            return
        tasks = [asyncio.create_task(self._sample_loop(consumer, events_topic, metrics))]
        if settings.fanout:
            tasks.append(asyncio.create_task(
                self._fanout_loop(kafka, settings.actions_topic, f"{group_id}.fanout", metrics)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def close(self) -> None:
        """Flush and stop the exporters (a last export of the metrics and spans)."""
        if self.telemetry is not None:
            self._drain()
            self.telemetry.shutdown()

    def _drain(self) -> None:
        if self.scorer is not None:
            self.scorer.drain()

    async def _sample_loop(self, consumer: Any, topic: str, metrics: PipelineMetrics) -> None:
        while True:
            self._drain()
            try:
                await sample_lag(consumer, topic, metrics)
            except KafkaError as exc:  # a metric must never stop the worker
                log.warning("consumer lag not sampled: %s", exc)
            await asyncio.sleep(LAG_EVERY_S)

    async def _fanout_loop(self, kafka: KafkaSettings, topic: str, group_id: str,
                           metrics: PipelineMetrics) -> None:
        consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=group_id, auto_offset_reset="latest",
                                    enable_auto_commit=True)
        consumer.subscribe([topic], listener=_Announce(topic))
        try:
            await consumer.start()
        except KafkaError as exc:
            log.error("fan-out latency off: cannot read %s: %s", topic, exc)
            return
        try:
            while True:
                await self._fanout_batch(consumer, metrics)
        finally:
            await consumer.stop()

    async def _fanout_batch(self, consumer: Any, metrics: PipelineMetrics) -> None:
        try:
            batch = await consumer.getmany(timeout_ms=1000)
        except KafkaError as exc:  # the consumer reconnects by itself
            log.warning("fan-out: fetch failed, retrying: %s", exc)
            await asyncio.sleep(1.0)
            return
        results = []
        for records in batch.values():
            self.fanout_records += len(records)
            for record in records:
                if (result := _action_result(record.value)) is not None:
                    results.append(result)
                    _close_trace(result, record)
        for latency_ms, action, outcome in fanout_latencies(results):
            metrics.record_fanout(latency_ms, action, outcome)


class _Announce(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Logs the actions partitions this worker reads (tests wait for it)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        return None

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        partitions = sorted(tp.partition for tp in assigned)
        log.info("fan-out latency: reading action results of %s partitions %s", self.topic, partitions)


def _action_result(value: bytes | None) -> ActionResult | None:
    if value is None:
        return None
    try:
        return decode(ActionResult, value)
    except ContractError as exc:
        log.debug("actions topic: unreadable record skipped: %s", exc)
        return None


def _close_trace(result: ActionResult, record: Any) -> None:
    """The last hop of a detect -> block trace: the device's report, received by the pipeline."""
    attributes = {"device_id": result.device_id, "action": result.action.value,
                  "outcome": result.outcome.value}
    with continued("ringfence.pipeline.action_result", from_headers(getattr(record, "headers", None)),
                   attributes=attributes, kind="consumer"):
        pass


def _spool_depth(metrics: PipelineMetrics, key: bytes | None, value: bytes | None) -> None:
    if value is None:
        if key is not None:
            metrics.set_spool_depth(key.decode("utf-8", "replace"), None)
        return
    try:
        record = decode_device_value(value)
    except ContractError:  # the device directory logs and counts it
        return
    if isinstance(record, Heartbeat):
        metrics.set_spool_depth(record.device_id, record.spooled_events)
