"""A flush scored on a second thread while the worker goes on (`Forest.predict_start`,
`Scorer.start`, `Detector.start_flush`, the worker's decode-ahead) decides exactly what the
synchronous flush decides.

What a user would notice if this broke: a probability one bit off (the alert's score and the
verdict differ from `ringfence hunt`'s), a decision made on a tree changed after its rows were
taken, a record decoded twice or out of order, or a worker that crashes (a C thread reading freed
memory) instead of refusing a misuse with a clear error. The C cases run once more in a child
interpreter with the debug allocator (freed memory poisoned), so a use after free is a reported
failure.
"""

from __future__ import annotations

import gc
import os
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from debug_child import passes_under_debug_allocator
from hypothesis import given, settings
from hypothesis import strategies as st
from test_worker_loop import FakeConsumer, FakeProducer, Record, alerts, no_state, record
from test_worker_loop import settings as worker_settings
from worker_support import benign, ransomware

from pipeline import flush_overlap
from pipeline import worker as worker_module
from pipeline.detect import Detector, DetectorConfig
from pipeline.errors import PipelineError
from pipeline.eventkit import EventKit
from pipeline.features import FEATURE_NAMES
from pipeline.flush_overlap import FlushOverlap
from pipeline.model.provisional import ProvisionalRules
from pipeline.policy import Policy, PolicyConfig
from pipeline.scoring import CLASSES, Matrix, Scorer, load_model
from pipeline.worker import BatchWorker
from schemas.alerts import Alert
from schemas.codec import decode
from schemas.common import Mode
from schemas.deadletter import DeadLetter
from schemas.signing import SigningKey

_ctrees = pytest.importorskip("pipeline._ctrees", reason="pipeline._ctrees is not built (setup.py)")
CHILD = "RINGFENCE_OVERLAP_CHILD"
KEY = SigningKey.generate()
WIDTH = len(FEATURE_NAMES)
NOW = 1_780_000_000_000  # a wall clock decisions accept (2026)


@pytest.fixture(scope="module")
def model() -> Any:
    """The committed trained model's full booster (the one most rows go to), scored by the C trees."""
    loaded = committed_booster()
    assert getattr(loaded, "native", None) is not None, "the trained model is not scored by the C trees"
    return loaded


def committed_booster() -> Any:
    """The committed model's full booster (a two-view model's `full`, `pipeline.model.routed`)."""
    loaded = load_model()
    return getattr(loaded, "full", loaded)


def rows_like_the_detector(count: int, seed: int = 0) -> Matrix:
    """Sparse small counts, as feature rows are, with a few NaN and infinities."""
    rng = np.random.default_rng(seed)
    matrix = np.where(rng.random((count, WIDTH)) < 0.15, rng.integers(0, 6, (count, WIDTH)), 0)
    matrix = matrix.astype(np.float32)
    if count:
        matrix[0, 1], matrix[-1, 2], matrix[count // 2, 3] = np.nan, np.inf, -np.inf
    return matrix


def predicted(native: Any, matrix: Matrix) -> Matrix:
    out = np.empty((len(matrix), len(CLASSES)), np.float32)
    native.predict(matrix, out)
    return out


# --- the C trees' Scoring -----------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 64, 333])
def test_a_started_predict_gives_the_same_bits_as_predict_with_every_kernel(model: Any, count: int) -> None:
    matrix = rows_like_the_detector(count, seed=count)
    for kernel in _ctrees.kernels():
        previous = _ctrees.use_kernel(kernel)
        try:
            expected = predicted(model.native, matrix)
            scoring = model.native.predict_start(matrix)
            out = np.empty_like(expected)
            scoring.wait(out)
        finally:
            _ctrees.use_kernel(previous)
        assert out.tobytes() == expected.tobytes(), kernel
        assert scoring.done()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 80), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_whatever_the_caller_does_meanwhile_the_bits_are_predicts(
    model: Any, count: int, seed: int, busy: int
) -> None:
    """The caller may wait at once or after a while (the thread then has scored some or all of the
    rows, the caller the rest): the same bits."""
    matrix = rows_like_the_detector(count, seed)
    expected = predicted(model.native, matrix)
    scoring = model.native.predict_start(matrix)
    for _ in range(busy * 200):
        if scoring.done():
            break
    out = np.empty_like(expected)
    scoring.wait(out)
    assert out.tobytes() == expected.tobytes()


