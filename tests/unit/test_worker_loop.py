"""The worker's events loop with a scripted consumer and a recording producer (no broker).

What a user of the fleet would notice: bad records reach the DLQ with their coordinates and the
good ones still alert; offsets are committed only after the decisions and the trees' state were
acknowledged; a partition handed over keeps its trees (restored from the state records); a
failed restore stops the worker instead of processing without trees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from worker_support import ransomware

from pipeline import worker as worker_module
from pipeline.detect import Detector
from pipeline.errors import PipelineError
from pipeline.eventkit import EventKit
from pipeline.model.provisional import ProvisionalRules
from pipeline.policy import Policy, PolicyConfig
from pipeline.settings import WorkerSettings
from pipeline.state_out import unpack_state
from pipeline.tree import ts_ms
from pipeline.tree_state import forest_to_bytes
from pipeline.worker import IDLE_WAIT_MS, BatchWorker
from schemas.alerts import Alert
from schemas.codec import decode, encode_batch
from schemas.commands import Command
from schemas.common import Mode
from schemas.deadletter import DeadLetter
from schemas.events import BehaviorEvent, EventBatch, ProcessStart
from schemas.signing import Keyring, SigningKey, verify

KEY = SigningKey.generate()
SHA = "ab" * 32
EVENTS = "t.events"
NOW_MS = 1_780_000_000_000  # the workers' wall clock in these tests (2026)


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None, bytes | None, int | None]] = field(default_factory=list)
    fail: bool = False
    hold: bool = False  # acks stay pending until `release()`
    log: list[str] = field(default_factory=list)
    held: list[asyncio.Future[None]] = field(default_factory=list)

    def release(self) -> None:
        self.log.append("acks back")
        for ack in self.held:
            ack.set_result(None)
        self.held.clear()

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        self.log.append(f"send {topic}")
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            ack.set_exception(OSError("broker gone"))
        elif self.hold:
            self.held.append(ack)
        else:
            ack.set_result(None)
        return ack

    def values(self, topic: str) -> list[bytes]:
        return [v for t, _, v, _ in self.sent if t == topic and v is not None]


Step = dict[int, list[Record]] | Callable[[Any], Awaitable[None]]


class FakeConsumer:
    """Replays `steps`: a batch per getmany, or an action (e.g. a rebalance) run in between."""

    def __init__(self, steps: list[Step], producer: FakeProducer, partitions: set[int],
                 committed: dict[int, int] | None = None) -> None:
        self.steps, self.producer, self.partitions = list(steps), producer, partitions
        self.committed_offsets: dict[int, int] = dict(committed or {})
        self.listener: Any = None
        self.worker: BatchWorker | None = None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        if self.partitions and self.listener is not None and not self.worker_owned():
            await self.listener.on_partitions_assigned({TopicPartition(EVENTS, p) for p in self.partitions})
        while self.steps:
            step = self.steps.pop(0)
            if callable(step):
                await step(self)
                continue
            self.producer.log.append(f"poll {[r.offset for records in step.values() for r in records]}")
            return {TopicPartition(EVENTS, p): records for p, records in step.items()}
        assert self.worker is not None
        self.worker.request_stop()
        return {}

    def worker_owned(self) -> bool:
        return self.worker is not None and bool(self.worker.owned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.producer.log.append(f"commit {sorted((tp.partition, o) for tp, o in offsets.items())}")
        self.committed_offsets.update({tp.partition: o for tp, o in offsets.items()})

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp.partition)


def settings(tmp_path: Path, commit_interval_ms: int = 60_000) -> WorkerSettings:
    return WorkerSettings(events_topic=EVENTS, alerts_topic="t.alerts", verdicts_topic="t.verdicts",
                          commands_topic="t.commands", dlq_topic="t.dlq", state_topic="t.state",
                          keys_dir=tmp_path, commit_interval_ms=commit_interval_ms)


def detector() -> Detector:
    return Detector(ProvisionalRules(), Policy(PolicyConfig(default_mode=Mode.BLOCK)))


def record(offset: int, events: list[BehaviorEvent]) -> Record:
    return Record(offset, events[0].device_id.encode(), encode_batch(EventBatch.of(events)))


async def no_state(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
    return {p: {} for p in partitions}


Made = tuple[BatchWorker, FakeConsumer, FakeProducer]


def make(tmp_path: Path, steps: list[Step], *, restore: Any = no_state,
         partitions: frozenset[int] = frozenset({0}), committed: dict[int, int] | None = None,
         clock: Callable[[], int] | None = None, commit_interval_ms: int = 60_000) -> Made:
    producer = FakeProducer()
    consumer = FakeConsumer(steps, producer, set(partitions), committed)
    worker = BatchWorker(settings(tmp_path, commit_interval_ms), detector(), KEY, consumer=consumer,
                         producer=producer, restore=restore, clock_ms=clock or (lambda: NOW_MS),
                         offload_state=False)  # states sent within the step that wrote them
    consumer.worker = worker
    return worker, consumer, producer


def alerts(producer: FakeProducer) -> list[Alert]:
    return [decode(Alert, v) for v in producer.values("t.alerts")]


async def test_bad_records_go_to_the_dlq_with_coordinates_and_good_ones_still_alert(tmp_path: Path) -> None:
    phase1, phase2 = ransomware("dev-a", SHA)
    misrouted = Record(13, b"dev-b", record(0, phase1).value)  # keyed (partitioned) as another device
    batch = {3: [Record(10, b"dev-a", b"{not json"), Record(11, b"dev-a", None),
                 Record(12, b"dev-a", b'{"schema_version": "9.0", "events": []}'), misrouted,
                 record(14, phase1 + phase2)]}
    worker, consumer, producer = make(tmp_path, [batch], partitions=frozenset({3}))
    await worker.run()
    letters = [decode(DeadLetter, v) for v in producer.values("t.dlq")]
    assert [(d.source_topic, d.source_partition, d.source_offset) for d in letters] == [
        (EVENTS, 3, 10), (EVENTS, 3, 11), (EVENTS, 3, 12), (EVENTS, 3, 13)]
    assert [d.error_class for d in letters] == ["DecodeError", "DecodeError", "UnsupportedVersion",
                                                "DeviceMismatch"]
    assert letters[0].raw() == b"{not json" and letters[0].key_b64 is not None
    assert letters[3].device_id == "dev-a" and letters[3].field_path == "device_id"
    assert [a.detection_name for a in alerts(producer)] == ["Behavior:Win32/Impact.RenameUncommonExt!ml"]
    assert consumer.committed_offsets == {3: 15}
    assert worker.stats.dead_letters == 4 and worker.stats.records == 5


def poisoned_then_whole(tmp_path: Path) -> tuple[list[BehaviorEvent], Record, BatchWorker, Any, FakeProducer]:
    """A worker fed a ransomware tree's first phase (the record to poison), then the whole tree."""
    phase1, phase2 = ransomware("dev-a", SHA)
    poisoned = record(20, phase1)
    worker, consumer, producer = make(tmp_path, [{3: [poisoned, record(21, phase1 + phase2)]}],
                                      partitions=frozenset({3}))
    return phase1, poisoned, worker, consumer, producer


