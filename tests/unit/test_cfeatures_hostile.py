"""Hostile and odd input against `pipeline._cfeatures`: the numpy bytes or a typed error, never a crash.

The feature rows run in the worker for every scored process, so a fault in C (a read out of
bounds, a freed object used) would kill the worker, not one row. This file gives the extension:

- forests hypothesis draws with extreme values where the worker has ints: evidence records and
  connection times near the int64 limits, indicator masks up to 2**64 - 1, lifetimes that span
  more than 2**53 ms, parent links into cycles and unknown keys, descendants under several window
  starts -- C must fill the bytes numpy fills;
- the same forests' row contexts: C must gather the nodes Python gathers;
- callers that change things while a row is computed: a `static_facts` that empties the row's
  descendant list, drops the nodes or raises; matrices of the wrong dtype, byte order, layout, width
  or row count, read-only, and layouts out of range;
- many calls, including failing ones, with reference counts checked after them (a leaked reference
  per row would grow a worker's memory without bound).
Anything that could crash runs once more in a child interpreter with `PYTHONMALLOC=debug -X dev`.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cext_hostile import CHILD, isolated
from test_features_compiled import forest_of
from test_tree_compiled import stream

from pipeline import features
from pipeline.behaviour import Counter
from pipeline.features import N_FEATURES, RowContext, row_context
from pipeline.lexicon import ImageClass
from pipeline.tree import DeviceForest, ProcessNode, TreeLimits

NOT_BUILT = "pipeline._cfeatures is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
I64 = 2**63 - 1
IMAGES = [
    "",
    r"C:\Windows\System32\cmd.exe",
    r"C:\Users\a\AppData\Local\Temp\x.exe",
    "/usr/bin/bash",
    "é" * 300,
]


def rows_c() -> Any:
    assert features._compiled_rows is not None, NOT_BUILT
    return features._compiled_rows


def both(contexts: list[RowContext]) -> tuple[bytes, bytes]:
    expected = np.zeros((len(contexts), N_FEATURES), np.float32)
    features._numpy_rows(expected, contexts)
    got = np.zeros_like(expected)
    rows_c()(contexts, got, features.static_facts, features._C_LAYOUT, ProcessNode)
    return expected.tobytes(), got.tobytes()


node_spec = st.fixed_dictionaries(
    {
        "parent": st.one_of(st.none(), st.integers(0, 12), st.just(99)),
        "image": st.sampled_from(IMAGES),
        "cls": st.sampled_from(list(ImageClass)),
        "started": st.booleans(),
        "start_ms": st.one_of(st.none(), st.integers(-(2**60), 2**60)),
        "end_ms": st.one_of(st.none(), st.integers(-(2**60), 2**60)),
        "last_ms": st.integers(-(2**40), 2**40),
        "cmd_mask": st.integers(0, 2**64 - 1),
        "evidence": st.lists(st.integers(-(2**63), I64), max_size=12),
        "conns": st.lists(
            st.tuples(
                st.integers(-(2**63), I64), st.sampled_from(["10.0.0.1", "::1", "é"]), st.integers(0, 70000)
            ),
            max_size=5,
        ),
    }
)


class OddNode(ProcessNode):
    """A subclass that redefines the properties the C rows compute from slots for a plain ProcessNode."""

    @property
    def mask(self) -> int:
        return (self.cmd_mask | self.script_mask) ^ 0b1010

    @property
    def placeholder(self) -> bool:
        return len(self.key) % 2 == 0

    @property
    def exited(self) -> bool:
        return self.last_ms % 2 == 1


def forest_from(
    specs: list[dict[str, Any]], watermark: int, max_depth: int, node_type: type[ProcessNode] = ProcessNode
) -> DeviceForest:
    forest = DeviceForest("d", "windows", TreeLimits(max_depth=max_depth))
    forest.watermark_ms = watermark
    for i, spec in enumerate(specs):
        node = node_type(f"k{i}", image=spec["image"], started=spec["started"], start_ms=spec["start_ms"])
        node.end_ms, node.last_ms, node.cmd_mask = spec["end_ms"], spec["last_ms"], spec["cmd_mask"]
        node.image_cls, node.evidence, node.conns = spec["cls"], deque(spec["evidence"]), deque(spec["conns"])
        node.parent_key = None if spec["parent"] is None else f"k{spec['parent']}"
        forest.nodes[node.key] = node
    for node in forest.nodes.values():  # cycles, self-parents, keys listed twice: walks are bounded
        if node.parent_key in forest.nodes:
            forest.nodes[node.parent_key].children += [node.key] * (1 + len(node.key) % 2)
    return forest


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(node_spec, min_size=1, max_size=14),
    watermark=st.integers(-(2**61), 2**61),
    windows=st.lists(st.integers(1, 2**62), min_size=1, max_size=3),
    max_depth=st.integers(1, 70),
)
def test_drawn_forests_with_extreme_values_give_the_numpy_bytes(
    specs: list[dict[str, Any]], watermark: int, windows: list[int], max_depth: int
) -> None:
    forest = forest_from(specs, watermark, max_depth)
    contexts = [row_context(forest, key, window) for window in windows for key in forest.nodes]
    assert contexts == python_contexts(forest, windows)
    expected, got = both(contexts)
    assert got == expected


def python_contexts(forest: DeviceForest, windows: list[int]) -> list[RowContext]:
    compiled, features._compiled_context = features._compiled_context, None
    assert compiled is not None, NOT_BUILT
    try:
        return [row_context(forest, key, window) for window in windows for key in forest.nodes]
    finally:
        features._compiled_context = compiled


def _contexts(node_type: type[ProcessNode] = ProcessNode) -> list[RowContext]:
    specs = [
        {"parent": None if i == 0 else (i - 1) // 2, "image": IMAGES[i % 5], "cls": ImageClass(i % 14),
         "started": True, "start_ms": 0, "end_ms": None, "last_ms": 10, "cmd_mask": i,
         "evidence": [10 << 8 | 3], "conns": [(10, f"10.0.0.{i}", 443)]}
        for i in range(15)
    ]  # fmt: skip
    forest = forest_from(specs, 100, 64, node_type)
    return [row_context(forest, key, 1000) for key in forest.nodes]


def test_a_subclass_that_redefines_the_node_properties_is_read_through_them() -> None:
    plain, odd = both(_contexts()), both(_contexts(OddNode))
    assert odd[1] == odd[0] and plain[1] == plain[0]
    assert odd[0] != plain[0]  # the redefined properties changed the rows, in both paths alike
    with pytest.raises(TypeError, match="node_type"):
        rows_c()(
            _contexts(), np.zeros((15, N_FEATURES), np.float32), features.static_facts, features._C_LAYOUT, 1
        )


class _Records:
    """Evidence that is not a deque: an iterable whose iterator is written in Python (it ends by raising
    StopIteration, which the C loop must take as the end, not as an error)."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Any:
        return iter(self.records.__iter__().__next__, object())  # a callable iterator, ended by StopIteration


