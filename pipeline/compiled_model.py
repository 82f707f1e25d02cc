"""The trained booster without XGBoost's fixed cost per call: its trees as numpy arrays, and per-class SHAP.

Why: a verdict waits for the flush that scores its tree. XGBoost's `inplace_predict` costs a fixed
~0.85 ms per call with the committed model (1,560 trees) whatever the row count, and its SHAP
contributions (`pred_contribs`) walk all 13 classes' trees although an alert is explained by one
class only: 15-20 ms per alerting flush, the largest part of a probe's time in the worker
(BENCHMARKS.md, "Session D — latency"). Two remedies, both exact:

- `CompiledTrees`: every tree laid out as a perfect binary tree of the model's maximum depth (a leaf
  above that depth is copied down). When the optional C extension `pipeline._ctrees` is built
  (setup.py; gcc only), that layout is scored in C **bit for bit as XGBoost scores it** (same leaves,
  found the QuickScorer way; same float32 accumulation order, same softmax) at any batch size,
  without XGBoost's fixed cost per call and ~5x faster per row on the detector's sparse rows
  (trees up to depth 6): `FastBooster` then uses it for every batch. Where the CPU has AVX-512 or
  AVX2 (checked when the extension loads), blocks of 8 rows share each walk of the splits, one SIMD
  lane per row, ~2x faster per row again at 8 rows or more (`_ctrees.kernel()` names the kernel in
  use; every kernel gives the same bits, tested). `FastBooster.predict_start` runs that predict on a
  thread of the extension's own (no Python on it; the caller scores what the thread has not begun
  when it asks for the result), so the worker decodes the next records meanwhile. Without the
  extension a batch descends all trees at once with a few numpy gathers per level (no per-call fixed
  cost, more work per row, within float32 rounding of XGBoost: tests ≤ 1e-5), so `FastBooster` uses
  numpy for small batches only (`COMPILED_MAX_ROWS`, where it measured faster) and XGBoost above.
- `ClassExplainers`: the contributions (TreeSHAP) of one class at a time, at 1/13 of the whole
  model's work. With `pipeline._ctrees` built, its `Explainer` walks that class's trees in C,
  **bit for bit** the values XGBoost's `pred_contribs` gives (same float32 operations in the same
  order), without XGBoost's fixed ~0.4 ms per call, and each tree's sums kept per branch vector
  (alerting rows look alike): ~0.01-0.03 ms per row against ~0.5 ms (BENCHMARKS.md, Pipeline,
  "Session F"); NaN takes the default branch, +-inf compare as values (XGBoost refuses inf in a
  DMatrix). Without the extension (or
  when it refuses the trees): one single-output booster per class, holding only that class's trees
  and its intercept, built from the model's own JSON, whose XGBoost TreeSHAP gives the same values.

A model this module does not understand (categorical splits, vector leaves, another objective or
booster) raises `ModelError` when compiled; `load_fast` then keeps the plain `BoosterModel`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ModelError
from pipeline.scoring import Matrix

__all__ = [
    "COMPILED_MAX_ROWS", "ClassExplainers", "CompiledTrees", "FastBooster", "NativePredict", "load_fast",
    "native_explainers", "native_trees",
]  # fmt: skip

log = logging.getLogger(__name__)
COMPILED_MAX_ROWS = 16
"""Batches up to this many rows are scored by `CompiledTrees`, larger ones by XGBoost (bench_xgboost)."""
_OBJECTIVE = "multi:softprob"
_FLT_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True)
class CompiledTrees:
    """A multi:softprob gbtree as arrays: `depth` levels of splits, then leaves, per tree."""

    depth: int
    features: NDArray[np.intp]  # (trees * internal,) split feature of each internal slot
    thresholds: NDArray[np.float32]  # (trees * internal,) go left when value < threshold
    default_left: NDArray[np.bool_]  # (trees * internal,) where a missing (NaN) value goes
    leaves: NDArray[np.float32]  # (trees * 2**depth,) leaf values
    classes: NDArray[np.float32]  # (trees, classes) one-hot: which class each tree adds to
    intercept: NDArray[np.float32]  # (classes,) base margin of each class

    @classmethod
    def from_json(cls, model: Mapping[str, Any]) -> CompiledTrees:
        """Compile XGBoost's JSON model (`Booster.save_raw("json")`); ModelError if it is not one we know."""
        try:
            trees, tree_class, intercept = _parts(model)
            depth = max(_depth(tree) for tree in trees)
            slots = [_perfect(tree, depth) for tree in trees]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"cannot compile the booster: {exc!r}") from exc
        onehot = np.zeros((len(trees), len(intercept)), dtype=np.float32)
        onehot[np.arange(len(trees)), tree_class] = 1.0
        return cls(
            depth,
            np.concatenate([s[0] for s in slots]).astype(np.intp),
            np.concatenate([s[1] for s in slots]).astype(np.float32),
            np.concatenate([s[2] for s in slots]),
            np.concatenate([s[3] for s in slots]).astype(np.float32),
            onehot,
            intercept,
        )

    @property
    def trees(self) -> int:
        """Number of trees."""
        return len(self.classes)

    def margins(self, matrix: Matrix) -> NDArray[np.float32]:
        """(rows, features) -> (rows, classes) raw margins, every tree descended level by level."""
        rows, width = matrix.shape
        internal = (1 << self.depth) - 1
        values = np.ascontiguousarray(matrix, dtype=np.float32).ravel()
        base = (np.arange(self.trees, dtype=np.intp) * internal)[None, :]
        row_base = (np.arange(rows, dtype=np.intp) * width)[:, None]
        missing = bool(np.isnan(values).any())
        slot = np.zeros((rows, self.trees), dtype=np.intp)
        for _ in range(self.depth):
            node = base + slot
            value = values[row_base + self.features[node]]
            left = value < self.thresholds[node]
            if missing:
                left |= np.isnan(value) & self.default_left[node]
            slot = 2 * slot + 2 - left
        leaf = slot - internal + (np.arange(self.trees, dtype=np.intp) << self.depth)[None, :]
        margins: NDArray[np.float32] = self.leaves[leaf] @ self.classes + self.intercept
        return margins

    def predict_proba(self, matrix: Matrix) -> Matrix:
        """Softmax of the margins (as multi:softprob does)."""
        margins = self.margins(matrix).astype(np.float64)
        margins -= margins.max(axis=1, keepdims=True)
        exp = np.exp(margins)
        probabilities: Matrix = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return probabilities


