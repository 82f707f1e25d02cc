"""Scoring in micro-batches: many changed trees, one `predict_proba` call.

A per-row predict call costs far more in Python and XGBoost overhead than the row itself, so the
detector collects the processes whose trees changed and flushes when `max_rows` are pending or the
oldest has waited `max_delay_ms`; each flush is exactly one `predict_proba` call. Contributions
(why a row scored as it did) are computed afterwards only for the rows that turned out malicious.

`Model` is the protocol both the provisional rule scorer (`pipeline.model.provisional`) and the
trained XGBoost model (`pipeline.model.booster`) satisfy; `load_model` picks the trained one when
`pipeline/model/model.ubj` and `model.json` exist (wrapped by `pipeline.compiled_model.FastBooster`:
small batches without XGBoost's fixed cost per call, contributions of one class at a time) and says
loudly when it falls back. An artifact with two boosters, one per sensor view, loads as a
`pipeline.model.routed.RoutedModel`; `model_classify` then applies each view's thresholds. A model
may offer `class_contributions(matrix, class_index)`; `Scorer.explain` then asks for the alerting
rows' own classes only.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from schemas.alerts import Tactic

log = logging.getLogger(__name__)
_ctrees: Any
try:  # optional C extension (setup.py): classify and top features in one pass each
    from pipeline import _ctrees
except ImportError:  # pragma: no cover - depends on the build
    _ctrees = None

BENIGN = "Benign"
TACTICS: tuple[str, ...] = tuple(t.value for t in Tactic if t is not Tactic.GENERIC)
CLASSES: tuple[str, ...] = (BENIGN, *TACTICS)
"""Class order every model must use: benign first, then the 12 tactics in ATT&CK order."""
MODEL_DIR = Path(__file__).resolve().parent / "model"
LONE_BOOSTER = "model_lone.ubj"
"""The process-creation booster of a two-view artifact (`pipeline.model.routed`), next to model.ubj."""
Matrix = NDArray[np.float32]


class Model(Protocol):
    """What the detector needs from a model."""

    @property
    def version(self) -> str:
        """Model version; contains 'provisional' for a stand-in model."""

    @property
    def feature_version(self) -> str:
        """FEATURE_VERSION the model was built for."""

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, `CLASSES` order."""

    @property
    def thresholds(self) -> Mapping[str, float]:
        """Per class: minimum probability to name that tactic; key 'malicious': minimum 1 - P(benign);
        key 'generic' (default: 'malicious'): minimum 1 - P(benign) to alert with no tactic named."""

    def predict_proba(self, matrix: Matrix) -> Matrix:
        """(rows, features) -> (rows, classes) probabilities."""

    def contributions(self, matrix: Matrix) -> Matrix:
        """(rows, features) -> (rows, classes, features + 1) margin contributions, bias last."""


@dataclass(frozen=True, slots=True)
class RowScore:
    """The verdict of the model on one row."""

    malicious: float  # 1 - P(benign)
    tactic: str  # a TACTICS name, "Generic", or "Benign" when not malicious
    class_index: int  # column of the most probable tactic (whose contributions explain the row)
    probabilities: tuple[float, ...]
    lone: bool | None = None  # scored by a routed model's lone booster (None: not worked out)

    @property
    def is_malicious(self) -> bool:
        """True when the row crossed the malicious threshold."""
        return self.tactic != BENIGN

    @property
    def band(self) -> str:
        """Coarse score class; an alert is re-raised only when tactic or band changes."""
        return "critical" if self.malicious >= 0.95 else "high" if self.malicious >= 0.8 else "medium"


DOMINANCE = 0.5
"""A tactic is named only when it holds at least this share of the malicious probability."""


