"""The compiled fold makes a new process's node as a clone of `DeviceForest._blank`, and queues an equal
change once per call.

A clone must be the node `_new_node` makes: every field equal (the snapshots compare them all), and no
container shared with another node or with the blank (the snapshots cannot see sharing: two nodes'
evidence in one deque would look like two equal deques until one of them is written to). The fold
clones only while the forest's `_new_node` is DeviceForest's own and the blank still fits the forest's
limits; otherwise it calls `_new_node`, and the forest is the same either way. The queued changes are
those Python queues once the batcher has kept the first of equal ones (what `Detector.ingest` does
with them).
"""

from __future__ import annotations

import random
from array import array
from datetime import UTC, datetime
from typing import Any

import pytest
from forest_support import apply_in_runs, queued, snapshot

from pipeline import tree
from pipeline.eventkit import EventKit
from pipeline.tree import DeviceForest, TreeLimits

NOT_BUILT = "pipeline._cforest is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
CONTAINERS = ("code_counts", "children", "evidence", "conns", "notable")


def _stream(seed: int, n: int = 160) -> list[Any]:
    """Starts under known parents, with behaviour of the started processes in between."""
    rng = random.Random(seed)
    kit = EventKit("dev-k", start=datetime(2026, 5, 1, tzinfo=UTC), step_ms=rng.choice([1, 5_000]))
    keys, events = ["root"], [kit.start("root", r"C:\Windows\explorer.exe", "explorer.exe")]
    for i in range(n):
        roll = rng.random()
        if roll < 0.4:
            keys.append(f"p{i}")
            events.append(
                kit.start(f"p{i}", r"C:\Windows\System32\cmd.exe", "whoami /all", parent=rng.choice(keys))
            )
        elif roll < 0.6:
            events.append(kit.connect(rng.choice(keys), f"10.0.0.{rng.randrange(3)}", 445))
        elif roll < 0.8:
            events.append(
                kit.reg(rng.choice(keys), r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run", "x")
            )
        else:
            events.append(kit.write(rng.choice(keys), r"C:\Users\a\AppData\Local\Temp\x.exe"))
    return events


@pytest.mark.parametrize("seed", range(4))
def test_cloned_nodes_share_no_container_with_each_other_or_the_blank(seed: int) -> None:
    assert tree._fold is not None, NOT_BUILT
    forest = DeviceForest("dev-k", "windows", TreeLimits(max_evidence_per_node=5, max_notable_per_node=2))
    apply_in_runs(forest, _stream(seed), True)
    assert forest.stats.nodes_created == len(forest.nodes) > 40
    for name in CONTAINERS:
        held = [getattr(node, name) for node in forest.nodes.values()] + [getattr(forest._blank, name)]
        assert len({id(c) for c in held}) == len(held), name
        assert not getattr(forest._blank, name), name  # the blank stays empty
    assert any(len(node.evidence) == 5 for node in forest.nodes.values())  # the limits' maxlen held


@pytest.mark.parametrize("seed", range(4))
def test_clones_and_python_nodes_build_the_same_forest_and_queue_the_same_changes(seed: int) -> None:
    events = _stream(seed)
    python, compiled = DeviceForest("dev-k", "windows"), DeviceForest("dev-k", "windows")
    changes = queued(apply_in_runs(python, events, False)), queued(apply_in_runs(compiled, events, True))
    assert snapshot(compiled) == snapshot(python) and changes[0] == changes[1]


def test_a_blank_that_no_longer_fits_the_limits_is_not_cloned() -> None:
    """Limits replaced after the forest was made: the blank's deques have the old maxlens, so new nodes
    come from `_new_node` (with the new limits), as in Python."""
    events, results = _stream(7), []
    for compiled in (False, True):
        forest = DeviceForest("dev-k", "windows")
        forest.limits = TreeLimits(max_evidence_per_node=3, max_conns_per_node=1, max_notable_per_node=1)
        changed = apply_in_runs(forest, events, compiled)
        results.append((snapshot(forest), queued(changed)))
        assert all(node.evidence.maxlen == 3 and node.conns.maxlen == 1 for node in forest.nodes.values())
    assert results[0] == results[1]


@pytest.mark.parametrize("blank", ["missing", "a set", "a full deque"])
def test_a_forest_without_a_usable_blank_makes_its_nodes_with_new_node(blank: str) -> None:
    events, results = _stream(8), []
    for compiled in (False, True):
        forest = DeviceForest("dev-k", "windows")
        if blank == "missing":
            del forest._blank
        elif blank == "a set":
            forest._blank.children = {"odd"}  # type: ignore[assignment]
        else:
            forest._blank.evidence.append(1)
        changed = apply_in_runs(forest, events, compiled)
        results.append((snapshot(forest), queued(changed)))
        assert all("odd" not in node.children and 1 not in node.evidence for node in forest.nodes.values())
    assert results[0] == results[1]


def test_the_fold_queues_an_equal_change_once_per_call_and_the_batcher_sees_the_same() -> None:
    assert tree._fold is not None, NOT_BUILT
    kit = EventKit("dev-k", start=datetime(2026, 5, 1, tzinfo=UTC), step_ms=1)
    events = [kit.start("root", r"C:\Windows\explorer.exe", "x")]
    events += [kit.reg("root", r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run", "x") for _ in range(6)]
    python, compiled = DeviceForest("dev-k", "windows"), DeviceForest("dev-k", "windows")
    slow, fast = apply_in_runs(python, events, False), apply_in_runs(compiled, events, True)
    assert slow.count(("dev-k", "root", True)) == 6  # a Run key is strong: every one re-scores
    assert fast.count(("dev-k", "root", True)) == 1 and queued(fast) == queued(slow) == fast


@pytest.mark.parametrize("value", [array("q"), bytearray()])
def test_a_mutable_value_of_the_blank_is_never_shared_even_when_no_gc_type(value: Any) -> None:
    """A mutable value that is not a container the clone knows (an array, a bytearray: no cycle-collector
    type, like an evidence ring an extension could not read in place) keeps the fold from cloning: new
    nodes come from `_new_node`, and none of them holds the blank's object."""
    assert tree._fold is not None, NOT_BUILT
    forest = DeviceForest("dev-k", "windows")
    forest._blank.alert_mark = value  # type: ignore[assignment]  (a slot no event writes)
    apply_in_runs(forest, _stream(2), True)
    assert len(forest.nodes) > 40 and all(node.alert_mark is not value for node in forest.nodes.values())
