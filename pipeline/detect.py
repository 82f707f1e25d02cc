"""The detection path, end to end and free of I/O: events -> trees -> windows -> features -> score -> policy.

The stream worker and `ringfence hunt` both fold events with `Detector.ingest` and score them with
`Detector.flush` (or its two halves), in passes of at most `PASS_SPAN_MS` of event time, so what an
analyst sees offline is what the fleet would have done. `now_ms` is the caller's clock (wall time
in the stream, event time or "end of file" when hunting); it drives micro-batch flushing, command
expiry and exclusion expiry. Windows and TTLs run on each device's own event time.

A flush scores every process whose tree changed plus `context_up` of its ancestors (their subtree
features changed too), skipping anchors (services, desktop shells, sshd...) that are never a
subtree root. Malicious rows are grouped into incidents: a row's root is its highest ancestor that
is itself malicious (in this flush, or already alerted) and not an anchor; when that root is not a
blockable file (a system tool such as shred or cmd) but its parent is, the parent is the root. A
root that was already alerted for the same tactic at the same or a higher score band is not alerted
again; the mark lives on the node, so it survives with the forest's state. A flush explains all its
incidents in one call per class, builds them all, then decides them: an incident that cannot be built
fails the flush before any root is marked, and each phase's code runs once per flush instead of
alternating (in the worker it is cache-cold at every flush: CPU per incident there is ~2x what the same
calls cost back to back; BENCHMARKS.md, Pipeline, "Session G").

`flush` is also offered in two halves for the worker: `start_flush` takes the rows and features and
starts the predict on another thread (`Scorer.start`), `finish_flush` waits for it and decides. In
between the trees must not change (every method that changes or saves them raises `PipelineError`),
so the two halves decide exactly what `flush` decides; hunting, training and `bench.core_replay`
call `flush`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress
from operator import attrgetter
from typing import Any, TypeVar

from pipeline.behaviour import COUNTER_TECHNIQUES, Counter
from pipeline.errors import PipelineError
from pipeline.features import FEATURE_NAMES, RowContext, feature_matrix, row_contexts
from pipeline.incident import Incident, NodeView, blockable
from pipeline.indicators import LONE_INDICATORS, indicator_techniques
from pipeline.lexicon import ANCHOR_CLASSES
from pipeline.policy import Decision, Policy
from pipeline.scoring import (
    TACTICS,
    BatchScores,
    Matrix,
    MicroBatcher,
    Model,
    RowScore,
    ScoreJob,
    Scorer,
    load_model,
    malicious_threshold,
)
from pipeline.tree import Changed, DeviceForest, ProcessNode, TreeLimits, ts_ms
from pipeline.tree_state import ForestEncoder, forest_from_bytes, forest_to_bytes
from pipeline.windows import DEFAULT_WINDOW_MS
from schemas.events import BehaviorEvent
from schemas.fastcodec import Event, FastEvent

log = logging.getLogger(__name__)
_compiled_rows: Callable[..., list[Row]] | None
try:  # `Detector._rows` in C (pipeline/_cforest.c); optional: without it the Python below picks the same
    from pipeline._cforest import rows as _compiled_rows
except ImportError:  # pragma: no cover - depends on the build
    _compiled_rows = None
_BANDS = ("medium", "high", "critical")
_SUB_OFFSET = FEATURE_NAMES.index("sub_child_spawn")
_LONE_OFFSET = FEATURE_NAMES.index(f"lone_{LONE_INDICATORS[0].name}")  # own, then ancestors' (1.1, 1.2)
_EVENT_ORDER = attrgetter("ts", "seq")  # an incident's evidence in event time order
_Ev = TypeVar("_Ev", bound=Event)
PASS_SPAN_MS = 1_000
"""Event time one scoring pass spans at most, in `ringfence hunt` and for a record the worker takes. The
stream scores an event within about a second of its time (the agent's 500 ms linger, the worker's 50 ms
micro-batch); a pass spanning minutes or hours (a sparse log hunted 256 events at a time, an agent's
spool sent after a night offline) would score a process at its last event: its behaviour out of the
window, its lifetime stretched to that event (a 4688 log reports no exits)."""


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Knobs of the detection path."""

    window_ms: int = DEFAULT_WINDOW_MS  # sliding behaviour window
    max_rows: int = 512  # flush when this many changed processes are pending
    max_delay_ms: int = 50  # ... or when the oldest has waited this long (caller's clock)
    context_up: int = 3  # ancestors re-scored with a changed process
    evict_every_ms: int = 60_000  # TTL eviction period per device (device time)
    max_incident_nodes: int = 256  # processes in an alert's tree snapshot
    limits: TreeLimits = field(default_factory=TreeLimits)