ODD_INTS = [10 << 8 | 3, True, False, Counter.FILE_WRITE, -(5 << 8) | 7]  # bools, an IntEnum, a negative
DIGITS = [3, (2**29) << 8 | 1, -((2**40) << 8 | 2), 2**62 + 3, -(2**63)]  # one, two, three 30-bit digits


@pytest.mark.parametrize("records", [ODD_INTS, DIGITS])
@pytest.mark.parametrize("container", [deque, list, _Records])
def test_odd_ints_and_containers_of_evidence_count_as_numpy_does(records: list[Any], container: Any) -> None:
    contexts = _contexts()
    for i, ctx in enumerate(contexts):
        ctx.node.evidence = container(records)  # type: ignore[assignment]
        ctx.node.conns = container([(ts, f"10.0.0.{i % 3}", 443 + i % 2) for ts in records])  # type: ignore[assignment]
    expected, got = both([row._replace(window_start_ms=-(2**62)) for row in contexts])
    assert got == expected


def test_a_static_facts_that_changes_the_rows_or_raises_is_survived() -> None:
    contexts = _contexts()
    expected, _ = both(contexts)
    calls = 0

    def meddling(node: ProcessNode) -> tuple[float, ...]:
        nonlocal calls
        calls += 1
        for ctx in contexts:  # what a row was built from changes while rows are computed
            ctx.node.children.clear()
            ctx.node.conns.clear()
        return features.static_facts(node)

    for node in (c.node for c in contexts):
        node.static = None  # so the facts are asked for
    matrix = np.zeros((len(contexts), N_FEATURES), np.float32)
    rows_c()(list(contexts), matrix, meddling, features._C_LAYOUT, ProcessNode)
    assert calls > 0 and np.isfinite(matrix).all()
    assert matrix.tobytes() != expected  # it read the changed nodes, without faulting

    def failing(node: ProcessNode) -> tuple[float, ...]:
        raise RuntimeError("static facts failed")

    with pytest.raises(RuntimeError, match="static facts failed"):
        rows_c()(
            _contexts(), np.zeros((15, N_FEATURES), np.float32), failing, features._C_LAYOUT, ProcessNode
        )
    with pytest.raises(ValueError, match="static facts: 2 values"):
        rows_c()(
            _contexts(),
            np.zeros((15, N_FEATURES), np.float32),
            lambda node: (1.0, 2.0),
            features._C_LAYOUT,
            ProcessNode,
        )