def only_the_poisoned_is_dead_lettered(poisoned: Record, error: str, consumer: Any, producer: FakeProducer,
                                       worker: BatchWorker) -> None:
    (letter,) = [decode(DeadLetter, v) for v in producer.values("t.dlq")]
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (EVENTS, 3, 20)
    assert letter.error_class == error and letter.raw() == poisoned.value
    assert [a.detection_name for a in alerts(producer)] == ["Behavior:Win32/Impact.RenameUncommonExt!ml"]
    assert consumer.committed_offsets == {3: 22} and worker.stats.dead_letters == 1


async def test_a_record_the_detector_fails_on_is_dead_lettered_and_the_next_ones_still_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phase1, poisoned, worker, consumer, producer = poisoned_then_whole(tmp_path)
    ingest = worker.detector.ingest

    def failing_once(events: Any, now_ms: int) -> Any:
        if events[0].seq == phase1[0].seq and not producer.values("t.dlq"):
            raise ZeroDivisionError("a bug in the core")
        return ingest(events, now_ms)

    monkeypatch.setattr(worker.detector, "ingest", failing_once)
    await worker.run()
    only_the_poisoned_is_dead_lettered(poisoned, "ZeroDivisionError", consumer, producer, worker)


async def test_a_record_the_decoder_fails_on_with_a_bug_is_dead_lettered_and_the_next_ones_still_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, poisoned, worker, consumer, producer = poisoned_then_whole(tmp_path)
    decode_events = worker_module.decode_events

    def failing_on_the_first(value: bytes) -> Any:
        if value is poisoned.value:
            raise IndexError("a bug in the decoder, not a refused record")
        return decode_events(value)

    monkeypatch.setattr(worker_module, "decode_events", failing_on_the_first)
    await worker.run()
    only_the_poisoned_is_dead_lettered(poisoned, "IndexError", consumer, producer, worker)