@dataclass(slots=True)
class DetectorStats:
    """What the detector did, for metrics and for the hunt summary."""

    events: int = 0
    flushes: int = 0
    rows_scored: int = 0
    incidents: int = 0
    realerts_skipped: int = 0
    suppressed: int = 0
    decisions: int = 0
    decision_errors: int = 0


Row = tuple[DeviceForest, ProcessNode]


@dataclass(frozen=True, slots=True)
class PendingFlush:
    """A flush whose predict runs (`Detector.start_flush`); `Detector.finish_flush` decides it.

    `held`: the devices its decisions read (those of its rows) and those whose TTL eviction it owes
    (`evict`, taken from the detector when it started). Events of any other device may be ingested
    meanwhile (`clear`): deciding and evicting touch only the held forests, so the decisions, and the
    forests once it is finished, are those of the flush made before those events."""

    rows: list[Row]
    contexts: list[RowContext]
    matrix: Matrix
    job: ScoreJob
    now_ms: int
    evict: dict[str, DeviceForest]
    held: frozenset[str]

    def done(self) -> bool:
        """True when finishing would not wait for the predict."""
        return self.job.done()

    def clear(self, events: Sequence[Event]) -> bool:
        """True when no event is of a device this flush holds (they may be ingested before it finishes)."""
        held = self.held
        return all(event.device_id not in held for event in events)