@pytest.mark.parametrize(
    "matrix",
    [
        np.zeros((15, N_FEATURES), np.float64),
        np.zeros((15, N_FEATURES), ">f4"),
        np.zeros((N_FEATURES, 15), np.float32).T,
        np.zeros((15, N_FEATURES + 1), np.float32),
        np.zeros((14, N_FEATURES), np.float32),
        np.zeros((15, N_FEATURES, 1), np.float32),
        np.zeros(15 * N_FEATURES, np.float32),
    ],
    ids=["float64", "big-endian", "fortran", "wide", "short", "3d", "flat"],
)
def test_a_matrix_that_is_not_the_rows_is_refused(matrix: Any) -> None:
    with pytest.raises((ValueError, BufferError)):
        rows_c()(_contexts(), matrix, features.static_facts, features._C_LAYOUT, ProcessNode)


def test_a_read_only_matrix_and_other_arguments_are_refused() -> None:
    matrix = np.zeros((15, N_FEATURES), np.float32)
    matrix.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        rows_c()(_contexts(), matrix, features.static_facts, features._C_LAYOUT, ProcessNode)
    with pytest.raises(TypeError, match="RowContext"):
        rows_c()([("not", "a", "context")], np.zeros((1, N_FEATURES), np.float32), features.static_facts,
                 features._C_LAYOUT, ProcessNode)  # fmt: skip
    with pytest.raises(TypeError):
        rows_c()(_contexts(), np.zeros((15, N_FEATURES), np.float32), features.static_facts)
    rows_c()(
        [], np.zeros((0, N_FEATURES), np.float32), features.static_facts, features._C_LAYOUT, ProcessNode
    )


@pytest.mark.parametrize("at", [1, 2, 7, 11, 40, 75])
@pytest.mark.parametrize("value", [-1, N_FEATURES, 2**40, 2**70])
def test_layouts_out_of_range_are_refused(at: int, value: int) -> None:
    layout = list(features._C_LAYOUT)
    layout[at] = value
    with pytest.raises((ValueError, OverflowError)):
        rows_c()(
            _contexts(),
            np.zeros((15, N_FEATURES), np.float32),
            features.static_facts,
            tuple(layout),
            ProcessNode,
        )


def test_reference_counts_are_unchanged_after_many_calls_good_and_failing() -> None:
    contexts = _contexts()
    watched = [contexts[0].node, contexts[0].node.image, contexts[3].node, contexts[3].node.conns[0][1]]
    matrix = np.zeros((len(contexts), N_FEATURES), np.float32)
    # the first call may remember an image in the per-process caches (one reference each, kept on
    # purpose); counted after it, so the test also passes alone and not only after its file's others
    rows_c()(contexts, matrix, features.static_facts, features._C_LAYOUT, ProcessNode)
    before = [sys.getrefcount(x) for x in watched]
    for i in range(300):
        rows_c()(contexts, matrix, features.static_facts, features._C_LAYOUT, ProcessNode)
        contexts[3].node.conns.append(("x", "10.0.0.3", i))  # a time that is not an int
        with pytest.raises(TypeError):
            rows_c()(contexts, matrix, features.static_facts, features._C_LAYOUT, ProcessNode)
        contexts[3].node.conns.pop()
    assert [sys.getrefcount(x) for x in watched] == before


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        (["not a row"], TypeError),
        ([("forest", "node", "extra")], TypeError),
        (42, TypeError),
    ],
)
def test_contexts_of_rows_that_are_not_forest_node_pairs_raise(rows: Any, error: type[Exception]) -> None:
    contexts = features._compiled_contexts
    assert contexts is not None, NOT_BUILT
    with pytest.raises(error):
        contexts(rows, 300_000, RowContext, 3, 256)