def test_the_matrix_is_copied_so_changing_it_afterwards_changes_nothing(model: Any) -> None:
    matrix = rows_like_the_detector(200, seed=3)
    expected = predicted(model.native, matrix)
    scoring = model.native.predict_start(matrix)
    matrix[:] = 99.0
    del matrix
    gc.collect()
    out = np.empty_like(expected)
    scoring.wait(out)
    assert out.tobytes() == expected.tobytes()


def test_a_scoring_keeps_its_forest_alive_and_is_collected_once() -> None:
    model: Any = committed_booster()
    matrix = rows_like_the_detector(50, seed=4)
    expected = predicted(model.native, matrix)
    scoring = model.native.predict_start(matrix)
    del model  # the Forest goes with its model, unless the scoring holds it
    gc.collect()
    out = np.empty_like(expected)
    with pytest.raises(ValueError, match="rows x"):
        scoring.wait(np.empty((49, len(CLASSES)), np.float32))  # refused: nothing consumed
    assert scoring.rows == 50
    scoring.wait(out)
    assert out.tobytes() == expected.tobytes()
    assert scoring.done() and scoring.rows is None
    with pytest.raises(RuntimeError, match="already collected"):
        scoring.wait(out)


def test_scorings_dropped_without_wait_end_cleanly(model: Any) -> None:
    """A flush abandoned mid-way (an exception in the caller) must not leave a thread reading freed
    memory: the dealloc stops further claims and waits for the rows being scored."""
    matrix = rows_like_the_detector(300, seed=5)
    for _ in range(50):
        model.native.predict_start(matrix)  # dropped at once, the thread maybe not started yet
    started = [model.native.predict_start(matrix) for _ in range(8)]  # several at once: no shared state
    outs = [np.empty((300, len(CLASSES)), np.float32) for _ in started]
    for scoring, out in zip(started, outs, strict=True):
        scoring.wait(out)
    expected = predicted(model.native, matrix)
    assert all(out.tobytes() == expected.tobytes() for out in outs)


def test_a_child_forked_while_a_thread_scores_drops_its_model_and_exits() -> None:
    """The child inherits the Forest's count of reading threads but not the thread: dropping the
    model there must not wait forever (it leaves the Forest allocated after a second)."""
    model: Any = committed_booster()
    matrix = rows_like_the_detector(400, seed=8)
    scoring = model.native.predict_start(matrix)
    pid = os.fork()
    if pid == 0:  # the child: drop everything, exit with a code the parent checks
        del scoring, model
        gc.collect()
        os._exit(7)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 7
    out = np.empty((400, len(CLASSES)), np.float32)
    scoring.wait(out)
    assert out.tobytes() == predicted(model.native, matrix).tobytes()