class Detector:
    """Per-device forests, a micro-batcher, a scorer and a policy."""

    def __init__(
        self, model: Model | None = None, policy: Policy | None = None, config: DetectorConfig | None = None
    ) -> None:
        self.config = config or DetectorConfig()
        self.scorer = Scorer(model if model is not None else load_model())
        self.policy = policy or Policy()
        self.forests: dict[str, DeviceForest] = {}
        self.stats = DetectorStats()
        self._batcher: MicroBatcher[tuple[str, str, bool]] = MicroBatcher(
            self.config.max_rows, self.config.max_delay_ms
        )
        self._next_evict: dict[str, int] = {}
        self._evict_due: dict[str, DeviceForest] = {}  # TTL eviction owed once their changes are scored
        self._pending: PendingFlush | None = None  # a started flush: the trees must not change

    @property
    def pending(self) -> PendingFlush | None:
        """The flush begun by `start_flush` and not finished yet, if any."""
        return self._pending

    @property
    def model(self) -> Model:
        """The model scoring the rows."""
        return self.scorer.model

    def process(self, events: Sequence[Event], now_ms: int) -> list[Decision]:
        """Fold events into the trees; score and decide if a micro-batch is due."""
        self.ingest(events, now_ms)
        return self.flush(now_ms) if self._batcher.due(now_ms) else []

    def ingest(self, events: Sequence[Event], now_ms: int) -> None:
        """Fold events into the trees and queue the changed processes, without scoring. While a flush is
        pending (`start_flush`), only events of devices it does not hold (`PendingFlush.clear`): their
        changes go to the next micro-batch, as if they came after it."""
        if self._pending is not None and not self._pending.clear(events):
            raise PipelineError("a flush is pending and holds these events' device: finish_flush it first")
        touched: dict[str, DeviceForest] = {}
        # the changes go straight into the batcher's pending keys (same order, same clock): what was
        # applied is queued even if an event raised
        self._batcher.add_into(lambda pending: self._apply(events, touched, pending), now_ms)
        self.stats.events += len(events)
        for device in touched.values():
            self._maybe_evict(device)

    def _apply(self, events: Sequence[Event], touched: dict[str, DeviceForest], changed: Changed) -> None:
        i, end = 0, len(events)
        while i < end:  # a batch usually holds one device's events: one run each
            device_id = events[i].device_id
            forest = touched.get(device_id) or self._forest(events[i])
            touched[device_id] = forest
            i = forest.apply_run(events, i, changed)

    def _ingest(self, event: Event, now_ms: int) -> None:
        """One event (kept for callers written against the first version; prefer `ingest`)."""
        self.ingest((event,), now_ms)

    def take_rows(self) -> list[Row]:
        """Drain the queued changes into the rows a flush would score (training replays use this)."""
        return self._rows(self._batcher.drain())

    def tick(self, now_ms: int) -> list[Decision]:
        """Flush if the oldest pending change has waited long enough (call from a timer)."""
        return self.flush(now_ms) if self._batcher.due(now_ms) else []

    def due(self, now_ms: int) -> bool:
        """True when a micro-batch is owed (`process` would flush now)."""
        return self._batcher.due(now_ms)

    def flush(self, now_ms: int) -> list[Decision]:
        """Score everything pending in one predict call and return the decisions (PipelineError while a
        `start_flush` is not finished, as every method that changes or saves the trees)."""
        self._check_idle()
        rows = self.take_rows()
        if not rows:
            self.evict_scored()
            return []
        contexts = row_contexts(rows, self.config.window_ms)
        matrix = feature_matrix(contexts)
        decisions = self._decided(rows, contexts, matrix, self.scorer.score(matrix), now_ms)
        self.evict_scored()
        return decisions

    def start_flush(self, now_ms: int) -> PendingFlush | None:
        """`flush`, begun: rows and features taken now, the predict started on another thread when the
        model can (`Scorer.start`); None when nothing is pending. Until `finish_flush` the forests it
        holds must not change (`flush`, another `start_flush` and the state calls refuse; `ingest`
        refuses their devices' events), so the decisions are exactly those `flush(now_ms)` gives; what
        touches none of them (decoding the next records, other devices' events) can run meanwhile."""
        self._check_idle()
        rows = self.take_rows()
        if not rows:
            self.evict_scored()
            return None
        contexts = row_contexts(rows, self.config.window_ms)
        matrix = feature_matrix(contexts)
        evict, self._evict_due = self._evict_due, {}  # owed by this flush; later ones by the next
        held = frozenset({forest.device_id for forest, _ in rows}.union(evict))
        self._pending = PendingFlush(rows, contexts, matrix, self.scorer.start(matrix), now_ms, evict, held)
        return self._pending

    def finish_flush(self, pending: PendingFlush) -> list[Decision]:
        """The decisions of a `start_flush` (waits for its predict)."""
        if pending is not self._pending:
            raise PipelineError("finish_flush: not this detector's pending flush (or finished already)")
        self._pending = None
        job = pending.job
        rows, contexts, matrix = pending.rows, pending.contexts, pending.matrix
        try:
            decisions = self._decided(rows, contexts, matrix, job.result(), pending.now_ms)
        except BaseException:  # still owed, as a synchronous flush that raised leaves them
            for device_id, forest in pending.evict.items():
                self._evict_due.setdefault(device_id, forest)
            raise
        self._evict(pending.evict)  # not the devices ingested meanwhile: their changes are not scored yet
        return decisions

    def _check_idle(self) -> None:
        if self._pending is not None:
            raise PipelineError("a flush is pending: finish_flush it before changing the trees or flushing")

    def _decided(
        self, rows: list[Row], contexts: list[RowContext], matrix: Matrix, scores: BatchScores, now_ms: int
    ) -> list[Decision]:
        self.stats.flushes += 1
        self.stats.rows_scored += len(rows)
        if not scores.flagged.any():
            return []
        picked = scores.flagged_rows()
        flagged = dict(zip(picked, scores.rows(picked), strict=True))
        return self._decide(rows, contexts, matrix, flagged, now_ms)

    def _forest(self, event: Event) -> DeviceForest:
        forest = self.forests.get(event.device_id)
        if forest is None:
            forest = DeviceForest(event.device_id, event.platform.value, self.config.limits)
            self.forests[event.device_id] = forest
        return forest

    def _maybe_evict(self, forest: DeviceForest) -> None:
        """Note a device whose TTL eviction is due (every `evict_every_ms` of its own time); `evict_scored`
        evicts it once the changes just folded are scored."""
        if forest.watermark_ms >= self._next_evict.get(forest.device_id, 0):
            self._evict_due[forest.device_id] = forest

    def evict_scored(self) -> None:
        """TTL eviction of the devices that came due while events were folded, now that their changes are
        scored (`flush` calls it, `finish_flush` evicts those due when its `start_flush` began; training
        replays call it after scoring `take_rows`).

        Why not while folding: one device's batch can span more than a TTL (an agent's spool sent after a
        night offline, a sparse Security 4688 log hunted in one chunk); its processes would be gone, never
        scored, before the flush that owes them a row (exited ones 10 minutes after their end, idle ones
        after 2 hours of the device's own time)."""
        self._check_idle()
        if not self._evict_due:
            return
        due, self._evict_due = self._evict_due, {}
        self._evict(due)

    def _evict(self, due: dict[str, DeviceForest]) -> None:
        for device_id, forest in due.items():
            if self.forests.get(device_id) is forest:  # not dropped or restored meanwhile
                forest.evict()
                self._next_evict[device_id] = forest.watermark_ms + self.config.evict_every_ms

    def _rows(self, pending: Sequence[tuple[str, str, bool]]) -> list[Row]:
        """Changed processes (plus nearest ancestors on notable changes), once each, minus anchors."""
        if _compiled_rows is not None:  # the same rows in C (pipeline/_cforest.c): once per flush
            return _compiled_rows(pending, self.forests, self.config.context_up, ANCHOR_CLASSES)
        seen: dict[tuple[str, str], Row] = {}
        forests, up = self.forests, self.config.context_up
        for device, key, notable in pending:  # once per queued change: lookups kept local
            forest = forests.get(device)
            node = forest.nodes.get(key) if forest is not None else None
            if forest is None or node is None:
                continue
            if _scorable(node):
                seen.setdefault((device, key), (forest, node))
            if notable:
                for parent in forest.ancestors(key, up):
                    if _scorable(parent):
                        seen.setdefault((device, parent.key), (forest, parent))
        return list(seen.values())

    def _decide(
        self,
        rows: list[Row],
        contexts: list[RowContext],
        matrix: Matrix,
        flagged: dict[int, RowScore],
        now_ms: int,
    ) -> list[Decision]:
        """One incident per root of a malicious subtree, explained only when it will be alerted."""
        groups = self._group(rows, flagged)
        fresh = {i: root for i, root in groups.items() if self._fresh(root, flagged[i])}
        picks = list(fresh)
        classes = [flagged[i].class_index for i in picks]
        lone = _known([flagged[i].lone for i in picks])  # the flush's route: not worked out again
        reasons = self.scorer.explain(matrix, picks, classes, FEATURE_NAMES, lone=lone)
        # Every incident is built before any is decided: each phase's code stays warm over the flush,
        # and an incident that cannot be built raises before any root is marked as alerted.
        built = [
            (rows[i][0], root, flagged[i], self._build(rows[i][0], root, contexts[i], matrix[i], flagged[i],
                                                       reasons[i]))
            for i, root in fresh.items()
        ]  # fmt: skip
        decisions: list[Decision] = []
        for forest, root, score, incident in built:
            decisions += self._incident(forest, root, score, incident, now_ms)
        self.stats.decisions += len(decisions)
        return decisions

    def _group(self, rows: list[Row], flagged: dict[int, RowScore]) -> dict[int, ProcessNode]:
        """Representative row (highest score) -> root, for each malicious subtree."""
        malicious = {(rows[i][0].device_id, rows[i][1].key): i for i in flagged}
        best: dict[tuple[str, str], tuple[int, ProcessNode]] = {}
        for (device, _), i in malicious.items():
            root = self._root(rows[i], malicious)
            held = best.get((device, root.key))
            if held is None or flagged[i].malicious > flagged[held[0]].malicious:
                best[(device, root.key)] = (i, root)
        return dict(best.values())

    def _fresh(self, root: ProcessNode, score: RowScore) -> bool:
        """Not alerted yet for this tactic at this band or higher (counted when skipped)."""
        if _already_alerted(root.alert_mark, score.tactic, score.band):
            self.stats.realerts_skipped += 1
            return False
        return True

    def _root(self, row: Row, malicious: dict[tuple[str, str], int]) -> ProcessNode:
        forest, node = row
        root = node
        for parent in forest.iter_ancestors(node.key):
            if not _scorable(parent) or (
                (forest.device_id, parent.key) not in malicious and not parent.alert_mark
            ):
                # A system tool (shred, cmd, cat) that no one flagged above it was run by its parent: when
                # that parent is a blockable file, the incident is the parent's, not the tool's.
                if _scorable(parent) and not blockable(root) and blockable(parent):
                    root = parent
                break
            root = parent
        return root

    def _incident(
        self, forest: DeviceForest, root: ProcessNode, score: RowScore, incident: Incident, now_ms: int
    ) -> list[Decision]:
        """The decisions for one built incident; its root is marked as alerted for this tactic and band."""
        self.stats.incidents += 1
        try:
            decisions = self.policy.decide(incident, now_ms)
        except ValueError as exc:  # a contract refused a field (pydantic's ValidationError is a ValueError)
            self.stats.decision_errors += 1
            log.error("device %s: cannot build decisions for tree %s: %s", forest.device_id, root.key, exc)
            return []
        self.stats.suppressed += not decisions
        root.alert_mark = _with_mark(root.alert_mark, score.tactic, score.band)
        log.info(
            "device %s: %s on tree %s (score %.3f, %d decisions)",
            forest.device_id,
            incident.tactic,
            root.key,
            score.malicious,
            len(decisions),
        )
        return decisions

    def _build(
        self,
        forest: DeviceForest,
        root: ProcessNode,
        ctx: RowContext,
        values: Matrix,
        score: RowScore,
        reasons: list[tuple[str, float, float]],
    ) -> Incident:
        window_start = ctx.window_start_ms
        members = [
            root,
            *forest.descendants(
                root.key, active_since_ms=window_start, max_nodes=self.config.max_incident_nodes - 1
            ),
        ]
        mask = 0
        for member in (*members, *ctx.ancestors):
            mask |= member.mask
        evidence = sorted(_events(e for m in members for e in m.notable), key=_EVENT_ORDER)
        model = self.model
        views = tuple(map(_view, members))
        scored = next((v for m, v in zip(members, views, strict=True) if m is ctx.node), None)
        return Incident(
            device_id=forest.device_id,
            platform=forest.platform,
            root=views[0],
            scored=_view(ctx.node) if scored is None else scored,  # a copy of one node, made once
            nodes=views,
            evidence=tuple(evidence),
            tactic=score.tactic,
            score=score.malicious,
            threshold=malicious_threshold(model, values, score.lone),
            tactic_scores=dict(zip(TACTICS, score.probabilities[1:], strict=True)),
            top_features=tuple(reasons),
            techniques=_techniques(mask, values),
            model_version=model.version,
            feature_version=model.feature_version,
        )

    def forest_stats(self) -> dict[str, int]:
        """Forest counters (floods, evictions, duplicates...) summed over every device held."""
        total: dict[str, int] = {"devices": len(self.forests), "nodes": 0}
        for forest in self.forests.values():
            total["nodes"] += len(forest)
            for name, value in forest.stats.as_dict().items():
                total[name] = total.get(name, 0) + value
        return total

    def device_state(self, device_id: str, encoder: ForestEncoder | None = None) -> bytes | None:
        """Serialised forest of one device (for a changelog), None when unknown. With `encoder` (the
        worker's) only the processes an event named since its last record of this device (the forest
        stamps them) are encoded again; the bytes are the same either way."""
        self._check_idle()
        forest = self.forests.get(device_id)
        if forest is None:
            return None
        keep_since_ms = forest.watermark_ms - self.config.window_ms  # older behaviour moves no window
        if encoder is None:
            return forest_to_bytes(forest, keep_since_ms)
        return encoder.encode(forest, keep_since_ms)

    def restore_device(self, data: bytes) -> str:
        """Load a device's forest from `device_state` bytes; returns its device id (StateError if corrupt)."""
        self._check_idle()
        forest = forest_from_bytes(data, self.config.limits)
        self.forests[forest.device_id] = forest
        return forest.device_id

    def drop_device(self, device_id: str) -> None:
        """Forget a device (its partition moved to another worker)."""
        self._check_idle()
        self.forests.pop(device_id, None)
        self._next_evict.pop(device_id, None)
        self._evict_due.pop(device_id, None)