def native_trees(compiled: CompiledTrees, n_features: int) -> Any | None:
    """`compiled` as a `pipeline._ctrees.Forest` (XGBoost-exact, in C), None when the extension is not built.

    The extension checks what it is given (feature and class indices in range, sizes consistent with
    the depth) and raises ValueError otherwise, so a malformed model cannot make it read out of bounds.
    """
    try:
        from pipeline import _ctrees
    except ImportError:
        return None
    classes = np.argmax(compiled.classes, axis=1).astype(np.int32)
    return _ctrees.Forest(
        np.ascontiguousarray(compiled.features, dtype=np.int32),
        np.ascontiguousarray(compiled.thresholds, dtype=np.float32),
        np.ascontiguousarray(compiled.default_left, dtype=np.int32),
        np.ascontiguousarray(compiled.leaves, dtype=np.float32),
        classes,
        np.ascontiguousarray(compiled.intercept, dtype=np.float32),
        compiled.depth,
        n_features,
    )


def _parts(model: Mapping[str, Any]) -> tuple[list[dict[str, Any]], NDArray[np.intp], NDArray[np.float32]]:
    """Trees, each tree's class and the per-class intercept; refuses what `CompiledTrees` cannot do."""
    learner = model["learner"]
    if learner["objective"]["name"] != _OBJECTIVE:
        raise ValueError(f"objective {learner['objective']['name']}, expected {_OBJECTIVE}")
    booster = learner["gradient_booster"]
    if booster["name"] != "gbtree":
        raise ValueError(f"booster {booster['name']}, expected gbtree")
    trees: list[dict[str, Any]] = booster["model"]["trees"]
    classes = int(learner["learner_model_param"]["num_class"])
    intercept = np.asarray(_floats(learner["learner_model_param"]["base_score"]), dtype=np.float32)
    if len(intercept) == 1:
        intercept = np.repeat(intercept, classes)
    tree_class = np.asarray(booster["model"]["tree_info"], dtype=np.intp)
    if len(intercept) != classes or len(tree_class) != len(trees) or not trees:
        raise ValueError(f"{len(trees)} trees, {len(tree_class)} tree classes, {len(intercept)} intercepts")
    if tree_class.min() < 0 or tree_class.max() >= classes:
        raise ValueError("a tree adds to a class the model does not have")
    for tree in trees:
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1 or any(tree.get("split_type", ())):
            raise ValueError("vector leaves or categorical splits")
    return trees, tree_class, intercept