@pytest.mark.parametrize(
    ("matrix", "error", "message"),
    [
        (np.zeros((2, WIDTH)), TypeError, "format 'f'"),
        (np.zeros((2, WIDTH + 1), np.float32), ValueError, "features"),
        (np.zeros((2, 2 * WIDTH), np.float32)[:, ::2], ValueError, "contiguous"),
        ([[0.0] * WIDTH], TypeError, "bytes-like"),
    ],
)
def test_a_started_predict_refuses_odd_matrices_with_a_clear_error(
    model: Any, matrix: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises((error, BufferError), match=message):
        model.native.predict_start(matrix)


def test_an_uninitialised_forest_refuses_to_start() -> None:
    forest = _ctrees.Forest.__new__(_ctrees.Forest)
    with pytest.raises(RuntimeError, match="not initialised"):
        forest.predict_start(np.zeros((1, WIDTH), np.float32))


# --- Scorer and Detector --------------------------------------------------------------------------


def test_a_started_score_is_the_synchronous_score(model: Any) -> None:
    matrix = rows_like_the_detector(120, seed=6)
    scorer = Scorer(model)
    job = scorer.start(matrix)
    started, plain = job.result(), Scorer(model).score(matrix)
    assert job.done() and job.result() is started
    for name in ("probabilities", "malicious", "flagged", "best", "named"):
        assert getattr(started, name).tobytes() == getattr(plain, name).tobytes(), name
    assert scorer.stats.predict_calls == 1 and scorer.stats.rows_scored == 120


def test_models_without_a_c_predict_are_scored_at_once() -> None:
    rules = ProvisionalRules()
    matrix = rows_like_the_detector(10, seed=7)
    job = Scorer(rules).start(matrix)
    assert job.done()
    assert job.result().probabilities.tobytes() == Scorer(rules).score(matrix).probabilities.tobytes()


def test_a_scorer_that_times_score_keeps_timing_it(model: Any) -> None:
    """A subclass overriding `score` (the worker's telemetry) is called: no predict escapes it."""
    timed: list[int] = []

    class Timed(Scorer):
        def score(self, matrix: Matrix) -> Any:
            timed.append(len(matrix))
            return super().score(matrix)

    job = Timed(model).start(rows_like_the_detector(7))
    assert job.done() and timed == [7]


def detector(model: Any) -> Detector:
    return Detector(model, Policy(PolicyConfig(default_mode=Mode.BLOCK)))


def test_a_started_flush_decides_what_flush_decides(model: Any) -> None:
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    plain, started = detector(model), detector(model)
    for d in (plain, started):
        d.ingest(phase1 + phase2, NOW + 1_000)
    expected = plain.flush(NOW + 2_000)
    pending = started.start_flush(NOW + 2_000)
    assert pending is not None
    decisions = started.finish_flush(pending)
    assert expected and [d.model_dump_json() for d in decisions] == [d.model_dump_json() for d in expected]
    assert started.stats == plain.stats
    assert started.start_flush(NOW + 3_000) is None  # nothing pending


def test_while_a_flush_is_pending_the_trees_cannot_change(model: Any) -> None:
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    d, plain = detector(model), detector(model)
    d.ingest(phase1, NOW + 1_000)
    plain.ingest(phase1, NOW + 1_000)
    pending = d.start_flush(NOW + 2_000)
    assert pending is not None
    later = NOW + 2_000
    for call in (lambda: d.ingest(phase2, later), lambda: d.flush(later), lambda: d.start_flush(later),
                 lambda: d.device_state("dev-a"), lambda: d.drop_device("dev-a"),
                 lambda: d.restore_device(b"")):
        with pytest.raises(PipelineError, match="pending"):
            call()
    first = d.finish_flush(pending)
    with pytest.raises(PipelineError, match="finished already"):
        d.finish_flush(pending)
    d.ingest(phase2, NOW + 2_000)  # usable again, and nothing refused above reached the trees
    plain_first = plain.flush(NOW + 2_000)
    plain.ingest(phase2, NOW + 2_000)
    dumped = [[x.model_dump_json() for x in out] for out in (first, d.flush(NOW + 3_000))]
    assert dumped == [[x.model_dump_json() for x in out] for out in (plain_first, plain.flush(NOW + 3_000))]
    assert any(dumped)


def late_ransomware(device_id: str, sha256: str) -> list[Any]:
    """The attack, every process of it ended, then 11 minutes later one more event of the device: a
    record that makes the device's TTL eviction due, which must wait until the attack is scored."""
    phase1, phase2 = ransomware(device_id, sha256, renames=4)
    kit = EventKit(device_id, start=phase2[-1].ts + timedelta(milliseconds=10))
    kit.seq = phase2[-1].seq
    ends = [kit.end(f"{device_id}-{name}") for name in ("vss", "upd", "ps", "word")]
    kit.advance(11 * 60 * 1000)
    return [*phase1, *phase2, *ends, kit.write(f"{device_id}-explorer", r"C:\Users\bob\notes.txt")]


def device_records(seed: int) -> list[list[Any]]:
    """Records of seven devices interleaved at random, each device's in its order: attacks in small
    records, a quiet device, and one device whose explorer comes first alone (its eviction due with
    nothing to score: a flush must hold it) and then, in one record, an attack that ended 11 minutes
    before its last event."""
    rng = random.Random(seed)
    streams: list[list[list[Any]]] = []
    for n in range(5):
        phase1, phase2 = ransomware(f"dev-{n}", f"{n:02x}" * 32, renames=6)
        events = [*phase1, *phase2]
        cuts = sorted(rng.sample(range(1, len(events)), 4))
        streams.append([events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)])
    streams.append([benign("dev-q", 3), benign("dev-q", 2)[1:]])
    late = late_ransomware("dev-late", "ef" * 32)
    streams.append([late[:1], late[1:]])  # explorer alone: no row to score, but the device's eviction due
    out: list[list[Any]] = []
    while any(streams):
        stream = rng.choice([s for s in streams if s])
        out.append(stream.pop(0))
    return out


