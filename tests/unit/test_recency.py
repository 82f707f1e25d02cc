"""A forest's recency order with its moves deferred (`pipeline.recency`) is the order immediate moves gave.

The fold and `apply` append the node an event names to `DeviceForest._touched` instead of moving it in
`_lru`; whatever reads or changes the order (recency_order, floods, idle eviction, placeholders,
removals) applies the pending touches first. These tests build the same streams three ways -- touches
deferred for as long as nothing reads them, the C fold moving `_lru` per event (`defer_touches(False)`),
and the order read after every single event -- and compare every observable part of the forest, and
check `apply_touches` itself (C and Python) against the rule it implements.
"""

from __future__ import annotations

import os
import random
import sys
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest
from debug_child import passes_under_debug_allocator
from forest_support import queued, snapshot, tree_path
from test_tree_compiled import SMALL, fast, stream

from pipeline import recency, tree
from pipeline.node import ProcessNode
from pipeline.tree import DeviceForest, TreeLimits

CHILD = "RINGFENCE_RECENCY_CHILD"
cforest = pytest.importorskip("pipeline._cforest", reason="pipeline._cforest is not built (build_ext)")


@pytest.fixture
def immediate() -> Iterator[None]:
    """The C fold moves `_lru` per event, as before session L (restored afterwards)."""
    was = cforest.defer_touches(False)
    try:
        yield
    finally:
        cforest.defer_touches(was)


def build(
    events: list[Any],
    limits: TreeLimits | None,
    compiled: bool,
    chunk: int,
    read_every: int | None,
    evict: bool = True,
) -> Any:
    """Apply in runs of `chunk` (cut at every 40th event too, where the forest evicts); read the order
    after every `read_every` runs (None: only at the end, through the snapshot)."""
    bounds = sorted({*range(0, len(events), chunk), *range(0, len(events), 40)})
    with tree_path(compiled):
        forest = DeviceForest(events[0].device_id, "windows", limits)
        changed: list[tuple[str, str, bool]] = []
        for run, (lo, hi) in enumerate(zip(bounds, [*bounds[1:], len(events)], strict=True)):
            assert forest.apply_run(events[lo:hi], 0, changed) == hi - lo
            if evict and hi % 40 == 0:
                forest.evict()
            if read_every is not None and run % read_every == 0:
                forest.recency_order()
    return snapshot(forest), queued(changed)


EVICTING = TreeLimits(max_nodes=12, idle_ttl_ms=60_000, exited_ttl_ms=30_000)


@pytest.mark.parametrize("limits", [None, SMALL, EVICTING])
@pytest.mark.parametrize("seed", range(8))
def test_deferred_touches_build_the_forest_that_moves_per_event_build(seed: int, limits: TreeLimits) -> None:
    events = stream(seed, n=400)
    for model in (events, fast(events)):
        reference = build(model, limits, True, chunk=1, read_every=1)  # the order read after every event
        assert build(model, limits, True, chunk=50, read_every=None) == reference
        assert build(model, limits, True, chunk=7 + seed, read_every=3) == reference
        assert build(model, limits, False, chunk=50, read_every=None) == reference


@pytest.mark.parametrize("seed", range(6))
def test_the_c_fold_moving_per_event_builds_the_same_forest(seed: int, immediate: None) -> None:
    events = fast(stream(seed, n=400))
    deferred_off = build(events, SMALL, True, chunk=50, read_every=None)
    cforest.defer_touches(True)
    assert build(events, SMALL, True, chunk=50, read_every=None) == deferred_off


def test_touches_wait_until_the_order_is_read_and_are_then_applied() -> None:
    events = fast(stream(3, n=200))
    forest = DeviceForest(events[0].device_id, "windows")
    forest.apply_run(events, 0, [])
    assert forest._touched  # pending: nothing read the order yet
    order = forest.recency_order()
    assert not forest._touched
    assert sorted(order) == sorted(forest.nodes)  # every node once, new ones included


def test_a_forest_named_by_many_events_keeps_touched_max_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "TOUCHED_MAX", 30)
    events = fast(stream(5, n=600))
    reference = build(events, None, True, chunk=1, read_every=1, evict=False)
    for compiled in (True, False):
        with tree_path(compiled):
            forest = DeviceForest(events[0].device_id, "windows")
            for lo in range(0, len(events), 20):
                forest.apply_run(events[lo : lo + 20], 0, [])
                assert len(forest._touched) <= 30 + 20 + 2  # applied once past the bound, at a run's end
        assert snapshot(forest) == reference[0]


def _node(key: str) -> ProcessNode:
    return ProcessNode(key)


def _expected(lru: list[str], touched: list[ProcessNode]) -> list[str]:
    """The immediate moves themselves: each touch puts its key at the end."""
    order = OrderedDict.fromkeys(lru)
    for node in touched:
        order.pop(node.key, None)
        order[node.key] = None
    return list(order)


@pytest.mark.parametrize("seed", range(20))
def test_apply_touches_puts_each_node_last_in_the_order_of_its_last_touch(seed: int) -> None:
    rng = random.Random(seed)
    nodes = {key: _node(key) for key in (f"k{i}" for i in range(rng.randrange(1, 40)))}
    present = [k for k in nodes if rng.random() < 0.7]
    touched = [nodes[rng.choice(list(nodes))] for _ in range(rng.randrange(0, 120))]
    expected = _expected(present, touched)
    for implementation in (cforest.apply_touches, _python_apply):
        lru: OrderedDict[str, None] = OrderedDict.fromkeys(present)
        pending = list(touched)
        implementation(lru, pending)
        assert list(lru) == expected
        assert pending == []


def _python_apply(lru: OrderedDict[str, None], touched: list[ProcessNode]) -> None:
    compiled, recency._compiled = recency._compiled, None
    try:
        recency.apply_touches(lru, touched)
    finally:
        recency._compiled = compiled


def test_apply_touches_refuses_what_is_not_a_list_and_reports_a_node_without_a_key() -> None:
    with pytest.raises(TypeError):
        cforest.apply_touches(OrderedDict(), (_node("a"),))
    with pytest.raises(TypeError):
        cforest.apply_touches(OrderedDict())
    with pytest.raises(AttributeError):
        cforest.apply_touches(OrderedDict(), [object()])
    with pytest.raises(AttributeError):  # a mapping without move_to_end
        cforest.apply_touches({"a": None}, [_node("a")])


def test_an_error_in_the_middle_leaves_the_list_empty_and_the_order_applied_so_far() -> None:
    lru: OrderedDict[str, None] = OrderedDict.fromkeys(["a", "b", "c"])
    touched: list[Any] = [_node("a"), object(), _node("b")]
    with pytest.raises(AttributeError):
        cforest.apply_touches(lru, touched)
    assert touched == []
    assert list(lru) == ["b", "c", "a"]  # "a" applied, then the keyless object stopped it


def test_the_touched_nodes_are_released_once_applied() -> None:
    node = _node("a")
    held = sys.getrefcount(node)
    lru: OrderedDict[str, None] = OrderedDict()
    touched = [node] * 50
    cforest.apply_touches(lru, touched)
    assert sys.getrefcount(node) == held and list(lru) == ["a"]


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the debug-allocator child")
def test_this_file_passes_under_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)