def _events(kept: Iterable[Event | dict[str, Any]]) -> list[Event]:
    """Notable events as the alert reads them: decoded ones as they are (the alert's one validation
    builds their models); restored ones are validated now; unreadable ones are left out."""
    out: list[Event] = []
    for event in kept:
        if isinstance(event, BehaviorEvent | FastEvent):
            out.append(event)
            continue
        try:
            out.append(BehaviorEvent.model_validate(event))
        except ValueError:
            log.warning("dropping an unreadable evidence event restored from state")
    return out


def _known(routes: list[bool | None]) -> list[bool] | None:
    """The rows' routes (`RowScore.lone`) when every one is known, else None."""
    known = [route for route in routes if route is not None]
    return known if len(known) == len(routes) else None


def _scorable(node: ProcessNode) -> bool:
    """Not a placeholder (`ProcessNode.placeholder`, inlined: called per queued change) and not an anchor."""
    return bool(node.started or node.image) and node.image_cls not in ANCHOR_CLASSES


def _view(node: ProcessNode) -> NodeView:
    return NodeView(
        node.key,
        node.parent_key,
        node.image,
        node.command_line,
        node.sha256,
        node.user,
        node.pid,
        node.start_ms,
        node.end_ms,
        node.last_ms,
        node.signer,
        node.image_cls,
    )