def run_schedule(model: Any, records: list[list[Any]], seed: int,
                 taken: list[int] | None = None) -> tuple[list[str], Detector, list[int]]:
    """Each record in turn, a flush whenever one is due. Without `taken`, each flush is started, the next
    records (up to a random few) are ingested while it is pending as long as it does not hold their
    device, then it is finished. With `taken` (what such a run ingested while each flush was pending),
    the same flushes are made at once, in the same places, and those records ingested after. Returns
    the decisions as JSON, the detector, and how many records each flush had ingested while pending."""
    rng, overlapped = random.Random(seed), taken is None
    d = Detector(model, Policy(PolicyConfig(default_mode=Mode.BLOCK)),
                 DetectorConfig(max_rows=4, max_delay_ms=10_000))
    decided: list[str] = []
    counts: list[int] = []
    now, i = NOW, 0
    while i < len(records):
        now += 5
        d.ingest(records[i], now)
        i += 1
        if not d.due(now):
            continue
        pending = d.start_flush(now) if overlapped else None
        flushed = [] if overlapped else d.flush(now)
        budget = rng.randint(1, 6) if taken is None else taken[len(counts)]
        count = 0
        while count < budget and i < len(records) and (pending is None or pending.clear(records[i])):
            now += 5
            d.ingest(records[i], now)
            i, count = i + 1, count + 1
        counts.append(count)
        if pending is not None:
            if i < len(records) and not pending.clear(records[i]):
                with pytest.raises(PipelineError, match="holds"):
                    d.ingest(records[i], now)
            flushed = d.finish_flush(pending)
        decided += [x.model_dump_json() for x in flushed]
    decided += [x.model_dump_json() for x in d.flush(now + 1)]
    return decided, d, counts


@pytest.mark.parametrize("seed", range(8))
def test_other_devices_ingested_while_a_flush_is_pending_change_nothing_it_decides(
    model: Any, seed: int
) -> None:
    """The worker takes the next records of devices a pending flush does not hold: the decisions, in
    order, and every device's state are those of flushing at once and ingesting them after. A device
    whose eviction came due before the flush is held too; one that came due while it was pending is
    evicted only once its changes are scored (else dev-late's attack would never alert)."""
    records = device_records(seed)
    over, over_d, taken = run_schedule(model, records, seed)
    plain, plain_d, _ = run_schedule(model, records, seed, taken)
    assert over == plain and sum(taken) > 0
    assert over_d.stats == plain_d.stats and plain_d.stats.flushes >= 3
    devices = sorted(plain_d.forests)
    assert [over_d.device_state(x) for x in devices] == [plain_d.device_state(x) for x in devices]
    alerted = {orjson.loads(x)["device_id"] for x in plain if '"process_tree"' in x}
    assert {"dev-0", "dev-1", "dev-2", "dev-3", "dev-4", "dev-late"} <= alerted and "dev-q" not in alerted


def test_a_flush_holds_the_devices_whose_eviction_it_owes(model: Any) -> None:
    """A device whose eviction came due before the flush (here with no row to score: explorer alone)
    is held like the rows' devices: its attack, ended 11 minutes before its last event, is refused
    while the flush is pending, then taken and alerted, scored before that eviction drops it."""
    late = late_ransomware("dev-late", "ef" * 32)
    d = detector(model)
    d.ingest(late[:1], NOW)
    d.ingest(ransomware("dev-a", "ab" * 32)[0], NOW)
    pending = d.start_flush(NOW + 10)
    assert pending is not None and pending.held == {"dev-late", "dev-a"}
    assert {forest.device_id for forest, _ in pending.rows} == {"dev-a"}
    assert not pending.clear(late[1:]) and pending.clear(benign("dev-new", 1))
    with pytest.raises(PipelineError, match="holds"):
        d.ingest(late[1:], NOW + 20)
    d.ingest(benign("dev-new", 3), NOW + 20)  # not held: taken now, scored by the next flush
    with pytest.raises(PipelineError, match="holds"):
        d.ingest([*benign("dev-new", 1), *benign("dev-a", 1)], NOW + 20)  # one held event refuses all
    d.finish_flush(pending)
    assert d.pending is None and d.due(NOW + 10_000)  # dev-new's changes wait for the next flush
    d.ingest(late[1:], NOW + 30)
    decided = d.flush(NOW + 40)
    assert "dev-late" in {x.device_id for x in decided if isinstance(x, Alert)}