def _floats(text: str) -> list[float]:
    """XGBoost writes base_score as "0.5" or, per class, "[2.29E0,-1.91E-1,...]"."""
    parsed = json.loads(text) if text.lstrip().startswith("[") else [float(text)]
    return [float(v) for v in parsed]


def _depth(tree: Mapping[str, Any]) -> int:
    left, right = tree["left_children"], tree["right_children"]
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if left[node] != -1:
            stack += [(left[node], depth + 1), (right[node], depth + 1)]
    return deepest


def _perfect(
    tree: Mapping[str, Any], depth: int
) -> tuple[list[int], list[float], NDArray[np.bool_], list[float]]:
    """One tree in perfect-binary-tree slots (children of slot i: 2i+1, 2i+2); leaves copied down."""
    internal = (1 << depth) - 1
    features, thresholds = [0] * internal, [float("inf")] * internal
    default_left = np.ones(internal, dtype=np.bool_)
    leaves = [0.0] * (1 << depth)
    left, right = tree["left_children"], tree["right_children"]
    split, condition, dleft = tree["split_indices"], tree["split_conditions"], tree["default_left"]
    stack = [(0, 0, 0)]  # (node, slot, level)
    while stack:
        node, slot, level = stack.pop()
        if left[node] == -1:  # a leaf: every slot below it (and the leaf slots) carries its value
            first, count = ((slot + 1) << (depth - level)) - 1 - internal, 1 << (depth - level)
            leaves[first : first + count] = [float(condition[node])] * count
            continue
        features[slot], thresholds[slot], default_left[slot] = int(split[node]), float(condition[node]), bool(
            dleft[node]
        )
        stack += [(left[node], 2 * slot + 1, level + 1), (right[node], 2 * slot + 2, level + 1)]
    return features, thresholds, default_left, leaves


def native_explainers(model: Mapping[str, Any], n_features: int) -> list[Any] | None:
    """One `pipeline._ctrees.Explainer` per class (TreeSHAP in C), None when the extension is not built.

    The extension checks the trees (children in range, each node reached once, depth <= 64, features
    inside a row) and raises ValueError otherwise, so a malformed model cannot make it read out of bounds.
    """
    try:
        from pipeline import _ctrees
    except ImportError:
        return None
    trees, tree_class, intercept = _parts(model)
    explainers = []
    for index, base in enumerate(intercept.tolist()):
        own = [tree for tree, c in zip(trees, tree_class, strict=True) if c == index]
        left, right, split, dleft, value, cover = (_node_array(own, key, dtype) for key, dtype in _NODES)
        sizes = np.asarray([len(tree["left_children"]) for tree in own], dtype=np.int32)
        tree_nodes = (left, right, split, value, dleft, value, cover, sizes)
        explainers.append(_ctrees.Explainer(*tree_nodes, base, n_features))
    return explainers


_NODES = (("left_children", np.int32), ("right_children", np.int32), ("split_indices", np.int32),
          ("default_left", np.int32), ("split_conditions", np.float32),
          ("sum_hessian", np.float32))  # fmt: skip
"""Node arrays of the C explainer: a split's threshold and a leaf's value are both its split condition."""


def _node_array(trees: Sequence[Mapping[str, Any]], key: str, dtype: type[np.generic]) -> NDArray[Any]:
    return np.asarray([v for tree in trees for v in tree[key]], dtype=dtype)