async def test_verdicts_and_commands_are_signed_and_acked_before_offsets_commit(tmp_path: Path) -> None:
    phase1, phase2 = ransomware("dev-a", SHA)
    worker, _, producer = make(tmp_path, [{0: [record(0, phase1 + phase2)]}])
    await worker.run()
    keyring = Keyring.of([KEY.trusted()])
    commands = [decode(Command, v) for v in producer.values("t.commands")]
    assert {c.action.value for c in commands} == {"kill_process_tree", "quarantine_file"}
    for command in commands:
        verify(command, keyring)
    verdict_records = [(k, v) for t, k, v, _ in producer.sent if t == "t.verdicts"]
    assert [k for k, _ in verdict_records] == [SHA.encode()]
    state = [(k, p) for t, k, v, p in producer.sent if t == "t.state"]
    assert state == [(b"dev-a", 0)]  # the device's tree, in the partition of its events
    assert producer.log[-1] == "commit [(0, 1)]"
    assert all(entry.startswith(("send", "poll")) for entry in producer.log[:-1])


async def test_a_failed_ack_stops_the_worker_without_committing(tmp_path: Path) -> None:
    phase1, _ = ransomware("dev-a", SHA)
    worker, consumer, producer = make(tmp_path, [{0: [record(0, phase1)]}])
    producer.fail = True
    with pytest.raises(OSError, match="broker gone"):
        await worker.run()
    assert consumer.committed_offsets == {}


