"""The short cuts of an incident's glue give what the general code gives.

A flush's incidents run cache-cold in the worker, so their small steps were made cheaper (session I):
an alert's techniques come from the row's counters read once as Python floats and are remembered per
(indicator mask, counters fired) instead of `np.flatnonzero` and a sort per incident; a root never
alerted skips the parse of its alert mark; the model's tactic scores (floats in [0, 1]) are copied
without `_probability` per value. Each is checked here against the general code it short-cuts.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import detect, incident
from pipeline.behaviour import COUNTER_TECHNIQUES, Counter
from pipeline.features import N_FEATURES
from pipeline.indicators import LONE_INDICATORS, indicator_techniques

_COUNTER_VALUES = st.sampled_from([0.0, -0.0, 1.0, 3.0, float("nan"), float("inf"), 1e-45])


def _reference_techniques(mask: int, values: np.ndarray) -> tuple[str, ...]:
    """What `_techniques` computed before: numpy's non-zero columns, then a set and a sort."""
    fired = np.flatnonzero(values[detect._SUB_OFFSET : detect._SUB_OFFSET + len(Counter)])
    lone = np.flatnonzero(values[detect._LONE_OFFSET : detect._LONE_OFFSET + 2 * len(LONE_INDICATORS)])
    found = set(indicator_techniques(mask))
    found.update(t for i in fired.tolist() for t in COUNTER_TECHNIQUES.get(Counter(i), ()))
    found.update(t for i in lone.tolist() for t in LONE_INDICATORS[i % len(LONE_INDICATORS)].techniques)
    return tuple(sorted(found))


@settings(max_examples=200, deadline=None)
@given(
    mask=st.integers(0, (1 << 40) - 1),
    counters=st.lists(st.tuples(st.integers(0, len(Counter) - 1), _COUNTER_VALUES), max_size=12),
    lone=st.lists(st.tuples(st.integers(0, 2 * len(LONE_INDICATORS) - 1), _COUNTER_VALUES), max_size=6),
)
def test_techniques_equal_numpys_nonzero_columns(
    mask: int, counters: list[tuple[int, float]], lone: list[tuple[int, float]]
) -> None:
    row = np.zeros(N_FEATURES, dtype=np.float32)
    for column, value in counters:
        row[detect._SUB_OFFSET + column] = value
    for column, value in lone:  # own lone-command columns, then ancestors'
        row[detect._LONE_OFFSET + column] = value
    assert detect._techniques(mask, row) == _reference_techniques(mask, row)
    assert detect._techniques(mask, row) == _reference_techniques(mask, row)  # remembered: the same answer


def test_a_nan_counter_names_its_techniques_and_a_negative_zero_does_not() -> None:
    with_technique = next(i for i in range(len(Counter)) if COUNTER_TECHNIQUES.get(Counter(i)))
    row = np.zeros(N_FEATURES, dtype=np.float32)
    row[detect._SUB_OFFSET + with_technique] = np.nan
    assert set(COUNTER_TECHNIQUES[Counter(with_technique)]) <= set(detect._techniques(0, row))
    row[detect._SUB_OFFSET + with_technique] = -0.0
    assert detect._techniques(0, row) == ()


_MARKS = st.sampled_from([None, "", "Execution:high", "Execution:medium,Impact:critical", "junk", "A:b:c,,"])
_TACTICS = st.sampled_from(["Execution", "Impact", "Discovery"])
_BANDS = st.sampled_from(["medium", "high", "critical"])  # RowScore.band's


@settings(max_examples=200, deadline=None)
@given(mark=_MARKS, tactic=_TACTICS, band=_BANDS)
def test_marks_of_roots_never_alerted_read_as_the_parse_reads_them(
    mark: str | None, tactic: str, band: str
) -> None:
    parsed = detect._marks(mark)
    expected = tactic in parsed and detect._BANDS.index(parsed[tactic]) >= detect._BANDS.index(band)
    assert detect._already_alerted(mark, tactic, band) is expected
    written = dict(parsed, **{tactic: band})
    assert detect._with_mark(mark, tactic, band) == ",".join(f"{t}:{b}" for t, b in sorted(written.items()))


@settings(max_examples=200, deadline=None)
@given(
    scores=st.dictionaries(
        st.sampled_from(["Execution", "Impact", "Discovery", "Collection"]),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2),
                  st.floats(0, 1).map(np.float32), st.floats(0, 1).map(np.float64)),
    )
)  # fmt: skip
def test_tactic_scores_are_what_probability_makes_of_each(scores: dict[str, float]) -> None:
    got = incident._probabilities(scores)
    expected = {k: incident._probability(v) for k, v in scores.items()}
    assert repr(got) == repr(expected)  # repr: NaN equal to NaN, float types the same
    assert all(type(v) is float for v in got.values())
