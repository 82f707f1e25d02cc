"""Feature rows for training, computed by the code the stream and hunting run.

A recording is replayed in chunks (`pipeline.hunt.chunks`: file order, one scoring pass per chunk; how
these passes differ from hunting's since session T is said below) through the detector's public API:
`Detector.ingest` folds a chunk into the trees and `Detector.take_rows` drains the rows its next flush
would score; their features come from `pipeline.features.row_context`/`feature_matrix`, the functions
`Detector.flush` calls, and `Detector.evict_scored` evicts. The rows are: every process whose tree
changed plus its nearest ancestors, leaving out anchors (services, desktop shells, sshd...) and
placeholders. A process is scored many times while its subtree grows, so each distinct snapshot is kept
(the first few and the latest few) with weights that sum to one per process: the model sees the early,
partial view the stream sees, without long-lived processes dominating.

Training replays differ from hunting on purpose since session T. Hunting (and the stream) score passes
of at most `pipeline.detect.PASS_SPAN_MS` of event time and evict a device only once its changes are
scored; training replays keep the recipe the committed boosters were fitted with (those of
`ringfence-xgb-1.2-b94977f9bd`, kept bit for bit by `752398b064`, which recalibrated the thresholds), so
`ringfence train --seed 7` still rebuilds them: passes of `chunk_events` events whatever time they
span, a device's TTL eviction before its rows are taken. What that recipe skips are processes that
exited more than 10 minutes (or idled 2 hours) before the end of their pass: late views whose window has
emptied. Refitted on hunting's replays, the model measured worse on the held-out labs (pipeline/model/
MODEL_CARD.md, Known weaknesses), so the switch waits for a retrain that gains from it.

Row labels: the tactic of the process when it belongs to the attack, `Benign` when neither it nor
any of its window-active descendants does, and *ambiguous* (left out of training) when a benign
process holds attack descendants, e.g. the WMI host that ran an attacker's command.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pipeline.detect import Detector, DetectorConfig
from pipeline.features import N_FEATURES, RowContext, feature_matrix, row_context
from pipeline.hunt import CHUNK_EVENTS, chunks
from pipeline.lexicon import ANCHOR_CLASSES
from pipeline.model.provisional import ProvisionalRules
from pipeline.scoring import BENIGN
from pipeline.tree import DeviceForest, ProcessNode, ts_ms
from pipeline.windows import DEFAULT_WINDOW_MS
from schemas.events import BehaviorEvent

AMBIGUOUS = "Ambiguous"
STREAM_CHUNK_EVENTS = 8
"""Events per scoring pass when replaying simulated trees and live captures. The stream flushes every
`max_delay_ms` (50 ms), i.e. after a handful of events, so its first verdict on an attack sees the
launcher with one or two children; hunting's 256-event passes would show a small tree only whole.
Recordings keep hunting's chunk size (that is how they are judged)."""
KEEP_FIRST, KEEP_LAST = 2, 4


@dataclass(slots=True)
class RowBlock:
    """Rows of one source (recording or simulated tree)."""

    source: str
    matrix: NDArray[np.float32]
    labels: list[str]
    weights: NDArray[np.float32]
    keys: list[str]  # "device/process_key" of each row
    trees: list[str]  # "device/root_key": the subtree the row belongs to (root = highest scorable ancestor)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(slots=True)
class _Snapshots:
    rows: dict[str, list[NDArray[np.float32]]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    trees: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, row: NDArray[np.float32], label: str, tree: str) -> None:
        kept = self.rows.setdefault(key, [])
        if kept and np.array_equal(kept[-1], row):
            return
        if len(kept) >= KEEP_FIRST + KEEP_LAST:
            del kept[KEEP_FIRST]
        kept.append(row)
        self.labels[key] = label if self.labels.get(key) in (None, BENIGN) else self.labels[key]
        self.trees[key] = tree


def replay_rows(
    events: Iterable[BehaviorEvent],
    node_labels: Mapping[str, str],
    source: str,
    window_ms: int = DEFAULT_WINDOW_MS,
    chunk_events: int = CHUNK_EVENTS,
    chunk_span_ms: int | None = None,
    evict_before_rows: bool = True,
) -> RowBlock:
    """Replay `events` in order and collect labelled feature rows (see module docstring).

    Row selection and TTL eviction are the detector's own (`Detector.ingest`/`take_rows`/`evict_scored`);
    only the model call is replaced by feature collection. The defaults are the committed model's recipe
    (module docstring): passes of `chunk_events` events whatever time they span, a device's TTL eviction
    before its rows are taken; `chunk_span_ms=PASS_SPAN_MS, evict_before_rows=False` replays as
    `ringfence hunt` and the stream score since session T.
    """
    detector = Detector(model=ProvisionalRules(), config=DetectorConfig(window_ms=window_ms))
    snaps = _Snapshots()
    for chunk in chunks(events, chunk_events, chunk_span_ms):
        detector.ingest(chunk, ts_ms(chunk[-1]))
        if evict_before_rows:
            detector.evict_scored()
        _score_pending(detector, node_labels, snaps, window_ms)
        detector.evict_scored()  # as a flush does, once the chunk's rows are taken
    return _block(source, snaps)


def _score_pending(
    detector: Detector, node_labels: Mapping[str, str], snaps: _Snapshots, window_ms: int
) -> None:
    rows = detector.take_rows()
    if not rows:
        return
    contexts = [row_context(forest, node.key, window_ms) for forest, node in rows]
    matrix = feature_matrix(contexts)
    for (forest, node), ctx, row in zip(rows, contexts, matrix, strict=True):
        snaps.add(
            f"{forest.device_id}/{node.key}",
            row,
            row_label(ctx, node_labels),
            f"{forest.device_id}/{tree_root(forest, node).key}",
        )


def scorable(node: ProcessNode) -> bool:
    """Rows the detector scores: not a placeholder, not an anchor."""
    return not node.placeholder and node.image_cls not in ANCHOR_CLASSES


def tree_root(forest: DeviceForest, node: ProcessNode) -> ProcessNode:
    """Highest ancestor reachable through scorable processes (the subtree an alert would name)."""
    root = node
    for parent in forest.ancestors(node.key):
        if not scorable(parent):
            break
        root = parent
    return root


def row_label(ctx: RowContext, node_labels: Mapping[str, str]) -> str:
    """Tactic of an attack process; Benign; or Ambiguous for a benign holder of attack descendants."""
    own = node_labels.get(ctx.node.key)
    if own is not None:
        return own
    if any(d.key in node_labels for d in ctx.descendants):
        return AMBIGUOUS
    return BENIGN


def _block(source: str, snaps: _Snapshots) -> RowBlock:
    rows: list[NDArray[np.float32]] = []
    labels: list[str] = []
    weights: list[float] = []
    keys: list[str] = []
    trees: list[str] = []
    for key, kept in snaps.rows.items():
        rows.extend(kept)
        labels += [snaps.labels[key]] * len(kept)
        weights += [1.0 / len(kept)] * len(kept)
        keys += [key] * len(kept)
        trees += [snaps.trees[key]] * len(kept)
    matrix = np.vstack(rows).astype(np.float32) if rows else np.zeros((0, N_FEATURES), dtype=np.float32)
    return RowBlock(source, matrix, labels, np.asarray(weights, dtype=np.float32), keys, trees)