class ClassExplainers:
    """TreeSHAP contributions of one class at a time: in C when built, else from single-class boosters."""

    def __init__(
        self, boosters: Sequence[Any], feature_names: Sequence[str], native: Sequence[Any] | None = None
    ) -> None:
        self._boosters, self._names = list(boosters), list(feature_names)
        self.native = list(native) if native is not None else None

    @classmethod
    def from_json(
        cls, model: Mapping[str, Any], feature_names: Sequence[str], native: Sequence[Any] | None = None
    ) -> ClassExplainers:
        """One booster per class (its trees, its intercept, squared-error objective: margins unchanged),
        and the C explainers `native` (see `native_explainers`) when given."""
        import xgboost

        try:
            parts = _class_models(model)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"cannot cut the booster into classes: {exc!r}") from exc
        boosters = []
        for index, part in enumerate(parts):
            booster = xgboost.Booster()
            try:
                booster.load_model(bytearray(json.dumps(part).encode()))
            except xgboost.core.XGBoostError as exc:
                raise ModelError(f"cannot cut class {index} out of the booster: {exc}") from exc
            booster.set_param({"nthread": 1})  # a few rows: OpenMP's wake-up would cost more than it saves
            boosters.append(booster)
        return cls(boosters, feature_names, native)

    def contributions(self, matrix: Matrix, class_index: int) -> Matrix:
        """(rows, features) -> (rows, features + 1) contributions to `class_index`'s margin, bias last."""
        if self.native is not None:
            values = np.ascontiguousarray(matrix, dtype=np.float32)
            out: Matrix = np.empty((len(values), len(self._names) + 1), dtype=np.float32)
            self.native[class_index].contributions(values, out)
            return out
        import xgboost

        finite = np.clip(matrix, -_FLT_MAX, _FLT_MAX)  # a DMatrix refuses inf; no threshold tells them apart
        out = self._boosters[class_index].predict(xgboost.DMatrix(finite, nthread=1), pred_contribs=True)
        return np.asarray(out, dtype=np.float32).reshape(len(matrix), len(self._names) + 1)


