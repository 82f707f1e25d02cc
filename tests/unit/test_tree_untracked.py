"""The compiled fold takes the nodes it clones, their containers and the plain tuples it makes off the
cycle collector's lists (`gc.is_tracked`), so collections stop visiting the forest again and again; so
do the C flush rows (`Detector._rows`' (forest, node) pairs) and the C row contexts with their tuples.

That is safe only if the collector still never frees what such an object holds: an object referred to
by an untracked container counts as referred to from outside, so it survives every collection while the
node holds it, and it is freed by reference counting when the node goes (evicted, removed, the forest
dropped). These tests check both, the forest built being the Python path's field for field, and run
again under the debug allocator (a node freed twice or too early would crash the child).
"""

from __future__ import annotations

import gc
import os
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from debug_child import passes_under_debug_allocator
from forest_support import apply_in_runs, queued, snapshot

from pipeline import detect, features, tree
from pipeline.detect import Detector
from pipeline.eventkit import EventKit
from pipeline.model.provisional import ProvisionalRules
from pipeline.tree import DeviceForest, TreeLimits

NOT_BUILT = "pipeline._cforest is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
CHILD = "RINGFENCE_UNTRACKED_CHILD"
CONTAINERS = ("children", "evidence", "conns", "notable")  # not `code_counts`: a dict tracks itself
# again when it takes a tracked key (a `Counter` member), and untracking it after each update cost more
# than it saved (BENCHMARKS.md, Session K)
RUN_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run"


def _events(n: int = 40, *, grandchild: bool = False) -> list[Any]:
    """A root, then starts under it, each with a connection and a Run key (a notable event); and a child
    of the first of them when asked."""
    kit = EventKit("dev-u", start=datetime(2026, 5, 1, tzinfo=UTC), step_ms=1_000)
    events = [kit.start("root", r"C:\Windows\explorer.exe", "explorer.exe")]
    for i in range(n):
        events.append(kit.start(f"p{i}", r"C:\Windows\System32\cmd.exe", "whoami", parent="root"))
        events.append(kit.connect(f"p{i}", "10.0.0.1", 445))
        events.append(kit.reg(f"p{i}", RUN_KEY, "x"))
    if grandchild:
        events.append(kit.start("g0", r"C:\Windows\System32\whoami.exe", "whoami", parent="p0"))
    return events


def test_cloned_nodes_their_containers_and_plain_tuples_are_off_the_collector() -> None:
    assert tree._fold is not None, NOT_BUILT
    forest = DeviceForest("dev-u", "windows")
    changed = apply_in_runs(forest, _events(), True)
    clones = [forest.nodes[f"p{i}"] for i in range(40)]
    assert forest.stats.nodes_created == 41  # the root by Python, the rest cloned by the fold
    for node in clones:
        assert not gc.is_tracked(node)
        assert not any(gc.is_tracked(getattr(node, name)) for name in CONTAINERS)
        assert node.conns and not gc.is_tracked(node.conns[0])
        assert node.notable  # the Run key's event, held by an untracked deque
    # the first change is the root's start, which `apply` queues (Python's tuple: tracked until the
    # collector sees it); the fold queued the rest
    assert changed[0] == ("dev-u", "root", False) and not any(gc.is_tracked(c) for c in changed[1:])
    assert gc.is_tracked(forest._blank)  # the blank itself is Python's: left as it is


def test_an_untracked_forest_is_the_python_forest_and_queues_the_same_changes() -> None:
    events = _events()
    python, compiled = DeviceForest("dev-u", "windows"), DeviceForest("dev-u", "windows")
    changes = queued(apply_in_runs(python, events, False)), queued(apply_in_runs(compiled, events, True))
    assert snapshot(compiled) == snapshot(python) and changes[0] == changes[1]
    assert all(gc.is_tracked(node) for node in python.nodes.values())  # only the fold untracks


class _Cyclic:
    """A tracked object in a reference cycle of its own: only its holders keep it alive in a collection."""

    def __init__(self) -> None:
        self.me = self
        self.alive = True


def test_what_an_untracked_node_holds_survives_collections_and_goes_with_the_node() -> None:
    assert tree._fold is not None, NOT_BUILT
    forest = DeviceForest("dev-u", "windows")
    apply_in_runs(forest, _events(4), True)
    node = forest.nodes["p0"]
    held = _Cyclic()
    node.notable.append(held)  # type: ignore[arg-type]  # any object, as odd code may put there
    before = sys.getrefcount(held)
    del held
    for generation in (0, 1, 2):
        gc.collect(generation)
    survivor = node.notable[-1]
    assert isinstance(survivor, _Cyclic) and survivor.alive and survivor.me is survivor
    assert sys.getrefcount(survivor) == before
    event = node.notable[0]
    baseline = sys.getrefcount(event)
    forest._remove("p0")  # the node, its containers and their references go by reference counting
    del node, survivor
    assert sys.getrefcount(event) == baseline - 1


def test_flood_eviction_and_a_dropped_forest_free_untracked_nodes() -> None:
    assert tree._fold is not None, NOT_BUILT
    events = _events(60)
    forest = DeviceForest("dev-u", "windows", TreeLimits(max_nodes=8))
    apply_in_runs(forest, events, True)  # full forests go to `apply`, which evicts cloned nodes
    assert len(forest) <= 8 and forest.stats.flood_evicted_idle > 0
    # p0's connection was notable, held by p0's node until the flood evicted it: now only its list
    # holds it, as a list of events no forest saw holds its own
    unseen = _events(1)
    assert "p0" not in forest and sys.getrefcount(events[2]) == sys.getrefcount(unseen[2])
    probe = events[-1]
    del forest
    baseline = sys.getrefcount(probe)
    forest = DeviceForest("dev-u", "windows")
    apply_in_runs(forest, events, True)
    assert sys.getrefcount(probe) == baseline + 1  # held as the last process's notable event
    del forest
    assert sys.getrefcount(probe) == baseline


def test_flush_rows_and_row_contexts_are_off_the_collector_and_equal_pythons() -> None:
    assert detect._compiled_rows is not None and features._compiled_contexts is not None, NOT_BUILT
    detector = Detector(ProvisionalRules())
    detector.ingest(_events(grandchild=True), 1_000)
    pending = detector._batcher.drain()
    rows = detector._rows(pending)
    assert len(rows) == 41 and not any(gc.is_tracked(row) for row in rows)
    contexts = features.row_contexts(rows)
    assert not any(gc.is_tracked(c) or gc.is_tracked(c.ancestors) for c in contexts)
    assert any(c.descendants for c in contexts)  # p0's: a tuple of nodes, also untracked
    assert not any(gc.is_tracked(c.descendants) or gc.is_tracked(c.depths) for c in contexts)
    saved = detect._compiled_rows, features._compiled_contexts, features._compiled_context
    detect._compiled_rows = features._compiled_contexts = features._compiled_context = None
    try:
        python_rows = detector._rows(pending)
        python_contexts = features.row_contexts(python_rows)
    finally:
        detect._compiled_rows, features._compiled_contexts, features._compiled_context = saved
    assert python_rows == rows and python_contexts == contexts
    gc.collect()  # nothing they hold was freed under them
    assert all(c.forest is rows[0][0] and c.node.key in c.forest.nodes for c in contexts)


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the debug-allocator child")
def test_this_file_passes_under_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)