_COUNTER_TECHNIQUES = [COUNTER_TECHNIQUES.get(Counter(i), ()) for i in range(len(Counter))]
"""COUNTER_TECHNIQUES by the counter's value (its column after _SUB_OFFSET): no enum lookup per alert."""


_indicator_techniques = lru_cache(maxsize=4096)(indicator_techniques)
"""`indicator_techniques` per mask, remembered: a few masks recur over many incidents (values are tuples)."""


_COUNTERS = range(len(Counter))
_COUNTER_COLUMNS = slice(_SUB_OFFSET, _SUB_OFFSET + len(Counter))  # len(Counter): a Python call per use
_LONE_OF_COLUMN = tuple(i % len(LONE_INDICATORS) for i in range(2 * len(LONE_INDICATORS)))
"""Each lone-command column's indicator (own columns, then ancestors')."""
_LONE_COLUMNS = slice(_LONE_OFFSET, _LONE_OFFSET + len(_LONE_OF_COLUMN))


def _techniques(mask: int, values: Matrix) -> tuple[str, ...]:
    """ATT&CK techniques of the tree's indicator bits, of the scored row's lone-command indicators (the
    lone booster's evidence: their bits are kept on no node, only a lone-only start among the notable events)
    and of the subtree's non-zero counters (NaN counts: numpy's `flatnonzero` counted it; -0.0 does not),
    remembered per (mask, lone, fired). The set columns are picked by `compress` (truth, as `if v` tests
    it), not by a generator over all ~100 (4.2 -> 2.4 us per alert warm)."""
    counters, lone = values[_COUNTER_COLUMNS].tolist(), values[_LONE_COLUMNS].tolist()
    return _techniques_of(mask, tuple(compress(_LONE_OF_COLUMN, lone)), tuple(compress(_COUNTERS, counters)))


