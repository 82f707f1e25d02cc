"""TreeSHAP in C (`pipeline._ctrees.Explainer`): XGBoost's `pred_contribs` bit for bit, and never a crash.

An alert's top features come from these values, so the C path must give exactly what XGBoost gave
(same names, same order, same numbers in the alert), for every class of the committed model (whatever
model is committed: it is loaded, never pinned), on real rows, on rows whose values sit on both sides
of every split, with missing values (the split's default branch) and infinities. Its construction
and its calls must refuse malformed trees and matrices with a clear error, since a read out of bounds
in C kills the worker; those cases run once more in a child with the debug allocator.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cext_hostile import CHILD, isolated
from test_compiled_model import _tiny_booster, committed, real_rows

from pipeline.compiled_model import ClassExplainers, FastBooster, _class_models, load_fast, native_explainers
from pipeline.features import FEATURE_NAMES
from pipeline.scoring import CLASSES, MODEL_DIR, Matrix, Scorer

xgboost = pytest.importorskip("xgboost")
NOT_BUILT = "pipeline._ctrees is not built: `python setup.py build_ext --inplace` (gcc)"
FLT_MAX = float(np.finfo(np.float32).max)


@cache
def model_json() -> dict[str, Any]:
    booster = xgboost.Booster()
    booster.load_model(str(MODEL_DIR / "model.ubj"))
    return json.loads(bytes(booster.save_raw("json")))  # type: ignore[no-any-return]


@cache
def by_xgboost() -> ClassExplainers:
    """The fallback: XGBoost TreeSHAP on single-class boosters (the whole model's values, tested there)."""
    return ClassExplainers.from_json(model_json(), FEATURE_NAMES)


@cache
def native() -> list[Any]:
    """The C explainers of the committed model, one per class, shared by the tests (their memo warms up)."""
    explainers = native_explainers(model_json(), len(FEATURE_NAMES))
    assert explainers is not None, NOT_BUILT
    return explainers


def _c(rows: Matrix, class_index: int) -> Matrix:
    out = np.empty((len(rows), len(FEATURE_NAMES) + 1), np.float32)
    native()[class_index].contributions(np.ascontiguousarray(rows, np.float32), out)
    return out


def _bits(matrix: Matrix) -> bytes:
    return np.ascontiguousarray(matrix, dtype=np.float32).tobytes()


@cache
def straddling_rows(count: int = 96) -> Matrix:
    """Rows whose used features sit just below, at or just above the model's own thresholds, some NaN."""
    rng = np.random.default_rng(5)
    splits = [
        (t["split_indices"][i], t["split_conditions"][i])
        for t in _trees()
        for i, child in enumerate(t["left_children"])
        if child != -1
    ]
    rows = np.zeros((count, len(FEATURE_NAMES)), np.float32)
    for row in rows:
        for j in rng.choice(len(splits), size=40):
            feature, threshold = splits[j]
            row[feature] = np.float32(threshold) * np.float32(rng.choice([0.5, 1.0, 1.5])) + rng.choice(
                [-1, 0, 1]
            )
    rows[rng.random(rows.shape) < 0.02] = np.nan
    return rows


def _trees() -> list[dict[str, Any]]:
    return model_json()["learner"]["gradient_booster"]["model"]["trees"]  # type: ignore[no-any-return]


# --- equal to XGBoost --------------------------------------------------------------------------------


@pytest.mark.parametrize("class_index", range(len(CLASSES)))
def test_every_class_is_explained_bit_for_bit_as_xgboost_on_real_and_straddling_rows(
    class_index: int,
) -> None:
    real = real_rows()
    missing = real[:60].copy()
    missing[::3, ::4] = np.nan  # the default branch of every split those features reach
    rows = np.concatenate([real, missing, straddling_rows()])
    assert _bits(_c(rows, class_index)) == _bits(by_xgboost().contributions(rows, class_index))


def test_infinite_values_go_where_the_largest_finite_ones_go() -> None:
    """XGBoost refuses inf in a DMatrix; the C path compares it (the predictor's rule): no finite split
    threshold separates inf from FLT_MAX, so the values must be XGBoost's for the row with FLT_MAX. The
    XGBoost fallback clips inf to +-FLT_MAX itself, so an inf row is explained, not an error."""
    used = np.asarray(
        [
            c
            for t in _trees()
            for c, left in zip(t["split_conditions"], t["left_children"], strict=True)
            if left != -1
        ]
    )
    assert np.isfinite(used).all() and np.abs(used).max() < FLT_MAX
    rows = straddling_rows()[:30].copy()
    rows[::2, ::5], rows[1::2, 3::7] = np.inf, -np.inf
    finite = np.nan_to_num(rows, nan=np.nan, posinf=FLT_MAX, neginf=-FLT_MAX)
    for class_index in (0, len(CLASSES) - 1):
        assert _bits(_c(rows, class_index)) == _bits(by_xgboost().contributions(finite, class_index))
        assert _bits(by_xgboost().contributions(rows, class_index)) == _bits(_c(rows, class_index))


def test_contributions_add_up_to_the_margin_the_c_trees_score() -> None:
    """What an alert says about why adds up to what it scored (SHAP's local accuracy), class by class."""
    _, fast = committed()
    assert fast.native is not None, NOT_BUILT
    rows = np.concatenate([real_rows(), straddling_rows()])
    margins = np.empty((len(rows), len(CLASSES)), np.float32)
    fast.native.margins(rows, margins)
    for class_index in range(len(CLASSES)):
        total = _c(rows, class_index).astype(np.float64).sum(axis=1)
        assert np.abs(total - margins[:, class_index]).max() <= 1e-4 * max(1.0, np.abs(margins).max())


@pytest.mark.parametrize("depth", [3, 6, 8, 12])
def test_deep_trees_splitting_again_on_a_feature_are_explained_as_xgboost(depth: int) -> None:
    """Trees deeper than the committed model's, where a path meets a feature twice (UNWIND); at depth 6
    (up to 63 splits: keyed tables) random rows are more branch vectors than a tree's table keeps, at 8
    and 12 (more than 64 splits, leaves deeper than 6) every tree is walked and no leaf memo is used."""
    model = _tiny_booster(rows=3000, native=False, max_depth=depth, min_child_weight=0)
    rng = np.random.default_rng(depth)
    rows = rng.random((600, 6), dtype=np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    rows[rng.random(rows.shape) < 0.2] = 0.0
    rows = np.concatenate([rows, rows[::-1]])  # every row twice: the second time from the tables
    native = native_explainers(model, 6)
    assert native is not None, NOT_BUILT
    repeated = any(_repeats(t) for t in model["learner"]["gradient_booster"]["model"]["trees"])
    assert repeated or depth == 3
    for class_index, part in enumerate(_class_models(model)):
        booster = xgboost.Booster()
        booster.load_model(bytearray(json.dumps(part).encode()))
        expected = booster.predict(xgboost.DMatrix(rows), pred_contribs=True)
        out = np.empty((len(rows), 7), np.float32)
        native[class_index].contributions(rows, out)
        assert _bits(out) == _bits(expected)


def _repeats(tree: dict[str, Any], node: int = 0, seen: tuple[int, ...] = ()) -> bool:
    left = tree["left_children"][node]
    if left == -1:
        return False
    feature = tree["split_indices"][node]
    return feature in seen or any(
        _repeats(tree, child, (*seen, feature)) for child in (left, tree["right_children"][node])
    )


def test_a_rows_values_do_not_depend_on_the_rows_explained_before_it() -> None:
    """Trees keep their sums per branch vector: a fresh explainer, one row at a time, in reverse order,
    gives the same bits as one call on every row once the tables are warm."""
    rows = np.concatenate([straddling_rows(), real_rows()])
    _c(rows, 4)
    warm = _c(rows, 4)
    fresh = native_explainers(model_json(), len(FEATURE_NAMES))
    assert fresh is not None, NOT_BUILT
    one = np.empty((1, len(FEATURE_NAMES) + 1), np.float32)
    for i in reversed(range(len(rows))):
        fresh[4].contributions(rows[i : i + 1], one)
        assert _bits(one[0]) == _bits(warm[i]), i


def test_alerts_name_the_same_top_features_in_the_same_order_with_either_explainer() -> None:
    base, fast = committed()
    assert fast.explainers.native is not None, NOT_BUILT
    rows = np.concatenate([real_rows(), straddling_rows()])
    picks = list(range(0, len(rows), 3))
    classes = [1 + i % (len(CLASSES) - 1) for i in picks]
    by_c = Scorer(fast).explain(rows, picks, classes, FEATURE_NAMES)
    fallback = FastBooster(base, fast.compiled, by_xgboost(), fast.native)
    assert repr(by_c) == repr(Scorer(fallback).explain(rows, picks, classes, FEATURE_NAMES))  # NaN values too
    assert sum(len(v) for v in by_c.values()) > len(picks)  # real explanations, not empty lists


# --- fallback: XGBoost explains when the extension is not built or refuses the trees -------------------


def test_without_the_extension_xgboost_explains(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pipeline

    monkeypatch.delattr(pipeline, "_ctrees", raising=False)
    monkeypatch.setitem(sys.modules, "pipeline._ctrees", None)  # the import fails as if it was never built
    assert native_explainers(model_json(), len(FEATURE_NAMES)) is None
    base, _ = committed()
    with caplog.at_level(logging.INFO):
        fast = load_fast(base, MODEL_DIR / "model.ubj", FEATURE_NAMES)
    assert isinstance(fast, FastBooster) and fast.explainers.native is None
    assert "XGBoost explains" in caplog.text
    rows = real_rows()[:5]
    assert _bits(fast.class_contributions(rows, 3)) == _bits(base.contributions(rows)[:, 3, :])


def test_trees_the_extension_refuses_are_explained_by_xgboost(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(model: Any, n_features: int) -> None:
        raise ValueError("node 3 of 9: children 40, 41 out of range")

    monkeypatch.setattr("pipeline.compiled_model.native_explainers", refuse)
    base, _ = committed()
    with caplog.at_level(logging.WARNING):
        fast = load_fast(base, MODEL_DIR / "model.ubj", FEATURE_NAMES)
    assert isinstance(fast, FastBooster) and fast.explainers.native is None and fast.native is not None
    assert "C TreeSHAP refused" in caplog.text


# --- independent of XGBoost: exact Shapley values of small trees -----------------------------------------

WIDTH = 4


@st.composite
def small_trees(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """A random tree as nested dicts: covers positive and consistent (a node's is its children's sum)."""
    if depth >= 4 or draw(st.integers(0, 2)) == 0:
        return {"value": draw(st.floats(-4, 4, width=32)), "cover": draw(st.floats(0.25, 50, width=32))}
    left, right = draw(small_trees(depth + 1)), draw(small_trees(depth + 1))
    return {
        "feature": draw(st.integers(0, WIDTH - 1)),
        "threshold": draw(st.sampled_from([-1.0, 0.0, 0.5, 2.0])),
        "default_left": draw(st.booleans()),
        "left": left,
        "right": right,
        "cover": float(np.float32(left["cover"]) + np.float32(right["cover"])),
    }


def _flatten(tree: dict[str, Any]) -> dict[str, list[Any]]:
    """XGBoost's JSON node arrays (breadth first, as it numbers nodes)."""
    nodes, queue = [], [tree]
    while queue:
        nodes.append(queue.pop(0))
        queue += [nodes[-1][side] for side in ("left", "right") if side in nodes[-1]]
    index = {id(node): i for i, node in enumerate(nodes)}
    return {
        "left_children": [index[id(n["left"])] if "left" in n else -1 for n in nodes],
        "right_children": [index[id(n["right"])] if "right" in n else -1 for n in nodes],
        "split_indices": [n.get("feature", 0) for n in nodes],
        "split_conditions": [n.get("threshold", n.get("value")) for n in nodes],
        "default_left": [int(n.get("default_left", False)) for n in nodes],
        "sum_hessian": [n["cover"] for n in nodes],
    }


def _explainer(trees: Sequence[dict[str, Any]], base: float = 0.25, width: int = WIDTH) -> Any:
    from pipeline import _ctrees

    flat = [_flatten(tree) for tree in trees]

    def cat(key: str, dtype: Any) -> Any:
        return np.asarray([v for f in flat for v in f[key]], dtype=dtype)

    values = cat("split_conditions", np.float32)
    return _ctrees.Explainer(
        cat("left_children", np.int32),
        cat("right_children", np.int32),
        cat("split_indices", np.int32),
        values,
        cat("default_left", np.int32),
        values,
        cat("sum_hessian", np.float32),
        np.asarray([len(f["left_children"]) for f in flat], np.int32),
        base,
        width,
    )


def _expected(tree: dict[str, Any], row: Sequence[float], known: frozenset[int]) -> float:
    """E[tree(x) | the features in `known` are the row's], others following the training covers."""
    if "value" in tree:
        return float(tree["value"])
    if tree["feature"] in known:
        v = row[tree["feature"]]
        left = tree["default_left"] if math.isnan(v) else v < tree["threshold"]
        return _expected(tree["left" if left else "right"], row, known)
    total = 0.0
    for side in ("left", "right"):
        total += _expected(tree[side], row, known) * tree[side]["cover"] / tree["cover"]
    return total


def _shapley(trees: Sequence[dict[str, Any]], row: Sequence[float]) -> list[float]:
    """Shapley values by their definition: every subset of the other features, weighted."""
    phi = [0.0] * (WIDTH + 1)
    for tree in trees:
        phi[WIDTH] += _expected(tree, row, frozenset())
        for i in range(WIDTH):
            others = [f for f in range(WIDTH) if f != i]
            for size in range(WIDTH):
                weight = math.factorial(size) * math.factorial(WIDTH - size - 1) / math.factorial(WIDTH)
                for subset in itertools.combinations(others, size):
                    known = frozenset(subset)
                    phi[i] += weight * (_expected(tree, row, known | {i}) - _expected(tree, row, known))
    return phi


ROW_VALUES = st.sampled_from([-2.0, -1.0, 0.0, -0.0, 0.5, 1.0, 3.0, np.inf, -np.inf, np.nan, 1e-45])


@settings(max_examples=60, deadline=None)
@given(st.lists(small_trees(), min_size=1, max_size=3), st.lists(ROW_VALUES, min_size=WIDTH, max_size=WIDTH))
def test_the_c_values_are_the_shapley_values_of_the_trees(
    trees: list[dict[str, Any]], row: list[float]
) -> None:
    out = np.empty((1, WIDTH + 1), np.float32)
    _explainer(trees).contributions(np.asarray([row], np.float32), out)
    expected = _shapley(trees, row)
    expected[WIDTH] += float(np.float32(0.25))
    assert np.allclose(out[0], expected, rtol=1e-4, atol=1e-4), (out[0], expected)


# --- hostile input: a clear error, never a crash --------------------------------------------------------

STUMP = {
    "feature": 1,
    "threshold": 0.5,
    "default_left": True,
    "cover": 3.0,
    "left": {"value": 1.0, "cover": 1.0},
    "right": {"value": -2.0, "cover": 2.0},
}


def _stump_arrays(**changes: Any) -> dict[str, Any]:
    flat = _flatten(STUMP)
    values = np.asarray(flat["split_conditions"], np.float32)
    arrays = {
        "left": np.asarray(flat["left_children"], np.int32),
        "right": np.asarray(flat["right_children"], np.int32),
        "features": np.asarray(flat["split_indices"], np.int32),
        "thresholds": values,
        "default_left": np.asarray(flat["default_left"], np.int32),
        "values": values,
        "covers": np.asarray(flat["sum_hessian"], np.float32),
        "sizes": np.asarray([3], np.int32),
        "base": 0.5,
        "n_features": WIDTH,
    }
    return {**arrays, **changes}


BAD_TREES: dict[str, tuple[dict[str, Any], type[Exception], str]] = {
    "a child outside its tree": ({"left": np.asarray([3, -1, -1], np.int32)}, ValueError, "out of range"),
    "a negative child": ({"right": np.asarray([-7, -1, -1], np.int32)}, ValueError, "out of range"),
    "a child that is the root (a cycle)": (
        {"left": np.asarray([0, -1, -1], np.int32)},
        ValueError,
        "out of range",
    ),
    "one child twice": ({"right": np.asarray([1, -1, -1], np.int32)}, ValueError, "twice"),
    "a leaf with one child": ({"left": np.asarray([1, 2, -1], np.int32)}, ValueError, "out of range"),
    "a split on a feature outside the row": (
        {"features": np.asarray([WIDTH, 0, 0], np.int32)},
        ValueError,
        "feature",
    ),
    "sizes past the nodes": ({"sizes": np.asarray([4], np.int32)}, ValueError, "sizes"),
    "sizes short of the nodes": ({"sizes": np.asarray([2], np.int32)}, ValueError, "sizes"),
    "an empty tree": ({"sizes": np.asarray([0, 3], np.int32)}, ValueError, "sizes"),
    "no tree": ({"sizes": np.asarray([], np.int32)}, ValueError, "sizes|no tree"),
    "node arrays of different lengths": ({"covers": np.ones(2, np.float32)}, ValueError, "lengths"),
    "float64 covers": ({"covers": np.ones(3)}, TypeError, "format 'f'"),
    "int64 children": ({"left": np.asarray([1, -1, -1])}, TypeError, "format 'i'"),
    "no feature": ({"n_features": 0}, ValueError, "n_features"),
}


@pytest.mark.parametrize("case", sorted(BAD_TREES))
def test_malformed_trees_are_refused_with_a_clear_error(case: str) -> None:
    from pipeline import _ctrees

    changes, error, message = BAD_TREES[case]
    with pytest.raises(error, match=message):
        _ctrees.Explainer(**_stump_arrays(**changes))


def test_a_tree_deeper_than_64_is_refused_and_64_is_explained() -> None:
    """A chain (each split's right child splits again): the recursion and the path are bounded by 64."""
    for depth, ok in ((64, True), (65, False)):
        tree: dict[str, Any] = {"value": 1.0, "cover": 1.0}
        for level in range(depth):
            tree = {
                "feature": level % WIDTH,
                "threshold": float(level),
                "default_left": False,
                "left": {"value": -1.0, "cover": 1.0},
                "right": tree,
                "cover": tree["cover"] + 1.0,
            }
        if ok:
            out = np.empty((2, WIDTH + 1), np.float32)
            _explainer([tree]).contributions(np.asarray([[100.0] * WIDTH, [np.nan] * WIDTH], np.float32), out)
            assert np.isfinite(out).all()
        else:
            with pytest.raises(ValueError, match="deeper than 64"):
                _explainer([tree])


def test_zero_and_nan_covers_give_nan_or_inf_values_not_a_crash() -> None:
    for covers in ([0.0, 0.0, 0.0], [np.nan, 1.0, 2.0], [3.0, 0.0, 3.0]):
        out = np.empty((1, WIDTH + 1), np.float32)
        explainer = _make(_stump_arrays(covers=np.asarray(covers, np.float32)))
        explainer.contributions(np.zeros((1, WIDTH), np.float32), out)
        assert out[0, 0] == 0.0 and out[0, 2] == 0.0  # features no split reads


def _make(arrays: dict[str, Any]) -> Any:
    from pipeline import _ctrees

    return _ctrees.Explainer(**arrays)


def _out(rows: int, width: int = WIDTH + 1) -> Any:
    return np.empty((rows, width), np.float32)


ODD_CALLS: dict[str, tuple[Any, Any, type[Exception], str]] = {
    "float64 matrix": (np.zeros((2, WIDTH)), _out(2), TypeError, "format 'f'"),
    "big-endian matrix": (np.zeros((2, WIDTH), ">f4"), _out(2), TypeError, "format 'f'"),
    "a list": ([[0.0] * WIDTH] * 2, _out(2), TypeError, "bytes-like"),
    "strided matrix": (np.zeros((2, 2 * WIDTH), np.float32)[:, ::2], _out(2), ValueError, "contiguous"),
    "wider matrix": (np.zeros((2, WIDTH + 1), np.float32), _out(2), ValueError, "features"),
    "fewer out rows": (np.zeros((3, WIDTH), np.float32), _out(2), ValueError, "features"),
    "out without the bias column": (np.zeros((2, WIDTH), np.float32), _out(2, WIDTH), ValueError, "bias"),
    "read-only out": (
        np.zeros((2, WIDTH), np.float32),
        np.broadcast_to(np.float32(0), (2, WIDTH + 1)),
        ValueError,
        "read-only|contiguous|writable",
    ),
    "float64 out": (np.zeros((2, WIDTH), np.float32), np.empty((2, WIDTH + 1)), TypeError, "format 'f'"),
}


@pytest.mark.parametrize("case", sorted(ODD_CALLS))
def test_odd_matrices_are_refused_with_a_clear_error(case: str) -> None:
    matrix, out, error, message = ODD_CALLS[case]
    with pytest.raises((error, BufferError), match=message):
        _make(_stump_arrays()).contributions(matrix, out)


def test_zero_rows_and_raw_float_buffers_are_explained() -> None:
    explainer = _make(_stump_arrays())
    explainer.contributions(np.zeros((0, WIDTH), np.float32), _out(0))
    row = np.asarray([[0.0, 1.0, 0.0, 0.0]], np.float32)  # feature 1 >= 0.5: goes right, to -2
    out = _out(1)
    explainer.contributions(memoryview(bytearray(row.tobytes())).cast("f"), out)
    mean = np.float32(
        (np.float32(1.0) * np.float32(1.0) + np.float32(-2.0) * np.float32(2.0)) / np.float32(3.0)
    )
    assert out[0, WIDTH] == np.float32(mean + np.float32(0.5)) == np.float32(explainer.bias)
    assert out[0, 1] == np.float32(-2.0) - mean and out[0, [0, 2, 3]].tolist() == [0.0, 0.0, 0.0]


def test_an_explainer_cannot_be_initialised_twice_even_after_a_failed_first_try() -> None:
    from pipeline import _ctrees

    explainer = _make(_stump_arrays())
    with pytest.raises(RuntimeError, match="already initialised"):
        explainer.__init__(**_stump_arrays())
    fresh = _ctrees.Explainer.__new__(_ctrees.Explainer)
    with pytest.raises(ValueError, match="out of range"):
        fresh.__init__(**_stump_arrays(left=np.asarray([9, -1, -1], np.int32)))  # type: ignore[misc]
    with pytest.raises(RuntimeError, match="already initialised"):
        fresh.__init__(**_stump_arrays())  # type: ignore[misc]
    with pytest.raises(RuntimeError, match="not initialised"):
        fresh.contributions(np.zeros((1, WIDTH), np.float32), _out(1))


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the child run")
def test_this_file_passes_again_under_the_debug_allocator_in_a_child() -> None:
    """Every in-process case above once more with PYTHONMALLOC=debug -X dev: a crash is reported here."""
    code = f"import sys, pytest; sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', {__file__!r}]))"
    out = isolated(code)
    assert " passed" in out and "failed" not in out