@dataclass(frozen=True, slots=True)
class BatchScores:
    """The model's verdict on a whole micro-batch, as arrays (no per-row Python for benign rows)."""

    probabilities: Matrix  # (rows, classes)
    malicious: NDArray[np.float32]  # 1 - P(benign)
    flagged: NDArray[np.bool_]  # crossed the malicious threshold
    best: NDArray[np.int64]  # column of the most probable tactic
    named: NDArray[np.bool_]  # that tactic passes its threshold and dominates (else Generic)
    lone: NDArray[np.bool_] | None = None  # the flush's `route_of` (a model of two views), when worked out

    def __len__(self) -> int:
        return len(self.malicious)

    def flagged_rows(self) -> list[int]:
        """Indices of malicious rows."""
        return [int(i) for i in np.nonzero(self.flagged)[0]]

    def rows(self, indices: Sequence[int]) -> list[RowScore]:
        """`row(i)` of each index, read through one `tolist()` per array instead of scalar reads per row;
        each with its route when the flush's is known (`lone`)."""
        if not indices:
            return []
        at = np.asarray(indices, dtype=np.intp)
        columns = (self.malicious, self.best, self.flagged, self.named, self.probabilities)
        routes = [None] * len(at) if self.lone is None else self.lone[at].tolist()
        generic = Tactic.GENERIC.value
        return [
            RowScore(m, (CLASSES[b] if n else generic) if f else BENIGN, b, tuple(p), lone)
            for m, b, f, n, p, lone in zip(*(c[at].tolist() for c in columns), routes, strict=True)
        ]

    def row(self, i: int) -> RowScore:
        """The score of one row as a value."""
        if not self.flagged[i]:
            tactic = BENIGN
        else:
            tactic = CLASSES[int(self.best[i])] if self.named[i] else Tactic.GENERIC.value
        lone = None if self.lone is None else bool(self.lone[i])
        return RowScore(
            float(self.malicious[i]), tactic, int(self.best[i]), tuple(self.probabilities[i].tolist()), lone
        )


def classify(probabilities: Matrix, thresholds: Mapping[str, float]) -> BatchScores:
    """Turn class probabilities into scores: benign, a named tactic, or Generic.

    With `pipeline._ctrees` built, one C pass fills the four arrays (the same values: every
    comparison in float32, as numpy makes it with a Python float; tests/unit/test_scoring_compiled.py)
    instead of ~10 numpy calls, each run cache-cold once per flush in the worker.
    """
    cutoff = thresholds.get("malicious", 0.5)
    generic = thresholds.get("generic", cutoff)
    per_class = [thresholds.get(name, 0.0) for name in CLASSES]
    fast = _compiled_classify(probabilities, per_class, cutoff, generic)
    return fast if fast is not None else _classify(probabilities, thresholds)


def _compiled_classify(
    probabilities: Matrix, per_class: list[float], cutoff: float, generic: float
) -> BatchScores | None:
    """`classify` in C, or None when not built or when a value is not what it handles exactly: a
    float32 C-contiguous (rows, CLASSES) matrix and thresholds that are Python floats (numpy compares
    a float32 array with a numpy float64 in float64)."""
    if (
        _ctrees is None
        or type(cutoff) is not float
        or type(generic) is not float
        or any(type(t) is not float for t in per_class)
        or probabilities.dtype != np.float32
        or probabilities.ndim != 2
        or probabilities.shape[1] != len(CLASSES)
        or not probabilities.flags.c_contiguous
    ):
        return None
    rows = len(probabilities)
    malicious = np.empty(rows, dtype=np.float32)
    flagged = np.empty(rows, dtype=np.bool_)
    best = np.empty(rows, dtype=np.int64)
    named = np.empty(rows, dtype=np.bool_)
    per_class32 = array("f", per_class)  # float32 as numpy rounds them (to nearest)
    limits = (cutoff, generic, DOMINANCE)
    _ctrees.classify(probabilities, rows, len(CLASSES), per_class32, *limits, malicious, flagged, best, named)
    return BatchScores(probabilities, malicious, flagged, best, named)


def _classify(probabilities: Matrix, thresholds: Mapping[str, float]) -> BatchScores:
    """`classify` in numpy (the reference the C pass is tested equal to)."""
    malicious = (1.0 - probabilities[:, 0]).astype(np.float32)
    best = np.argmax(probabilities[:, 1:], axis=1).astype(np.int64) + 1
    best_p = probabilities[np.arange(len(best)), best]
    per_class = np.array([thresholds.get(name, 0.0) for name in CLASSES], dtype=np.float32)
    cutoff = thresholds.get("malicious", 0.5)
    named = (best_p >= per_class[best]) & (best_p >= DOMINANCE * malicious)
    # A row whose tactic is not named alerts (as Generic) only above the "generic" cut-off, so
    # per-class thresholds calibrated to a false-positive budget bound the alerts of every class.
    flagged = (malicious >= cutoff) & (named | (malicious >= thresholds.get("generic", cutoff)))
    return BatchScores(probabilities, malicious, flagged, best, named)


