"""How a worker feeds its metrics without touching its events loop: predict calls timed by the
scorer, lag sampled from the consumer, spool depth tapped from the devices follower, fan-out latency
from action results; and a worker with no exporter configured is left exactly as it was."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)

from agents.action_reporter import action_result
from pipeline.detect import Detector
from pipeline.features import FEATURE_NAMES
from pipeline.live_policy import DeviceDirectory
from pipeline.model.provisional import ProvisionalRules
from pipeline.scoring import Scorer
from pipeline.telemetry import Telemetry, TelemetrySettings, configure
from pipeline.worker_telemetry import TimedScorer, WorkerObserver, fanout_latencies, sample_lag
from schemas.actions import ActionKind, Outcome
from schemas.codec import encode
from schemas.common import Mode, Platform
from schemas.devices import DeviceRecord, Heartbeat

T0 = datetime(2026, 5, 1, tzinfo=UTC)
TOPIC = "t.events"


@pytest.fixture
def metered() -> Iterator[tuple[Telemetry, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    telemetry = configure(TelemetrySettings(), metric_readers=[reader])
    yield telemetry, reader
    telemetry.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name: list(m.data.data_points) for r in data.resource_metrics for s in r.scope_metrics
            for m in s.metrics}


def observer_of(telemetry: Telemetry) -> WorkerObserver:
    return WorkerObserver(TelemetrySettings(prometheus_port=0), telemetry)


def test_each_predict_call_is_noted_then_recorded_off_the_detection_path(
    metered: tuple[Telemetry, InMemoryMetricReader],
) -> None:
    telemetry, reader = metered
    detector = Detector(ProvisionalRules())
    observer_of(telemetry).watch(_Stats(), detector)
    assert isinstance(detector.scorer, TimedScorer)
    matrix = np.zeros((7, len(FEATURE_NAMES)), dtype=np.float32)
    detector.scorer.score(matrix)
    detector.scorer.score(matrix[:2])
    assert "ringfence.scoring.batch_size" not in points(reader)  # noted, not yet recorded
    assert detector.scorer.drain() == 2 and detector.scorer.drain() == 0
    [rows] = points(reader)["ringfence.scoring.batch_size"]
    [duration] = points(reader)["ringfence.scoring.duration"]
    assert (rows.count, rows.sum) == (2, 9) and duration.count == 2 and duration.sum > 0
    assert detector.scorer.stats.predict_calls == 2 and detector.scorer.stats.rows_scored == 9


@dataclass
class _Stats:
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    verdicts: int = 0
    commands: int = 0


def test_watch_observes_the_worker_totals(metered: tuple[Telemetry, InMemoryMetricReader]) -> None:
    telemetry, reader = metered
    stats = _Stats(records=2, events=90, dead_letters=1)
    observer_of(telemetry).watch(stats, Detector(ProvisionalRules()))
    stats.events += 10
    found = points(reader)
    assert found["ringfence.events"][0].value == 100 and found["ringfence.dlq.records"][0].value == 1


@dataclass
class Consumer:
    """aiokafka's view of the assignment: high water per partition (None: not fetched yet), positions."""

    high: dict[int, int | None]
    positions: dict[int, int]
    revoked_while_sampling: set[int] = field(default_factory=set)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in self.high} | {TopicPartition("other", 0)}

    def highwater(self, tp: TopicPartition) -> int | None:
        assert tp.topic == TOPIC, "the sampler only asks about the events topic"
        return self.high[tp.partition]

    async def position(self, tp: TopicPartition) -> int:
        if tp.partition in self.revoked_while_sampling:
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return self.positions[tp.partition]


async def test_lag_is_high_water_minus_position_of_each_assigned_partition(
    metered: tuple[Telemetry, InMemoryMetricReader],
) -> None:
    telemetry, reader = metered
    consumer = Consumer({0: 120, 1: None, 2: 50, 3: 9}, {0: 100, 2: 50, 3: 0}, revoked_while_sampling={3})
    assert await sample_lag(consumer, TOPIC, telemetry.metrics) == {0: 20, 2: 0}
    assert {dict(p.attributes)["partition"]: p.value for p in points(reader)["ringfence.consumer.lag"]} == {
        0: 20, 2: 0}
    consumer.high, consumer.revoked_while_sampling = {2: 80}, set()  # a rebalance took partition 0
    await sample_lag(consumer, TOPIC, telemetry.metrics)
    assert [(dict(p.attributes)["partition"], p.value) for p in points(reader)["ringfence.consumer.lag"]] == [
        (2, 30)]