@lru_cache(maxsize=4096)
def _techniques_of(mask: int, lone: tuple[int, ...], fired: tuple[int, ...]) -> tuple[str, ...]:
    found = set(_indicator_techniques(mask))
    found.update(t for i in lone for t in LONE_INDICATORS[i].techniques)
    found.update(t for i in fired for t in _COUNTER_TECHNIQUES[i])
    return tuple(sorted(found))


def passes(events: Iterable[_Ev], size: int, span_ms: int | None = PASS_SPAN_MS) -> Iterator[list[_Ev]]:
    """Consecutive runs of at most `size` events whose times lie within `span_ms` of each other (None:
    any span), in the given order: one scoring pass each."""
    run: list[_Ev] = []
    low = high = 0
    for event in events:
        when = ts_ms(event)
        if run and span_ms is not None and max(high, when) - min(low, when) > span_ms:
            yield run
            run = []
        if not run:
            low = high = when
        run.append(event)
        low, high = min(low, when), max(high, when)
        if len(run) >= size:
            yield run
            run = []
    if run:
        yield run


@lru_cache(maxsize=4096)
def _already_alerted(mark: str | None, tactic: str, band: str) -> bool:
    """Same tactic already alerted at this band or a higher one (remembered: a flagged root is asked
    at every flush its tree changes in, with the same few marks)."""
    if not mark:  # most roots: never alerted
        return False
    previous = _marks(mark)
    return tactic in previous and _BANDS.index(previous[tactic]) >= _BANDS.index(band)


def _marks(mark: str | None) -> dict[str, str]:
    """Parse "Tactic:band,..." (unknown bands and malformed parts are ignored)."""
    pairs = (part.partition(":") for part in (mark or "").split(","))
    return {tactic: band for tactic, _, band in pairs if band in _BANDS}


def _with_mark(mark: str | None, tactic: str, band: str) -> str:
    if not mark:  # the first mark: what the join below writes for one pair
        return f"{tactic}:{band}"
    marks = _marks(mark)
    marks[tactic] = band
    return ",".join(f"{t}:{b}" for t, b in sorted(marks.items()))