def route_of(model: Model, matrix: Matrix) -> NDArray[np.bool_] | None:
    """The rows a model with two sensor views (`pipeline.model.routed.RoutedModel`) scores with its lone
    booster; None for a model of one view, or for no rows."""
    route = getattr(model, "lone_rows", None)
    return None if route is None or not len(matrix) else np.asarray(route(matrix), dtype=np.bool_)


def model_classify(
    model: Model, matrix: Matrix, probabilities: Matrix, lone: NDArray[np.bool_] | None = None
) -> BatchScores:
    """`classify` with the model's thresholds; a model with two sensor views
    (`pipeline.model.routed.RoutedModel`) flags its process-only rows by its lone thresholds. `lone`:
    the matrix's `route_of`, when the caller has it already (else it is worked out here). The route is
    kept in the scores (`BatchScores.lone`): the flush's explanations and thresholds read it too."""
    scores = classify(probabilities, model.thresholds)
    if lone is None:
        lone = route_of(model, matrix)
    if lone is None:
        return scores
    if not lone.any():
        return replace(scores, lone=lone)
    other = classify(probabilities, model.lone_thresholds)  # type: ignore[attr-defined]
    flagged, named = np.where(lone, other.flagged, scores.flagged), np.where(lone, other.named, scores.named)
    return replace(scores, flagged=flagged, named=named, lone=lone)


def malicious_threshold(model: Model, row: Matrix, lone: bool | None = None) -> float:
    """The minimum 1 - P(benign) that applied to one feature row (its view's, for a routed model).
    `lone`: the row's route when known (`RowScore.lone`), else it is worked out from the row."""
    if lone is None:
        route = route_of(model, row.reshape(1, -1))
        lone = route is not None and bool(route[0])
    if lone:
        return float(model.lone_thresholds.get("malicious", 0.5))  # type: ignore[attr-defined]
    return float(model.thresholds.get("malicious", 0.5))


def top_features(
    contributions: Matrix, values: Matrix, names: tuple[str, ...], k: int = 8
) -> list[tuple[str, float, float]]:
    """The k (name, value, contribution) with the largest positive contributions for one row/class."""
    per_feature = contributions[:-1]
    order = np.argsort(-per_feature, kind="stable")[:k]
    return [(names[i], float(values[i]), float(per_feature[i])) for i in order if per_feature[i] > 0]


def top_features_of_rows(
    contributions: Matrix, values: Matrix, names: tuple[str, ...], k: int = 8
) -> list[list[tuple[str, float, float]]]:
    """`top_features` of every row of `contributions` (rows, features + 1) and `values` (rows, features).

    The same lists, from one sort and two gathers for all the rows instead of a sort and ~16 NumPy
    scalar reads per row (an incident's explanation; see `Scorer.explain`); with `pipeline._ctrees`
    built, from one C pass over float32 buffers (no sort: the k largest positive contributions kept
    in order, the lower column first among equals, as the stable sort keeps them).
    """
    if (
        _ctrees is not None
        and k >= 0
        and isinstance(names, tuple)
        and values.ndim == 2
        and values.shape[1] == len(names) > 0
        and contributions.shape == (len(values), len(names) + 1)
        and values.dtype == contributions.dtype == np.float32
        and values.flags.c_contiguous
        and contributions.flags.c_contiguous
    ):  # the same lists from one C pass: no sort, no numpy call (tests/unit/test_scoring_compiled.py)
        rows: list[list[tuple[str, float, float]]] = _ctrees.top_features(
            contributions, values, names, len(values), k
        )
        return rows
    return _top_features_of_rows(contributions, values, names, k)


def _top_features_of_rows(
    contributions: Matrix, values: Matrix, names: tuple[str, ...], k: int = 8
) -> list[list[tuple[str, float, float]]]:
    """`top_features_of_rows` in numpy (the reference the C pass is tested equal to)."""
    per_feature = contributions[:, :-1]
    order = np.argsort(-per_feature, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(order))[:, None]  # plain fancy indexing: a third of take_along_axis's cost here
    picked = per_feature[rows, order].tolist()
    kept = values[rows, order].tolist()
    return [
        [(names[i], value, weight) for i, value, weight in zip(o, v, c, strict=True) if weight > 0]
        for o, v, c in zip(order.tolist(), kept, picked, strict=True)
    ]