def _class_models(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON of a single-output regression booster per class: its trees, its intercept."""
    trees, tree_class, intercept = _parts(model)
    learner = model["learner"]
    gbtree = learner["gradient_booster"]
    parts = []
    for index, base in enumerate(intercept.tolist()):
        own = [t for t, c in zip(trees, tree_class, strict=True) if c == index]
        trees_json = {
            **gbtree["model"],
            "trees": [dict(tree, id=i) for i, tree in enumerate(own)],
            "tree_info": [0] * len(own),
            "iteration_indptr": list(range(len(own) + 1)),
            "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": str(len(own))},
        }
        params = {**learner["learner_model_param"], "num_class": "0", "base_score": f"[{base:.9E}]"}
        objective = {"name": "reg:squarederror", "reg_loss_param": {"scale_pos_weight": "1"}}
        parts.append({**model, "learner": {  # unnamed features: a named DMatrix costs ~0.8 ms per call
            **learner, "gradient_booster": {**gbtree, "model": trees_json}, "feature_names": [],
            "feature_types": [], "learner_model_param": params, "objective": objective,
        }})
    return parts


class NativePredict:
    """The C trees' predict under way (`pipeline._ctrees.Scoring`): `done`, then `wait` for the array."""

    __slots__ = ("_classes", "_rows", "_scoring")

    def __init__(self, scoring: Any, rows: int, classes: int) -> None:
        self._scoring, self._rows, self._classes = scoring, rows, classes

    def done(self) -> bool:
        """True once the probabilities are computed (`wait` returns at once)."""
        done: bool = self._scoring.done()
        return done

    def wait(self) -> Matrix:
        """The probabilities, (rows, classes), as `FastBooster.predict_proba` gives them; once only."""
        out: Matrix = np.empty((self._rows, self._classes), dtype=np.float32)
        self._scoring.wait(out)
        return out


class FastBooster:
    """A `BoosterModel` scored by the C trees (or, without them, small batches by `CompiledTrees`),
    explained per class."""

    def __init__(
        self, base: Any, compiled: CompiledTrees, explainers: ClassExplainers, native: Any | None = None
    ) -> None:
        self.base, self.compiled, self.explainers, self.native = base, compiled, explainers, native

    @property
    def version(self) -> str:
        """The booster's version."""
        return str(self.base.version)

    @property
    def feature_version(self) -> str:
        """The booster's feature version."""
        return str(self.base.feature_version)

    @property
    def classes(self) -> tuple[str, ...]:
        """The booster's classes."""
        return tuple(self.base.classes)

    @property
    def thresholds(self) -> Mapping[str, float]:
        """The booster's thresholds."""
        thresholds: Mapping[str, float] = self.base.thresholds
        return thresholds

    def predict_proba(self, matrix: Matrix) -> Matrix:
        """The C trees (XGBoost's exact values) when built; else numpy trees for small batches (no fixed
        cost), XGBoost for large ones."""
        if self.native is not None:
            values = np.ascontiguousarray(matrix, dtype=np.float32)
            out: Matrix = np.empty((len(values), len(self.compiled.intercept)), dtype=np.float32)
            self.native.predict(values, out)
            return out
        if len(matrix) <= COMPILED_MAX_ROWS:
            return self.compiled.predict_proba(matrix)
        probabilities: Matrix = self.base.predict_proba(matrix)
        return probabilities

    def predict_start(self, matrix: Matrix) -> NativePredict | None:
        """`predict_proba(matrix)` on a thread of the C trees' own (`Forest.predict_start`: the matrix
        is copied, the thread runs no Python), or None when they are not built: then the caller scores
        synchronously (numpy and XGBoost paths are left on the caller's thread)."""
        if self.native is None:
            return None
        values = np.ascontiguousarray(matrix, dtype=np.float32)
        return NativePredict(self.native.predict_start(values), len(values), len(self.compiled.intercept))

    def contributions(self, matrix: Matrix) -> Matrix:
        """Every class's contributions (the whole model's `pred_contribs`)."""
        contributions: Matrix = self.base.contributions(matrix)
        return contributions

    def class_contributions(self, matrix: Matrix, class_index: int) -> Matrix:
        """One class's contributions, (rows, features + 1), bias last."""
        return self.explainers.contributions(matrix, class_index)


def load_fast(base: Any, booster_path: Path, feature_names: Sequence[str]) -> Any:
    """`base` wrapped in a `FastBooster`, or `base` itself (logged) when its booster cannot be compiled."""
    import xgboost

    try:
        booster = xgboost.Booster()
        booster.load_model(str(booster_path))
        model = json.loads(bytes(booster.save_raw("json")))
        compiled = CompiledTrees.from_json(model)
        native = _c_explainers(base, model, len(feature_names))
        explainers = ClassExplainers.from_json(model, feature_names, native)
    except (ModelError, xgboost.core.XGBoostError, OSError, ValueError) as exc:
        log.warning("model %s: scoring with XGBoost only (cannot compile %s: %s)",
                    base.version, booster_path, exc)
        return base
    try:
        native = native_trees(compiled, len(feature_names))
    except ValueError as exc:  # the extension refused the layout: numpy trees and XGBoost still work
        log.warning("model %s: C trees refused it (%s); numpy and XGBoost score it", base.version, exc)
        native = None
    else:
        if native is None:
            log.info("model %s: pipeline._ctrees is not built; numpy and XGBoost score it", base.version)
        else:
            log.info("model %s: C trees score it (kernel %s)", base.version, _kernel())
    return FastBooster(base, compiled, explainers, native)


def _kernel() -> str:
    from pipeline import _ctrees

    name: str = _ctrees.kernel()
    return name


def _c_explainers(base: Any, model: Mapping[str, Any], n_features: int) -> list[Any] | None:
    """`native_explainers`, or None (logged) when not built or refused: XGBoost then explains."""
    try:
        native = native_explainers(model, n_features)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        log.warning("model %s: C TreeSHAP refused it (%s); XGBoost explains", base.version, exc)
        return None
    if native is None:
        log.info("model %s: pipeline._ctrees is not built; XGBoost explains", base.version)
    return native