async def test_a_position_that_does_not_come_is_skipped_not_awaited_forever(
    metered: tuple[Telemetry, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.worker_telemetry as module

    class Stuck(Consumer):
        async def position(self, tp: TopicPartition) -> int:
            await asyncio.sleep(60)
            return 0

    monkeypatch.setattr(module, "_POSITION_TIMEOUT_S", 0.05)
    assert await sample_lag(Stuck({0: 10}, {}), TOPIC, metered[0].metrics) == {}


def heartbeat(device: str, spooled: int, ts: datetime = T0) -> bytes:
    return encode(Heartbeat(device_id=device, hostname=device, platform=Platform.LINUX, mode=Mode.AUDIT,
                            agent_version="1.0", spooled_events=spooled, group="lab", ts=ts))


def test_heartbeats_on_the_devices_topic_give_each_agent_spool_depth(
    metered: tuple[Telemetry, InMemoryMetricReader],
) -> None:
    telemetry, reader = metered
    directory = DeviceDirectory()
    apply = observer_of(telemetry).heartbeats(directory.apply)
    apply(b"dev-a", heartbeat("dev-a", 40))
    apply(b"dev-b", heartbeat("dev-b", 0))
    apply(b"dev-c", encode(DeviceRecord(device_id="dev-c", hostname="c", platform=Platform.LINUX,
                                        effective_mode=Mode.AUDIT, agent_version="1", enrolled_at=T0,
                                        last_seen=T0)))
    apply(b"dev-x", b"not json")
    depths = {dict(p.attributes)["device_id"]: p.value for p in points(reader)["ringfence.agent.spool_depth"]}
    assert depths == {"dev-a": 40, "dev-b": 0}
    assert directory.groups["dev-a"] == "lab" and "dev-c" in directory.entries and directory.bad_records == 1
    apply(b"dev-a", heartbeat("dev-a", 7, T0.replace(minute=1)))
    apply(b"dev-b", None)  # tombstone: the device is gone from the fleet
    depths = {dict(p.attributes)["device_id"]: p.value for p in points(reader)["ringfence.agent.spool_depth"]}
    assert depths == {"dev-a": 7} and "dev-b" not in directory.entries


def test_fanout_latency_comes_from_verdict_and_command_results_not_from_blocked_starts() -> None:
    now = datetime.now(UTC)

    def result(action: ActionKind, outcome: Outcome = Outcome.SUCCEEDED, after_ms: int | None = 250) -> Any:
        since = None if after_ms is None else now - timedelta(milliseconds=after_ms)  # issued_at
        return action_result("dev-a", action, outcome, now=now, since=since)

    results = [result(ActionKind.APPLY_VERDICT), result(ActionKind.KILL_PROCESS_TREE, Outcome.REFUSED, 1500),
               result(ActionKind.BLOCK_EXECUTION, after_ms=1),
               result(ActionKind.APPLY_VERDICT, after_ms=None)]
    assert fanout_latencies(results) == [(250.0, "apply_verdict", "succeeded"),
                                         (1500.0, "kill_process_tree", "refused")]


def test_with_no_exporter_the_worker_is_left_untouched() -> None:
    for settings in (None, TelemetrySettings(console=False, otlp_endpoint=None, prometheus_port=None)):
        observer = WorkerObserver.open(settings)
        detector = Detector(ProvisionalRules())
        scorer = detector.scorer
        directory = DeviceDirectory()
        assert observer.telemetry is None and observer.heartbeats(directory.apply) == directory.apply
        observer.watch(_Stats(), detector)
        assert detector.scorer is scorer and type(scorer) is Scorer
        asyncio.run(observer.run(None, TOPIC, None, "g"))  # type: ignore[arg-type]  # returns at once
        observer.close()


def test_a_taken_prometheus_port_is_a_start_error() -> None:
    from pipeline.worker_telemetry import TelemetryStartError

    first = WorkerObserver.open(TelemetrySettings(prometheus_port=0))
    try:
        assert first.telemetry is not None and first.telemetry.prometheus_port
        with pytest.raises(TelemetryStartError, match="cannot start an exporter"):
            WorkerObserver.open(TelemetrySettings(prometheus_port=first.telemetry.prometheus_port))
    finally:
        first.close()


def test_noted_predict_calls_are_bounded_when_nobody_drains(
    metered: tuple[Telemetry, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.worker_telemetry as module

    monkeypatch.setattr(module, "MAX_NOTED", 3)
    scorer = TimedScorer(Scorer(ProvisionalRules()), metered[0].metrics)
    for _ in range(5):
        scorer.score(np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32))
    assert (scorer.drain(), scorer.dropped, scorer.stats.predict_calls) == (3, 2, 5)


class Started:
    """A predict begun on another thread (`Scorer.start`): its probabilities once `wait` is called."""

    def __init__(self, probabilities: Any) -> None:
        self.probabilities, self.waited = probabilities, 0

    def done(self) -> bool:
        return True

    def wait(self) -> Any:
        self.waited += 1
        return self.probabilities


class Startable(ProvisionalRules):
    """The rules, offering `predict_start` as the compiled trees do."""

    def __init__(self) -> None:
        super().__init__()
        self.begun: list[Started] = []

    def predict_start(self, matrix: Any) -> Started:
        self.begun.append(Started(self.predict_proba(matrix)))
        return self.begun[-1]


def test_with_metrics_on_a_flush_is_still_scored_on_the_trees_thread_and_its_duration_noted(
    metered: tuple[Telemetry, InMemoryMetricReader],
) -> None:
    model = Startable()
    scorer = TimedScorer(Scorer(model), metered[0].metrics)
    matrix = np.zeros((3, len(FEATURE_NAMES)), dtype=np.float32)
    matrix[:, FEATURE_NAMES.index("self_log_clear")] = [0, 1, 1]  # two rows a provisional rule flags
    job = scorer.start(matrix)
    assert len(model.begun) == 1 and model.begun[0].waited == 0  # started, not waited for yet
    scores, plain = job.result(), Scorer(ProvisionalRules()).score(matrix)
    assert model.begun[0].waited == 1 and scores.flagged.tolist() == plain.flagged.tolist()
    assert scores.flagged.any() and (scorer.drain(), scorer.stats.predict_calls) == (1, 1)


def test_with_metrics_on_a_model_that_declines_to_start_a_predict_is_scored_now_and_noted(
    metered: tuple[Telemetry, InMemoryMetricReader],
) -> None:
    class Declines(ProvisionalRules):  # as `FastBooster.predict_start` without the C trees
        def predict_start(self, matrix: Any) -> None:
            return None

    scorer = TimedScorer(Scorer(Declines()), metered[0].metrics)
    matrix = np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32)
    job = scorer.start(matrix)
    assert job.done() and job.result().flagged.tolist() == [False, False]
    assert (scorer.drain(), scorer.stats.predict_calls) == (1, 1)


class Kept(MetricExporter):
    """Keeps what the periodic reader exports (its last export happens at shutdown)."""

    def __init__(self) -> None:
        super().__init__()
        self.exported: list[Any] = []

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def test_close_records_what_is_still_noted_before_the_last_export() -> None:
    kept = Kept()
    reader = PeriodicExportingMetricReader(kept, export_interval_millis=600_000)
    observer = WorkerObserver(TelemetrySettings(), configure(TelemetrySettings(), metric_readers=[reader]))
    detector = Detector(ProvisionalRules())
    observer.watch(_Stats(), detector)
    detector.scorer.score(np.zeros((4, len(FEATURE_NAMES)), dtype=np.float32))
    observer.close()
    sums = [point.sum for data in kept.exported for r in data.resource_metrics for s in r.scope_metrics
            for m in s.metrics if m.name == "ringfence.scoring.batch_size" for point in m.data.data_points]
    assert sums == [4]


def test_with_metrics_on_a_flush_of_the_routed_model_is_routed_once_and_scored_as_without(
    metered: tuple[Telemetry, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.model import routed
    from pipeline.scoring import load_model

    model = load_model()
    matrix = np.zeros((4, len(FEATURE_NAMES)), dtype=np.float32)
    matrix[1, FEATURE_NAMES.index(routed.LONE_FEATURES[0])] = 1  # a quiet row with a lone-command indicator
    matrix[3, FEATURE_NAMES.index("own_file_write")] = 2
    expected = Scorer(model).score(matrix)
    calls: list[int] = []
    real = routed.lone_rows
    monkeypatch.setattr(routed, "lone_rows", lambda m: calls.append(len(m)) or real(m))
    got = TimedScorer(Scorer(model), metered[0].metrics).start(matrix).result()
    assert calls == [4]  # the predict and the thresholds share one route
    assert got.flagged.tolist() == expected.flagged.tolist()
    assert np.array_equal(got.probabilities, expected.probabilities)