@pytest.mark.parametrize("older_worker", [False, True])
async def test_a_partition_moved_to_another_worker_arrives_with_its_trees(
    tmp_path: Path, older_worker: bool
) -> None:
    phase1, phase2 = ransomware("dev-a", SHA)
    first, _, first_out = make(tmp_path, [{0: [record(0, phase1)]}])
    await first.run()
    assert [a.tactic.value for a in alerts(first_out)] == ["Execution"]
    saved: dict[bytes, bytes | None] = {k: v for t, k, v, _ in first_out.sent if t == "t.state" and k}
    if older_worker:  # its changelog holds the records uncompressed: read as they are
        saved = {k: unpack_state(v, 8 << 20) for k, v in saved.items() if v is not None}
        assert (saved[b"dev-a"] or b"").startswith(b"{")

    async def restore(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
        assert partitions == {0}
        return {0: saved}

    second, _, second_out = make(tmp_path, [{0: [record(1, phase2)]}], restore=restore, committed={0: 1})
    await second.run()
    (impact,) = alerts(second_out)
    assert impact.tactic.value == "Impact"
    assert impact.process_tree.root_process_key == "dev-a-word"  # rooted where the attack entered
    assert second.stats.states_restored == 1


async def test_without_its_state_the_same_events_alert_only_on_the_fragment(tmp_path: Path) -> None:
    _, phase2 = ransomware("dev-a", SHA)
    worker, _, producer = make(tmp_path, [{0: [record(1, phase2)]}])
    await worker.run()
    (impact,) = alerts(producer)
    assert impact.process_tree.root_process_key == "dev-a-upd"  # the counterfactual of the test above


async def test_a_partition_reassigned_to_the_same_worker_keeps_its_trees_unrestored(tmp_path: Path) -> None:
    phase1, phase2 = ransomware("dev-a", SHA)
    restores: list[set[int]] = []

    async def restore(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
        restores.append(partitions)
        return {p: {} for p in partitions}

    async def rebalance(consumer: Any) -> None:
        await consumer.listener.on_partitions_revoked({TopicPartition(EVENTS, 0)})
        await consumer.listener.on_partitions_assigned({TopicPartition(EVENTS, 0)})

    worker, _, producer = make(tmp_path, [{0: [record(0, phase1)]}, rebalance, {0: [record(1, phase2)]}],
                               restore=restore)
    await worker.run()
    assert restores == [{0}]  # at the first assignment only
    assert [a.process_tree.root_process_key for a in alerts(producer)] == ["dev-a-word", "dev-a-word"]


async def test_trees_are_dropped_and_restored_when_someone_else_committed_meanwhile(tmp_path: Path) -> None:
    phase1, _ = ransomware("dev-a", SHA)

    async def moved_away_and_back(consumer: Any) -> None:
        await consumer.listener.on_partitions_revoked({TopicPartition(EVENTS, 0)})
        consumer.committed_offsets[0] = 50  # another worker processed more of partition 0
        await consumer.listener.on_partitions_assigned({TopicPartition(EVENTS, 0)})

    worker, _, _ = make(tmp_path, [{0: [record(0, phase1)]}, moved_away_and_back])
    await worker.run()
    assert "dev-a" not in worker.detector.forests  # stale in-memory tree dropped (the changelog had none)


async def test_a_failed_restore_stops_the_worker_before_it_processes_anything(tmp_path: Path) -> None:
    phase1, _ = ransomware("dev-a", SHA)

    async def broken(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
        raise TimeoutError("state topic unreadable")

    worker, consumer, producer = make(tmp_path, [{0: [record(0, phase1)]}], restore=broken)
    with pytest.raises(PipelineError, match="state topic unreadable"):
        await worker.run()
    assert producer.sent == [] and consumer.committed_offsets == {}


async def test_an_unreadable_state_record_is_counted_and_the_device_starts_empty(tmp_path: Path) -> None:
    phase1, _ = ransomware("dev-a", SHA)

    async def corrupt(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
        return {0: {b"dev-a": b'{"v": 99}', b"dev-b": None}}

    worker, _, producer = make(tmp_path, [{0: [record(0, phase1)]}], restore=corrupt)
    await worker.run()
    assert worker.stats.states_unreadable == 1
    assert [a.tactic.value for a in alerts(producer)] == ["Execution"]


async def test_a_checkpoint_saves_trees_a_slice_at_a_time_and_commits_the_offsets_it_began_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One state per idle poll; dev-a changes mid-checkpoint; a crash after the commit loses no alert."""
    monkeypatch.setattr("pipeline.worker.STATE_SLICE_S", 0.0)
    monkeypatch.setattr("pipeline.worker.IDLE_SLICE_S", 0.0)
    (a1, a2), (b1, _), (c1, _) = (ransomware(d, SHA) for d in ("dev-a", "dev-b", "dev-c"))
    now = [NOW_MS]

    async def later(consumer: Any) -> None:
        now[0] += 5_000  # the commit interval has passed: the next step begins a checkpoint

    async def crash(consumer: Any) -> None:
        raise RuntimeError("kill -9")

    steps: list[Step] = [{0: [record(0, a1), record(1, b1)]}, later, {0: [record(2, c1)]},
                         {0: [record(3, a2)]}, *[{}] * 6, crash]  # {}: nothing fetched (idle)
    first, _, out = make(tmp_path, steps, clock=lambda: now[0], commit_interval_ms=1_000)
    with pytest.raises(RuntimeError, match="kill -9"):
        await first.run()
    assert [e for e in out.log if e.startswith("commit")] == ["commit [(0, 3)]"]  # taken before record 3
    saved = {k: v for t, k, v, _ in out.sent[: out.log.index("commit [(0, 3)]")] if t == "t.state"}
    assert set(saved) == {b"dev-a", b"dev-b", b"dev-c"}

    async def restore(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
        return {0: saved}

    second, _, again = make(tmp_path, [{0: [record(3, a2)]}], restore=restore, committed={0: 3})
    await second.run()
    tactics = {(a.device_id, a.tactic.value) for a in alerts(out) + alerts(again)}
    assert ("dev-a", "Impact") in tactics  # sent before the crash or replayed, never lost
    assert all(a.process_tree.root_process_key == "dev-a-word" for a in alerts(again))


async def test_events_keep_flowing_while_a_checkpoint_waits_for_its_acks(tmp_path: Path) -> None:
    (a1, _), (b1, _), (c1, _) = (ransomware(d, SHA) for d in ("dev-a", "dev-b", "dev-c"))
    now = [NOW_MS]

    async def later(consumer: Any) -> None:
        now[0] += 5_000

    async def acks_back(consumer: Any) -> None:
        consumer.producer.release()

    steps: list[Step] = [{0: [record(0, a1)]}, later, {0: [record(1, b1)]}, {}, {0: [record(2, c1)]},
                         acks_back, {0: []}]  # the idle poll writes the states
    worker, _, out = make(tmp_path, steps, clock=lambda: now[0], commit_interval_ms=1_000)
    out.hold = True
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)  # the final commit point waits for the acks it holds
    out.release()
    await task
    events = [e for e in out.log if e.startswith(("poll", "commit", "acks"))]
    assert events == ["poll [0]", "poll [1]", "poll []", "poll [2]", "acks back", "poll []",
                      "commit [(0, 2)]", "acks back", "commit [(0, 3)]"]


async def test_an_idle_consumer_gets_pending_trees_scored_before_the_next_poll(tmp_path: Path) -> None:
    # The clock stands still: the micro-batch timer never fires. Nothing else fetched yet (the empty
    # poll), so the ransomware tree is scored then, its verdict sent before more records arrive.
    phase1, phase2 = ransomware("dev-a", SHA)
    other, _ = ransomware("dev-b", "cd" * 32)
    worker, _, producer = make(tmp_path, [{0: [record(0, phase1 + phase2)]}, {}, {0: [record(1, other)]}])
    await worker.run()
    log = producer.log
    assert log.index("send t.verdicts") < log.index("poll [1]")
    assert log.index("send t.alerts") < log.index("poll [1]")


async def test_records_waiting_in_the_fetch_buffer_are_not_held_up_by_a_flush(tmp_path: Path) -> None:
    # Back-to-back batches (nothing idle in between): the trees wait for the micro-batch, scored
    # together; here that is the final commit point, after both polls.
    phase1, phase2 = ransomware("dev-a", SHA)
    other, _ = ransomware("dev-b", "cd" * 32)
    worker, _, producer = make(tmp_path, [{0: [record(0, phase1 + phase2)]}, {0: [record(1, other)]}])
    await worker.run()
    assert producer.log.index("poll [1]") < producer.log.index("send t.verdicts")
    assert worker.detector.stats.flushes == 1


async def test_state_goes_through_its_own_producer_and_its_acks_still_gate_the_commit(tmp_path: Path) -> None:
    # Decisions never queue behind state records (a producer sends one request at a time per broker),
    # but the offsets are committed only once the state producer's acks are back as well.
    phase1, phase2 = ransomware("dev-a", SHA)
    states, decisions = FakeProducer(hold=True), FakeProducer()
    consumer = FakeConsumer([{0: [record(0, phase1 + phase2)]}], decisions, {0})
    worker = BatchWorker(settings(tmp_path), detector(), KEY, consumer=consumer, producer=decisions,
                         restore=no_state, clock_ms=lambda: NOW_MS, state_producer=states)
    consumer.worker = worker
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)  # the final commit point waits for the state's ack
    assert {t for t, *_ in decisions.sent} == {"t.alerts", "t.commands", "t.verdicts"}
    assert [(t, k) for t, k, *_ in states.sent] == [("t.state", b"dev-a")]
    assert consumer.committed_offsets == {} and not task.done()
    states.release()
    await asyncio.wait_for(task, 5)
    assert consumer.committed_offsets == {0: 1}


@dataclass
class WiredProducer(FakeProducer):
    """Like aiokafka: a sent record reaches the wire two event-loop turns later (sender, request)."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, self.log.append, f"wire {topic}")
        return await super().send(topic, value, key, partition)


async def test_a_verdict_is_on_the_wire_before_the_next_record_is_processed(tmp_path: Path) -> None:
    phase1, phase2 = ransomware("dev-a", SHA)
    other, _ = ransomware("dev-b", "cd" * 32)
    producer = WiredProducer()
    now = [NOW_MS]

    def clock() -> int:  # 100 ms per reading: the micro-batch is due at the first record's flush
        producer.log.append("clock")
        now[0] += 100
        return now[0]

    consumer = FakeConsumer([{0: [record(0, phase1 + phase2), record(1, other)]}], producer, {0})
    worker = BatchWorker(settings(tmp_path), detector(), KEY, consumer=consumer, producer=producer,
                         restore=no_state, clock_ms=clock)
    consumer.worker = worker
    await worker.run()
    log = producer.log
    sent = log.index("send t.verdicts")
    assert log.index("wire t.verdicts") < log.index("clock", sent)


async def test_a_later_checkpoint_writes_what_a_whole_encoding_of_the_tree_would(tmp_path: Path) -> None:
    # The second state of dev-a reuses the rows of processes no later event touched (explorer), yet
    # it is byte for byte the record of the whole forest: a restore from it is the live tree.
    phase1, phase2 = ransomware("dev-a", SHA)
    now = [NOW_MS]

    async def later(consumer: Any) -> None:
        now[0] += 5_000

    steps: list[Step] = [{0: [record(0, phase1)]}, later, {0: []}, {0: [record(1, phase2)]}, later, {0: []}]
    worker, _, out = make(tmp_path, steps, clock=lambda: now[0], commit_interval_ms=1_000)
    await worker.run()
    states = [v for t, _, v, _ in out.sent if t == "t.state" and v is not None]
    forest = worker.detector.forests["dev-a"]
    assert len(states) == 2 and worker.states.rows_reused > 0
    expected = forest_to_bytes(forest, forest.watermark_ms - worker.detector.config.window_ms)
    assert unpack_state(states[-1], 8 << 20) == expected and states[-1] != expected  # compressed


# Never idle while busy: a checkpoint begun at busy[1] waits an interval for idle time, then writes
# after busy[2] (overdue). Cheap: the next begins an interval after that commit (busy[3]) and ends in
# the first idle poll; costly: 5 intervals later, or once quiet (then it ends when the worker stops).
@pytest.mark.parametrize(("share", "log"), [
    (1e9, ["commit [(0, 2)]", "quiet", "commit [(0, 4)]", "stopping"]),
    (1e-9, ["commit [(0, 2)]", "quiet", "stopping", "commit [(0, 4)]"]),
])
async def test_under_load_checkpoints_are_spaced_by_their_cost_and_a_quiet_worker_commits_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, share: float, log: list[str]
) -> None:
    monkeypatch.setattr("pipeline.checkpoints.STATE_CPU_SHARE", share)
    events = [e for d in ("dev-a", "dev-b", "dev-c", "dev-d") for e in ransomware(d, SHA)[0]]
    now = [NOW_MS]

    async def later(consumer: Any) -> None:
        now[0] += 1_100  # more than the 1 s commit interval between two polls

    def mark(entry: str) -> Step:
        async def step(consumer: Any) -> None:
            consumer.producer.log.append(entry)
        return step

    busy: list[Step] = [{0: [record(i, events[5 * i: 5 * i + 5])]} for i in range(4)]
    steps = [busy[0], later, busy[1], later, busy[2], later, busy[3], mark("quiet"), later, {}, {},
             mark("stopping")]  # nothing fetched for more than half the commit interval
    worker, consumer, out = make(tmp_path, steps, clock=lambda: now[0], commit_interval_ms=1_000)
    await worker.run()
    assert [e for e in out.log if e.startswith(("commit", "quiet", "stopping"))] == log
    assert consumer.committed_offsets == {0: 4}  # all of it, in both cases, before the worker stopped


@pytest.mark.parametrize("idle", [True, False])
async def test_a_checkpoint_waits_for_idle_time_to_write_states_unless_it_is_overdue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idle: bool
) -> None:
    monkeypatch.setattr("pipeline.worker.IDLE_SLICE_S", 10.0)  # both states in one slice, however slow
    # Records back to back: no state is written between them (a record would wait behind it) until
    # the worker finds nothing fetched, or, never idle, once the checkpoint has waited an interval.
    (a1, _), (b1, _), (c1, _), (d1, _) = (ransomware(d, SHA) for d in ("dev-a", "dev-b", "dev-c", "dev-d"))
    now = [NOW_MS]

    def after(ms: int, entry: str) -> Step:
        async def step(consumer: Any) -> None:
            now[0] += ms
            consumer.producer.log.append(entry)
        return step

    gap: Step = {} if idle else after(1_000, "overdue")
    steps: list[Step] = [{0: [record(0, a1)]}, after(5_000, "due"), {0: [record(1, b1)]},
                         {0: [record(2, c1)]}, gap, {0: [record(3, d1)]}]
    worker, consumer, out = make(tmp_path, steps, clock=lambda: now[0], commit_interval_ms=1_000)
    await worker.run()
    log = [e for e in out.log if not e.startswith(("send t.alerts", "send t.commands", "send t.verdicts"))]
    begun = log.index("poll [1]")  # the checkpoint begins after this batch: dev-a and dev-b to save
    # idle: the poll that found nothing writes the slice, then waits briefly for records (record 3)
    written = (["poll []", "send t.state", "send t.state", "poll [3]"] if idle
               else ["overdue", "poll [3]", "send t.state", "send t.state"])
    assert log[begun: begun + 2 + len(written)] == ["poll [1]", "poll [2]", *written]
    assert log[begun + 2 + len(written)].startswith("commit [(0, 2)]")  # the offsets it began with
    assert consumer.committed_offsets == {0: 4}


async def test_after_a_state_slice_in_idle_time_the_poll_waits_briefly_for_the_fetcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.worker.IDLE_SLICE_S", 10.0)  # both states in one slice, however slow
    # A slice runs on the loop's thread, so records fetched meanwhile are handed over only when the
    # loop is free: the poll after a slice waits IDLE_WAIT_MS (slices back to back starved the
    # fetcher for 340 ms in the benchmark), and an idle poll without a slice waits a micro-batch.
    (a1, _), (b1, _) = (ransomware(d, SHA) for d in ("dev-a", "dev-b"))
    now = [NOW_MS]

    async def later(consumer: Any) -> None:
        now[0] += 5_000

    steps: list[Step] = [{0: [record(0, a1)]}, later, {0: [record(1, b1)]}, {}, {}, {}, {}]
    worker, consumer, out = make(tmp_path, steps, clock=lambda: now[0], commit_interval_ms=1_000)
    getmany = consumer.getmany

    async def logged(timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        out.log.append(f"wait {timeout_ms}")
        return await getmany(timeout_ms, max_records)

    consumer.getmany = logged  # type: ignore[method-assign]
    await worker.run()
    log = [e for e in out.log if e.startswith(("wait", "send t.state", "commit"))]
    first = log.index("send t.state")
    assert log[first - 1: first + 3] == ["wait 0", "send t.state", "send t.state", f"wait {IDLE_WAIT_MS}"]
    assert "wait 10" in log[first + 3:]  # the checkpoint done, an idle poll waits a micro-batch again


def spooled(device: str) -> list[BehaviorEvent]:
    """An agent's spool sent after it was offline: a ransomware tree, and 30 minutes later a service start."""
    phase1, phase2 = ransomware(device, SHA)
    last = phase2[-1]
    svchost = ProcessStart(image=r"C:\Windows\System32\svchost.exe", command_line="svchost.exe -k netsvcs")
    late = EventKit(device).event(f"{device}-svc", svchost, at_ms=ts_ms(last) + 30 * 60_000)
    return [*phase1, *phase2, late.model_copy(update={"seq": last.seq + 1, "event_id": f"{device}-late"})]


async def test_a_record_spanning_half_an_hour_is_scored_as_it_happened(tmp_path: Path) -> None:
    """Taken whole, every process of a spooled record would be scored at its last event, the attack's
    behaviour out of the 5-minute window; taken one pass at a time it alerts as if sent live."""
    worker, consumer, producer = make(tmp_path, [{0: [record(0, spooled("dev-a"))]}])
    await worker.run()
    assert [a.detection_name for a in alerts(producer)] == ["Behavior:Win32/Impact.RenameUncommonExt!ml"]
    assert worker.stats.spread_records == 1 and consumer.committed_offsets == {0: 1}


async def test_a_record_within_a_second_is_taken_whole(tmp_path: Path) -> None:
    phase1, phase2 = ransomware("dev-a", SHA)
    worker, _, producer = make(tmp_path, [{0: [record(0, [*phase1, *phase2])]}])
    await worker.run()
    assert len(alerts(producer)) == 1 and worker.stats.spread_records == 0


async def test_a_spooled_record_failing_in_its_last_pass_is_dead_lettered_after_its_earlier_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its earlier passes' flush marked the roots alerted (another device's pending ones too): their
    decisions are emitted before the record goes to the DLQ, else they would never be made again."""
    phase1, phase2 = ransomware("dev-b", SHA)
    events = spooled("dev-a")
    worker, _, producer = make(tmp_path, [{0: [record(0, [*phase1, *phase2]), record(1, events)]}])
    ingest = worker.detector.ingest

    def failing_last_pass(batch: Any, now_ms: int) -> Any:
        if batch[-1].event_id == "dev-a-late":
            raise ZeroDivisionError("a bug in the core")
        return ingest(batch, now_ms)

    monkeypatch.setattr(worker.detector, "ingest", failing_last_pass)
    await worker.run()
    assert sorted(a.device_id for a in alerts(producer)) == ["dev-a", "dev-b"]
    (letter,) = [decode(DeadLetter, v) for v in producer.values("t.dlq")]
    assert letter.source_offset == 1 and letter.error_class == "ZeroDivisionError"


class TimedConsumer(FakeConsumer):
    """Notes each getmany's timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts: list[int] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        self.timeouts.append(timeout_ms)
        return await super().getmany(timeout_ms, max_records)


async def test_a_worker_asked_to_stop_does_not_wait_out_an_empty_fetch(tmp_path: Path) -> None:
    # The stop comes while the worker polls and nothing is fetched (SIGTERM on an idle worker): it
    # goes straight to its last commit point, which still scores the tree and commits its offsets.
    phase1, phase2 = ransomware("dev-a", SHA)
    producer = FakeProducer()
    consumer = TimedConsumer([{0: [record(0, phase1 + phase2)]}], producer, {0})
    worker = BatchWorker(settings(tmp_path), detector(), KEY, consumer=consumer, producer=producer,
                         restore=no_state, clock_ms=lambda: NOW_MS)
    consumer.worker = worker
    await asyncio.wait_for(worker.run(), 5)
    assert consumer.timeouts == [0, 0]  # the records, then the empty poll that asked it to stop
    assert {t for t, *_ in producer.sent} >= {"t.alerts", "t.commands", "t.verdicts", "t.state"}
    assert consumer.committed_offsets == {0: 1}