def test_a_flush_that_fails_to_decide_still_owes_its_evictions(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while deciding a pending flush leaves the TTL evictions it took with it owed, as a synchronous
    flush that raised leaves them: the next flush evicts dev-late's attack, ended 11 minutes ago."""
    late = late_ransomware("dev-late", "ef" * 32)
    d = detector(model)
    d.ingest(late, NOW)
    pending = d.start_flush(NOW + 10)
    assert pending is not None and "dev-late" in pending.evict

    def failing(*args: Any) -> list[Any]:
        raise ZeroDivisionError("a bug in the core")

    monkeypatch.setattr(Detector, "_decide", failing)
    with pytest.raises(ZeroDivisionError):
        d.finish_flush(pending)
    assert d.pending is None and "dev-late-ps" in d.forests["dev-late"].nodes
    monkeypatch.undo()
    d.flush(NOW + 20)
    assert "dev-late-ps" not in d.forests["dev-late"].nodes  # evicted once owed again


# --- the worker's decode-ahead --------------------------------------------------------------------


class SlowPredict:
    """A `RunningPredict` that reports done only after `polls` calls to done()."""

    def __init__(self, probabilities: Matrix, polls: int) -> None:
        self.probabilities, self.polls = probabilities, polls

    def done(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def wait(self) -> Matrix:
        return self.probabilities


class SlowRules(ProvisionalRules):
    """The provisional scorer, its predict "running" while the worker calls done() `polls` times."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls, self.started = polls, 0

    def predict_start(self, matrix: Matrix) -> SlowPredict:
        self.started += 1
        return SlowPredict(self.predict_proba(matrix), self.polls)


async def run_worker(tmp_path: Path, batches: list[dict[int, list[Record]]], model: Any,
                     clock: Any) -> tuple[BatchWorker, FakeProducer]:
    producer = FakeProducer()
    consumer = FakeConsumer(list(batches), producer, {0})
    worker = BatchWorker(worker_settings(tmp_path), detector(model), KEY, consumer=consumer,
                         producer=producer, restore=no_state, clock_ms=clock, offload_state=False)
    consumer.worker = worker
    await worker.run()
    return worker, producer


def stepping_clock(step_ms: int) -> Any:
    now = [NOW]

    def clock() -> int:
        now[0] += step_ms
        return now[0]

    return clock


def log_flushes(monkeypatch: pytest.MonkeyPatch, log: list[str], *, ingests: bool = True) -> None:
    """`Detector.start_flush` and `finish_flush` (and, with `ingests`, `ingest`: its device, and "pending"
    while a flush is) append what they do to `log`."""
    ingest, start, finish = Detector.ingest, Detector.start_flush, Detector.finish_flush

    def ingested(self: Detector, events: Any, now_ms: int) -> None:
        log.append(f"ingest {events[0].device_id}{' pending' if self.pending is not None else ''}")
        ingest(self, events, now_ms)

    def started(self: Detector, now_ms: int) -> Any:
        log.append("start")
        return start(self, now_ms)

    def finished(self: Detector, pending: Any) -> Any:
        log.append("finish")
        return finish(self, pending)

    if ingests:
        monkeypatch.setattr(Detector, "ingest", ingested)
    monkeypatch.setattr(Detector, "start_flush", started)
    monkeypatch.setattr(Detector, "finish_flush", finished)


async def test_the_worker_decodes_ahead_while_scoring_and_decides_as_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush due mid-poll: the next records are decoded while its predict "runs", each once, the
    bad one still dead-lettered at its turn, and the outputs are the synchronous worker's."""
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    other1, other2 = ransomware("dev-b", "cd" * 32)
    bad = Record(3, b"dev-c", b"{not json")
    batch = {0: [record(0, phase1), record(1, phase2), record(2, other1), bad, record(4, other2)]}
    log: list[str] = []
    events_of = worker_module._events_of

    def decode(rec: Any) -> Any:
        log.append(f"decode {rec.offset}")
        return events_of(rec)

    monkeypatch.setattr(worker_module, "_events_of", decode)
    monkeypatch.setattr(flush_overlap, "PREDICT_S_PER_ROW", 1.0)  # a loaded test machine: time enough
    log_flushes(monkeypatch, log, ingests=False)
    slow = SlowRules(polls=10)
    worker, producer = await run_worker(tmp_path, [batch], slow, stepping_clock(30))
    decodes = [entry for entry in log if entry.startswith("decode")]
    assert sorted(decodes) == [f"decode {o}" for o in range(5)]  # each record once
    first = log.index("start")
    assert log[first + 1].startswith("decode") and "finish" in log[first + 2:]  # decoded while scoring
    log.clear()
    _, plain = await run_worker(tmp_path, [batch], ProvisionalRules(), stepping_clock(30))
    assert sorted(e for e in log if e.startswith("decode")) == decodes  # a model without a C predict:
    assert log[log.index("start") + 1] == "finish"  # scored at once, nothing decoded ahead
    def outputs(sent: list[tuple[str, bytes | None, bytes | None, int | None]]) -> list[Any]:
        return [(t, k, v if t != "t.dlq" else None) for t, k, v, _ in sent]  # a dead letter has a wall time

    assert outputs(producer.sent) == outputs(plain.sent)
    assert [t for t, *_ in producer.sent].count("t.dlq") == 1
    assert {a.device_id for a in alerts(producer)} == {"dev-a", "dev-b"}
    assert worker.stats.dead_letters == 1 and worker.stats.records == 5


async def test_the_worker_takes_other_devices_records_while_scoring_and_decides_as_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a flush due mid-poll is scored, the next records of devices it does not hold are taken
    into the trees (not only decoded); the first of a device it holds stops that, and from there
    records are only decoded. Every output is the synchronous worker's, in the same order, and every
    record is taken once, in order, its offset committed."""
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    b1, b2 = ransomware("dev-b", "cd" * 32)
    c1, c2 = ransomware("dev-c", "ef" * 32)
    a = [phase1, phase2[:8], phase2[8:16], phase2[16:]]
    batch = {0: [record(0, a[0]), record(1, a[1]), record(2, a[2]), record(3, b1), record(4, c1),
                 record(5, a[3]), record(6, b2), record(7, c2)]}
    log: list[str] = []
    monkeypatch.setattr(flush_overlap, "PREDICT_S_PER_ROW", 1.0)  # a slow child: never out of time
    log_flushes(monkeypatch, log)
    worker, producer = await run_worker(tmp_path, [batch], SlowRules(polls=50), stepping_clock(30))
    first = log.index("start")  # due after record 2 (the detector's 50 ms): it holds dev-a
    assert log[first:first + 4] == ["start", "ingest dev-b pending", "ingest dev-c pending", "finish"]
    assert log[first + 4] == "ingest dev-a"  # held by the flush: taken after it, in its turn
    assert [e.split()[1] for e in log if e.startswith("ingest")] == ["dev-a", "dev-a", "dev-a", "dev-b",
                                                                    "dev-c", "dev-a", "dev-b", "dev-c"]
    taken = worker.stats.records
    log.clear()
    _, plain = await run_worker(tmp_path, [batch], ProvisionalRules(), stepping_clock(30))
    assert "ingest dev-b pending" not in log  # no C predict: scored at once
    assert [(t, k, v) for t, k, v, _ in producer.sent] == [(t, k, v) for t, k, v, _ in plain.sent]
    assert {a.device_id for a in alerts(producer)} == {"dev-a", "dev-b", "dev-c"}
    assert taken == 8 and worker._positions == {0: 8}


async def test_a_micro_batch_due_after_a_record_taken_ahead_is_flushed_next_as_in_its_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking stops at a record after which a micro-batch is due (as the synchronous worker would flush
    there), and that flush comes next, before any later record: the flushes fall where they fall
    without the overlap, so every output is the same."""
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    others = [ransomware(f"dev-{name}", f"{n:02x}" * 32)[0] for n, name in enumerate("bcde")]
    batch = {0: [record(0, phase1), record(1, phase2[:8]), record(2, phase2[8:]),
                 *(record(3 + n, events) for n, events in enumerate(others))]}
    log: list[str] = []
    monkeypatch.setattr(flush_overlap, "PREDICT_S_PER_ROW", 1.0)  # a slow child: never out of time
    log_flushes(monkeypatch, log)
    _, producer = await run_worker(tmp_path, [batch], SlowRules(polls=50), stepping_clock(30))
    first = log.index("start")  # after record 2; then dev-b at +30, dev-c at +60, dev-d at +90 ms
    assert log[first:first + 6] == ["start", "ingest dev-b pending", "ingest dev-c pending",
                                    "ingest dev-d pending", "finish", "start"]  # dev-b's 50 ms were up
    log.clear()
    _, plain = await run_worker(tmp_path, [batch], ProvisionalRules(), stepping_clock(30))
    assert [(t, k, v) for t, k, v, _ in producer.sent] == [(t, k, v) for t, k, v, _ in plain.sent]


async def test_a_record_taken_while_scoring_that_fails_is_dead_lettered_after_the_flush_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the core on a record taken while a flush is pending: the flush still decides, its
    decisions go out first, then that record's dead letter, and nothing after it is taken ahead."""
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    b1, _ = ransomware("dev-b", "cd" * 32)
    c1, _ = ransomware("dev-c", "ef" * 32)
    batch = {0: [record(0, phase1), record(1, phase2[:8]), record(2, phase2[8:]), record(3, b1),
                 record(4, c1)]}
    ingest = Detector.ingest
    log: list[str] = []

    def failing(self: Detector, events: Any, now_ms: int) -> None:
        if events[0].device_id == "dev-b":
            raise ZeroDivisionError("a bug in the core")
        log.append(f"ingest {events[0].device_id}{' pending' if self.pending is not None else ''}")
        ingest(self, events, now_ms)

    monkeypatch.setattr(flush_overlap, "PREDICT_S_PER_ROW", 1.0)  # a slow child: never out of time
    monkeypatch.setattr(Detector, "ingest", failing)
    worker, producer = await run_worker(tmp_path, [batch], SlowRules(polls=50), stepping_clock(30))
    topics = [t for t, *_ in producer.sent if t != "t.state"]
    letters = [decode(DeadLetter, v) for v in producer.values("t.dlq")]
    assert [(d.source_offset, d.error_class) for d in letters] == [(3, "ZeroDivisionError")]
    assert topics.index("t.dlq") > topics.index("t.alerts")  # dev-a's alert first, as without the overlap
    assert "ingest dev-c pending" not in log and "ingest dev-c" in log  # taken in its turn
    assert worker.stats.records == 5 and worker._positions == {0: 5}


async def test_a_flush_that_fails_dead_letters_the_record_that_made_it_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    failed: list[int] = []

    def failing(self: Detector, pending: Any) -> Any:
        failed.append(len(pending.rows))
        self._pending = None
        raise ZeroDivisionError("a bug in the core")

    monkeypatch.setattr(Detector, "finish_flush", failing)
    batch = {0: [record(0, phase1), record(1, phase2), record(2, phase2[:1])]}
    worker, producer = await run_worker(tmp_path, [batch], SlowRules(polls=3), stepping_clock(30))
    letters = [decode(DeadLetter, v) for v in producer.values("t.dlq")]
    assert failed and [d.error_class for d in letters] == ["ZeroDivisionError"] * len(failed)
    assert letters[0].source_offset in {0, 1, 2} and worker.stats.records == 3
    assert worker.stats.dead_letters == len(failed)


class NeverDone(SlowRules):
    """A predict whose thread never gets a core: done() stays False (wait still gives the scores)."""

    def predict_start(self, matrix: Matrix) -> SlowPredict:
        self.started += 1
        return SlowPredict(self.predict_proba(matrix), polls=10**9)


def due_detector(model: Any, at: int) -> Detector:
    d = detector(model)
    d.ingest(ransomware(f"dev-{at}", "ab" * 32)[0], NOW + at)
    return d


def test_a_starved_overlap_falls_back_to_synchronous_flushes_then_tries_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flush_overlap, "PREDICT_S_PER_ROW", 0.0)  # out of time at once
    monkeypatch.setattr(flush_overlap, "PREDICT_S_START", 0.0)
    model, flusher = NeverDone(0), FlushOverlap()
    decoded: list[int] = []

    def decode_one(may_decode: bool) -> bool:
        if may_decode:
            decoded.append(1)
        return may_decode

    plain = due_detector(ProvisionalRules(), 0).flush(NOW + 10)
    assert [x.model_dump_json() for x in flusher.flush(due_detector(model, 0), NOW + 10, decode_one)] == [
        x.model_dump_json() for x in plain]  # starved, yet the same decisions
    assert (flusher.starved, model.started, decoded) == (1, 1, [])
    for at in range(1, 5):  # the next 4 flushes: synchronous, no thread started
        flusher.flush(due_detector(model, at), NOW + at + 10, decode_one)
    assert (flusher.synchronous, model.started) == (4, 1)
    flusher.flush(due_detector(model, 5), NOW + 20, decode_one)  # tried again, starved again: 8 now
    assert (flusher.starved, model.started) == (2, 2)
    for at in range(6, 14):
        flusher.flush(due_detector(model, at), NOW + at + 10, decode_one)
    assert (flusher.synchronous, model.started) == (12, 2)


def test_a_decode_ahead_that_raises_stops_decoding_and_the_flush_still_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flush_overlap, "PREDICT_S_PER_ROW", 1.0)  # time enough: only the error stops it
    model, flusher = NeverDone(0), FlushOverlap()
    calls: list[int] = []

    def decode_one(may_decode: bool) -> bool:
        calls.append(1)
        raise RuntimeError("a bug while decoding ahead")

    plain = due_detector(ProvisionalRules(), 0).flush(NOW + 10)
    d = due_detector(model, 0)
    decided = flusher.flush(d, NOW + 10, decode_one)
    assert [x.model_dump_json() for x in decided] == [x.model_dump_json() for x in plain] and plain
    assert calls == [1]  # no second try in this flush
    d.ingest(ransomware("dev-z", "cd" * 32)[0], NOW + 30)  # the trees are not left locked
    assert d.due(NOW + 10_000)