K = TypeVar("K", bound=Hashable)


class MicroBatcher(Generic[K]):
    """Pending keys (e.g. (device, process_key)) and the rule that says when to flush them."""

    def __init__(self, max_rows: int = 512, max_delay_ms: int = 50) -> None:
        if max_rows <= 0 or max_delay_ms < 0:
            raise ValueError("max_rows must be positive and max_delay_ms not negative")
        self.max_rows, self.max_delay_ms = max_rows, max_delay_ms
        self._pending: dict[K, None] = {}
        self._since_ms: int | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, keys: Iterable[K], now_ms: int) -> None:
        """Mark keys as changed; the first pending key starts the delay clock."""
        pending = self._pending
        if not pending:
            self._since_ms = now_ms
        pending.update(dict.fromkeys(keys))  # in order, a known key keeps its place; one C loop

    def add_into(self, fill: Callable[[dict[K, None]], None], now_ms: int) -> None:
        """`add` of the keys `fill` sets in the pending dict itself (`Detector.ingest`: the C fold queues
        its changes there, without a list and a dict made per call); the clock as `add` starts it."""
        pending = self._pending
        empty = not pending
        try:
            fill(pending)
        finally:
            if empty and pending:
                self._since_ms = now_ms

    def due(self, now_ms: int) -> bool:
        """True when a flush is owed: enough rows, or the oldest has waited long enough."""
        if not self._pending or self._since_ms is None:
            return False
        return len(self._pending) >= self.max_rows or now_ms - self._since_ms >= self.max_delay_ms

    def drain(self) -> list[K]:
        """Take every pending key (in arrival order) and reset the clock."""
        keys = list(self._pending)
        self._pending.clear()
        self._since_ms = None
        return keys


@dataclass(slots=True)
class ScorerStats:
    """Calls and rows, to show batching works (rows per call)."""

    predict_calls: int = 0
    contribution_calls: int = 0
    rows_scored: int = 0
    rows_malicious: int = 0