def test_contexts_of_a_row_whose_node_left_the_forest_raise_key_error_either_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forest = forest_of(stream(3), None)
    gone = forest.nodes["root"]
    rows = [(forest, node) for node in forest.nodes.values()]
    forest.nodes.pop("root")
    with pytest.raises(KeyError):
        features.row_contexts(rows)
    monkeypatch.setattr(features, "_compiled_contexts", None)
    monkeypatch.setattr(features, "_compiled_context", None)
    with pytest.raises(KeyError):
        features.row_contexts(rows)
    assert gone.key == "root"


def test_an_ancestor_lookup_that_raises_propagates_from_either_walk() -> None:
    contexts = features._compiled_contexts
    assert contexts is not None, NOT_BUILT

    class Nodes(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            if key == "c1":
                raise RuntimeError("lookup failed")
            return super().get(key, default)

    forest = forest_of(stream(0, n=10), TreeLimits(max_depth=64))
    root = forest.nodes["root"]
    for i in range(20):
        parent = "root" if i == 0 else f"c{i - 1}"
        forest.nodes[f"c{i}"] = type(root)(
            f"c{i}", image="a.exe", parent_key=parent, last_ms=forest.watermark_ms
        )
    forest.nodes = Nodes(forest.nodes)
    for depth in (3, 30):
        with pytest.raises(RuntimeError, match="lookup failed"):
            contexts([(forest, forest.nodes["c3"])], 300_000, RowContext, depth, 256)


def test_contexts_refuse_negative_bounds() -> None:
    contexts = features._compiled_contexts
    assert contexts is not None, NOT_BUILT
    forest = forest_of(stream(3), None)
    rows = [(forest, node) for node in forest.nodes.values()]
    for depth, most in ((-1, 256), (3, -1)):
        with pytest.raises(ValueError, match=">= 0"):
            contexts(rows, 300_000, RowContext, depth, most)


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the child run")
def test_this_file_passes_again_under_the_debug_allocator_in_a_child() -> None:
    """Every in-process case above once more with PYTHONMALLOC=debug -X dev: a crash is reported here."""
    code = f"import sys, pytest; sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', {__file__!r}]))"
    out = isolated(code)
    assert " passed" in out and "failed" not in out


def test_contexts_of_odd_forests_are_built_or_refused_as_python_does() -> None:
    forest = forest_from([{**SPEC, "parent": 1}, {**SPEC, "parent": 0}], 100, 64)  # a two-node cycle
    forest.nodes["k0"].children += ["gone", "k0"]
    assert [row_context(forest, k) for k in forest.nodes] == python_contexts(forest, [300_000])[:2]
    forest.nodes["k1"].children.append(["unhashable"])  # type: ignore[arg-type]
    for build in (lambda: row_context(forest, "k1"), lambda: python_contexts(forest, [1])):
        with pytest.raises(TypeError):
            build()
    forest.nodes["k1"].children.pop()
    built = features._compiled_context(forest, "k0", 1, lambda *fields: fields, 3, 256)  # type: ignore[misc]
    assert type(built) is tuple and built == tuple(row_context(forest, "k0", 1))
    forest.watermark_ms = "late"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        row_context(forest, "k0")
    with pytest.raises(TypeError):
        features._compiled_context(forest, "k0", 1, RowContext, 3)  # type: ignore[misc]
    with pytest.raises(ValueError, match=">= 0"):
        features._compiled_context(forest, "k0", 1, RowContext, -1, 3)  # type: ignore[misc]


SPEC: dict[str, Any] = {
    "parent": None, "image": "a.exe", "cls": ImageClass.SHELL, "started": True, "start_ms": 0, "end_ms": None,
    "last_ms": 50, "cmd_mask": 0, "evidence": [], "conns": [],
}  # fmt: skip