def test_records_taken_while_scoring_do_not_spend_the_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding ahead is bounded by the predict's expected time (a record decoded long before its turn
    is cache-cold); a record taken into the trees is work done in its turn, so taking goes on until the
    predict is done, and the overlap is not counted starved for it."""
    monkeypatch.setattr(flush_overlap, "PREDICT_S_PER_ROW", 0.0)
    monkeypatch.setattr(flush_overlap, "PREDICT_S_START", 0.0)
    model, flusher = SlowRules(polls=5), FlushOverlap()
    calls: list[int] = []

    def take_one(may_decode: bool) -> int:
        calls.append(1)
        time.sleep(0.001)
        return flush_overlap.TAKEN

    flusher.flush(due_detector(model, 0), NOW + 10, take_one)
    assert len(calls) == 5 and (flusher.ready, flusher.starved) == (1, 0)


@pytest.mark.parametrize("stop", ["refused", "taken, then stop"])
def test_after_taking_ends_at_most_decode_ahead_records_are_decoded(stop: str) -> None:
    """Whether the next record could not be taken or was taken with taking to stop after it (a
    micro-batch due), what follows is decoded ahead for at most `DECODE_AHEAD` records, not to the
    poll's end."""
    decoded: list[int | None] = [None] * 100
    answer = None if stop == "refused" else False
    work = flush_overlap.WorkAhead(decoded, 0, 100, lambda at: at, lambda at, item: answer)
    calls = [work(True) for _ in range(100)]
    first = 0 if stop == "refused" else 1  # a refused record stays decoded; a taken one is the trees' now
    assert calls[0] == (flush_overlap.DECODED if stop == "refused" else flush_overlap.TAKEN)
    held = [i for i, item in enumerate(decoded) if item is not None]
    assert held == list(range(first, first + flush_overlap.DECODE_AHEAD))
    assert calls[-1] == flush_overlap.NOTHING


def test_an_overlap_that_ran_out_of_records_is_not_starved() -> None:
    model, flusher = NeverDone(0), FlushOverlap()
    flusher.flush(due_detector(model, 0), NOW + 10, lambda may_decode: False)  # nothing: finish at once
    flusher.flush(due_detector(model, 1), NOW + 10, lambda may_decode: False)
    assert (flusher.starved, flusher.synchronous, model.started) == (0, 0, 2)


def test_a_thread_that_finishes_in_time_keeps_the_overlap_on() -> None:
    model, flusher = SlowRules(polls=2), FlushOverlap()  # done at the third look
    decoded: list[int] = []
    for at in range(3):
        flusher.flush(due_detector(model, at), NOW + at + 10, lambda may_decode: decoded.append(1) is None)
    assert (flusher.ready, flusher.starved, flusher.synchronous, model.started) == (3, 0, 0, 3)
    assert len(decoded) == 3 * 2  # decoded while the predict "ran", then no more


# --- the same file again in a child with the debug allocator ----------------------------------------


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the child run")
def test_this_file_passes_in_a_child_with_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)
