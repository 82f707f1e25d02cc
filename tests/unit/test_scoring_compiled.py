"""The C passes of a flush's scoring glue (`pipeline._ctrees.classify`, `.top_features`) equal numpy's.

`scoring.classify` (benign / named tactic / Generic per row) and `scoring.top_features_of_rows` (an
alert's eight strongest features) ran ~10 and ~6 numpy calls per flush and per class, each cache-cold
in the worker; one C pass each replaced them. The numpy code stays as the reference (`_classify`,
`_top_features_of_rows`) and the fallback, so both are run here on the same inputs: probabilities at
the float32 neighbours of the thresholds (numpy compares a float32 array with a Python float in
float32), NaN, ties between tactics, contributions with ties, ±0, NaN, ±inf and subnormals, every k;
inputs the C pass does not take go to numpy, and odd buffers raise instead of reading out of bounds.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from debug_child import passes_under_debug_allocator
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import scoring
from pipeline.scoring import CLASSES, _classify, _top_features_of_rows, classify, top_features_of_rows

_ctrees = pytest.importorskip("pipeline._ctrees", reason="pipeline._ctrees is not built (setup.py)")
CHILD = "RINGFENCE_SCORING_COMPILED_CHILD"
N = len(CLASSES)
THRESHOLDS = {name: 0.6 for name in CLASSES[1:]} | {"Discovery": 0.8903875814208985, "malicious": 0.7,
                                                     "generic": 0.9961785541305542}  # fmt: skip


def _near(value: float) -> list[float]:
    """`value` as float32 and its two float32 neighbours."""
    f = np.float32(value)
    return [float(np.nextafter(f, np.float32(-1))), float(f), float(np.nextafter(f, np.float32(2)))]


_POOL = [0.0, 1.0, 0.5, 0.3, 0.15, 1e-45, float("nan")]
_POOL += [v for t in sorted(set(THRESHOLDS.values())) for v in _near(t)]
_POOL += [1 - v for v in _near(0.7)] + [1 - v for v in _near(0.9961785541305542)]


def _same_scores(a: scoring.BatchScores, b: scoring.BatchScores) -> None:
    assert a.probabilities is b.probabilities
    for name in ("malicious", "flagged", "best", "named"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


@settings(max_examples=300, deadline=None)
@given(rows=st.integers(0, 20), seed=st.integers(0, 2**32 - 1), thresholds=st.sampled_from([THRESHOLDS, {}]))
def test_classify_in_c_equals_numpy(rows: int, seed: int, thresholds: dict[str, float]) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.choice(np.array(_POOL, dtype=np.float32), size=(rows, N))
    _same_scores(classify(probabilities, thresholds), _classify(probabilities, thresholds))


def test_a_row_just_below_a_threshold_as_float64_is_flagged_as_numpy_flags_it() -> None:
    # P(benign) = 0.3 as float32: 1 - it is 0.7 in float32 but below 0.7 in float64; numpy compares
    # with the Python float in float32, so the row is malicious, and the C pass says the same.
    probabilities = np.zeros((1, N), dtype=np.float32)
    probabilities[0, 0], probabilities[0, 3] = 0.3, 0.7
    scores = classify(probabilities, {"malicious": 0.7})
    assert float(scores.malicious[0]) < 0.7 and bool(scores.flagged[0])
    _same_scores(scores, _classify(probabilities, {"malicious": 0.7}))


def test_classify_takes_numpy_floats_and_odd_matrices_to_numpy() -> None:
    probabilities = np.zeros((2, N), dtype=np.float32)
    probabilities[:, 0], probabilities[:, 3] = 0.3, 0.7
    as_float64 = {"malicious": np.float64(0.7)}  # compared in float64 by numpy: not malicious
    assert not classify(probabilities, as_float64).flagged.any()
    _same_scores(classify(probabilities, as_float64), _classify(probabilities, as_float64))
    for odd in (probabilities.astype(np.float64), np.asfortranarray(np.tile(probabilities, (1, 1)))[:, :],
                probabilities[::-1]):  # fmt: skip
        _same_scores(classify(odd, THRESHOLDS), _classify(odd, THRESHOLDS))  # type: ignore[arg-type]


def test_classify_in_c_refuses_buffers_of_the_wrong_size_or_type() -> None:
    p = np.zeros((3, N), dtype=np.float32)
    per_class = np.zeros(N, dtype=np.float32)
    out = [np.empty(3, np.float32), np.empty(3, np.bool_), np.empty(3, np.int64), np.empty(3, np.bool_)]
    _ctrees.classify(p, 3, N, per_class, 0.5, 0.5, 0.5, *out)
    cases = [
        (p, 4, N, per_class, *out),  # more rows than the matrix holds
        (p, 3, N + 1, per_class, *out),
        (p, 3, N, per_class[:-1], *out),
        (p, 3, N, per_class, np.empty(2, np.float32), *out[1:]),  # too short an output
        (p, 3, N, per_class, out[0], np.empty(3, np.int8), *out[2:]),  # not bool
        (p.astype(np.float64), 3, N, per_class, *out),
        (p, -1, N, per_class, *out),
        (p, 3, 1, per_class, *out),
    ]
    for matrix, rows, classes, thresholds, *arrays in cases:
        with pytest.raises(ValueError):
            _ctrees.classify(matrix, rows, classes, thresholds, 0.5, 0.5, 0.5, *arrays)
    with pytest.raises(BufferError):  # read-only output
        _ctrees.classify(p, 3, N, per_class, 0.5, 0.5, 0.5, out[0], out[1], out[2], bytes(3))


_WEIGHTS = np.array([-1.5, -0.0, 0.0, 0.25, 0.25, 1.0, 3.0, 1e-30, 1e-45, np.nan, np.inf, -np.inf],
                    dtype=np.float32)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(rows=st.integers(0, 6), width=st.integers(1, 40), k=st.integers(0, 45), seed=st.integers(0, 2**32 - 1))
def test_top_features_in_c_equal_numpy(rows: int, width: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    contributions = rng.choice(_WEIGHTS, size=(rows, width + 1))
    values = rng.choice(_WEIGHTS, size=(rows, width))
    names = tuple(f"f{i}" for i in range(width))
    got = top_features_of_rows(contributions, values, names, k)
    expected = _top_features_of_rows(contributions, values, names, k)
    assert repr(got) == repr(expected)  # repr: NaN values compare equal, float types are the same


def test_top_features_of_the_models_width_keep_eight_in_order() -> None:
    rng = np.random.default_rng(7)
    contributions = rng.normal(size=(5, 322)).astype(np.float32)
    contributions[0, :8] = 50.0  # eight ties above every other: kept in column order
    values = rng.normal(size=(5, 321)).astype(np.float32)
    names = tuple(f"f{i}" for i in range(321))
    got = top_features_of_rows(contributions, values, names)
    assert [n for n, _, _ in got[0]] == [f"f{i}" for i in range(8)]
    assert got == _top_features_of_rows(contributions, values, names)
    assert all(len(row) == 8 and all(w > 0 for _, _, w in row) for row in got)


def test_top_features_take_odd_inputs_to_numpy_and_the_c_pass_refuses_odd_buffers() -> None:
    contributions = np.array([[0.5, 2.0, 0.0]], dtype=np.float32)
    values = np.array([[1.0, 2.0]], dtype=np.float32)
    names = ("a", "b")
    for k in (-1, 0, 1, 5):  # a negative k slices from the end in numpy: that path keeps it
        assert top_features_of_rows(contributions, values, names, k) == _top_features_of_rows(
            contributions, values, names, k
        )
    assert top_features_of_rows(contributions, values, ["a", "b"], 2) == [[("b", 2.0, 2.0), ("a", 1.0, 0.5)]]  # type: ignore[arg-type]
    for args in [
        (contributions, values, names, 2, 8),  # more rows than the buffers hold
        (contributions[:, :2].copy(), values, names, 1, 8),
        (contributions, values.astype(np.float64), names, 1, 8),
        (contributions, values, (), 1, 8),
        (contributions, values, names, 1, -1),
    ]:
        with pytest.raises(ValueError):
            _ctrees.top_features(*args)
    with pytest.raises(TypeError):
        _ctrees.top_features(contributions, values, ["a", "b"], 1, 8)


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the debug-allocator child")
def test_this_file_passes_under_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)