class Scorer:
    """Wraps a model: one predict per batch, contributions for malicious rows only."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.stats = ScorerStats()

    def score(self, matrix: Matrix) -> BatchScores:
        """Score every row with a single `predict_proba` call."""
        return self._classified(matrix, self.model.predict_proba(matrix))

    def start(self, matrix: Matrix) -> ScoreJob:
        """`score(matrix)`, begun: on a thread of its own when the model offers `predict_start` (the
        C trees: `pipeline.compiled_model.FastBooster`), so the caller works meanwhile; else (or when
        a subclass overrides `score` but not `start`) scored now. `ScoreJob.result` gives
        the same `BatchScores` as `score` would."""
        if type(self).score is not Scorer.score:
            return ScoreJob(self, matrix, self.score(matrix))
        lone = route_of(self.model, matrix)  # once for the flush: its predict and its classification
        running = self._predict_start(matrix, lone)
        return ScoreJob(self, matrix, self.score(matrix) if running is None else running, lone)

    def _predict_start(self, matrix: Matrix, lone: NDArray[np.bool_] | None = None) -> RunningPredict | None:
        """`start_predict` of this scorer's model (`lone`: the matrix's `route_of`, when known)."""
        return start_predict(self.model, matrix, lone)

    def _classified(
        self, matrix: Matrix, probabilities: Any, lone: NDArray[np.bool_] | None = None
    ) -> BatchScores:
        rows = len(matrix)
        probabilities = np.asarray(probabilities, dtype=np.float32)
        self.stats.predict_calls += 1
        self.stats.rows_scored += rows
        scores = model_classify(self.model, matrix, probabilities.reshape(rows, len(CLASSES)), lone)
        self.stats.rows_malicious += int(scores.flagged.sum())
        return scores

    def explain(
        self, matrix: Matrix, rows: Sequence[int], classes: Sequence[int], names: tuple[str, ...], k: int = 8,
        lone: Sequence[bool] | None = None,
    ) -> dict[int, list[tuple[str, float, float]]]:  # fmt: skip
        """Top features of `rows`, each for its class column, in one contributions call.

        Contributions (SHAP values for a booster) cost far more than a prediction, so the detector
        asks only for the rows that will become alerts, not for every malicious row. `lone`: each
        row's route (`RowScore.lone`) when known, so a routed model does not work it out again for
        every class (a model of one view has no route to take: ignored).
        """
        if not rows:
            return {}
        per_class = getattr(self.model, "class_contributions", None)
        if not hasattr(self.model, "lone_rows"):
            lone = None
        if per_class is None:
            values = matrix[list(rows)]
            contrib = self.model.contributions(values)
            self.stats.contribution_calls += 1
            own = contrib[np.arange(len(rows)), np.asarray(classes, dtype=np.intp)]  # each row's class
            return dict(zip(rows, top_features_of_rows(own, values, names, k), strict=True))
        out: dict[int, list[tuple[str, float, float]]] = {}
        for cls in sorted(set(classes)):  # one call per class: only that class's trees are walked
            at = [j for j, c in enumerate(classes) if c == cls]
            picked = [rows[j] for j in at]
            values = matrix[picked]
            if lone is None:
                contrib = per_class(values, cls)
            else:
                contrib = per_class(values, cls, np.array([lone[j] for j in at], dtype=np.bool_))
            self.stats.contribution_calls += 1
            out.update(zip(picked, top_features_of_rows(contrib, values, names, k), strict=True))
        return {row: out[row] for row in rows}


class RunningPredict(Protocol):
    """A `predict_proba` under way (`FastBooster.predict_start`)."""

    def done(self) -> bool:
        """True when `wait` would not block."""

    def wait(self) -> Matrix:
        """The probabilities, (rows, classes); once only."""


def start_predict(model: Any, matrix: Matrix, lone: NDArray[np.bool_] | None = None) -> RunningPredict | None:
    """The model's `predict_start(matrix)` (with the rows `lone` routes, for a model of two views when the
    caller has them); None when it has none or declines (no C trees)."""
    begin = getattr(model, "predict_start", None)
    if begin is None:
        return None
    running: RunningPredict | None = begin(matrix) if lone is None else begin(matrix, lone)
    return running


class ScoreJob:
    """A micro-batch's scores, maybe still being computed on another thread (`Scorer.start`)."""

    __slots__ = ("_lone", "_matrix", "_scorer", "_work")

    def __init__(
        self, scorer: Scorer, matrix: Matrix, work: RunningPredict | BatchScores,
        lone: NDArray[np.bool_] | None = None,
    ) -> None:  # fmt: skip
        self._scorer, self._matrix, self._work, self._lone = scorer, matrix, work, lone

    def done(self) -> bool:
        """True when `result` would not wait (cheap: one flag read)."""
        return isinstance(self._work, BatchScores) or self._work.done()

    def result(self) -> BatchScores:
        """The scores (waits for the predict, then classifies on the caller's thread, once)."""
        if not isinstance(self._work, BatchScores):
            self._work = self._scorer._classified(self._matrix, self._work.wait(), self._lone)
        return self._work


def is_provisional(model: Model) -> bool:
    """A stand-in model says so in its version."""
    return "provisional" in model.version


def load_model(directory: Path = MODEL_DIR) -> Model:
    """The trained model from `directory` when present, else the provisional rule scorer (logged).

    An artifact with a process-creation booster (`model_lone.ubj`, named in model.json's `lone`)
    loads as a `pipeline.model.routed.RoutedModel`: each row scored by the booster of its view."""
    from pipeline.model.provisional import ProvisionalRules

    if (directory / "model.ubj").is_file() and (directory / "model.json").is_file():
        from pipeline.compiled_model import load_fast
        from pipeline.model.booster import BoosterModel

        base = BoosterModel.load(directory)
        full = load_fast(base, directory / "model.ubj", base.metadata.feature_names)
        lone = BoosterModel.load_lone(directory, base.metadata)
        if lone is None:
            return full  # type: ignore[no-any-return]
        from pipeline.model.routed import RoutedModel

        lone_fast = load_fast(lone, directory / LONE_BOOSTER, base.metadata.feature_names)
        return RoutedModel(full, lone_fast, base.version)
    log.warning(
        "no trained model in %s: using the PROVISIONAL rule scorer %s", directory, ProvisionalRules.VERSION
    )
    return ProvisionalRules()
