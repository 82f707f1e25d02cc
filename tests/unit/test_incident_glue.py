"""The incident path's small shortcuts decide exactly what the longer ways did.

`pipeline.detect` walks a flagged row's parents one at a time (`DeviceForest.iter_ancestors`) instead
of listing the whole ancestor chain first, and remembers `_already_alerted` per (mark, tactic, band);
`pipeline.incident` hands the model's own tactic-score dict to the alert's validation instead of a
copy. Each must give what it replaced, on any forest, any mark, any scores and any time (`ms_text`
formats a node's time straight from its datetime instead of through `utc` and `utc_text`): a wrong
root or a wrongly skipped re-alert would change which alert the SOC gets, a wrong time the alert's
bytes.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detect import _BANDS, _already_alerted, _marks
from pipeline.incident import _probabilities, ms_text, utc, utc_text
from pipeline.node import ProcessNode
from pipeline.tree import DeviceForest, TreeLimits

_KEYS = st.sampled_from([f"p{i}" for i in range(8)])


@st.composite
def _forests(draw: st.DrawFn) -> tuple[DeviceForest, ProcessNode]:
    """A forest whose parent links may dangle, loop back or chain past the depth limit."""
    forest = DeviceForest("dev-1", "linux", TreeLimits(max_depth=draw(st.integers(1, 6))))
    keys = draw(st.lists(_KEYS, min_size=1, max_size=8, unique=True))
    for key in keys:
        parent = draw(st.one_of(st.none(), _KEYS))  # absent keys dangle; present ones may form a cycle
        forest.nodes[key] = ProcessNode(key=key, parent_key=parent)
    node = forest.nodes[draw(st.sampled_from(keys))]
    if draw(st.booleans()):  # a row's node that the forest no longer holds under its key
        node = ProcessNode(key=node.key + "-gone", parent_key=node.parent_key)
    return forest, node


@settings(max_examples=300, deadline=None)
@given(_forests())
def test_parents_are_the_ancestor_chain_one_at_a_time(case: tuple[DeviceForest, ProcessNode]) -> None:
    forest, node = case
    walked = list(forest.iter_ancestors(node.key))
    assert [id(n) for n in walked] == [id(n) for n in forest.ancestors(node.key)]


_MARK_PARTS = st.tuples(st.sampled_from(["Impact", "Execution", "Generic", "x"]),
                        st.sampled_from([*_BANDS, "low", ""]))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.none(), st.just(""), st.lists(_MARK_PARTS, max_size=4).map(
        lambda parts: ",".join(f"{t}:{b}" for t, b in parts))),
    st.sampled_from(["Impact", "Execution", "Generic"]),
    st.sampled_from(_BANDS),
)  # fmt: skip
def test_a_remembered_realert_check_answers_as_the_rule(mark: str | None, tactic: str, band: str) -> None:
    previous = _marks(mark)
    expected = tactic in previous and _BANDS.index(previous[tactic]) >= _BANDS.index(band)
    assert _already_alerted(mark, tactic, band) is expected
    assert _already_alerted(mark, tactic, band) is expected  # and again, from memory


@given(st.dictionaries(st.sampled_from(["Impact", "Execution", "Discovery"]),
                       st.one_of(st.floats(allow_nan=True), st.integers(-2, 2)), max_size=3))  # fmt: skip
def test_tactic_scores_are_handed_over_as_they_are_only_when_each_is_already_a_probability(
    scores: dict[str, float],
) -> None:
    out = _probabilities(scores)
    valid = all(type(v) is float and 0.0 <= v <= 1.0 for v in scores.values())
    assert (out is scores) is valid
    for key, value in scores.items():
        want = float(value)
        want = want if 0.0 <= want <= 1.0 else min(max(want, 0.0), 1.0)
        assert out[key] == want or (math.isnan(want) and math.isnan(out[key]))
        assert type(out[key]) is float


@given(st.integers(-30_000_000_000_000, 250_000_000_000_000))  # years ~1019-9892, any millisecond
def test_a_time_is_written_as_the_flush_clock_writes_it(ms: int) -> None:
    assert ms_text(ms) == utc_text(utc(ms))
    assert ms_text(ms).endswith("Z") and len(ms_text(ms)) == 27
