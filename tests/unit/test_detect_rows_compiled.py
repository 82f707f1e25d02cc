"""The C flush rows (`pipeline._cforest.rows`) are the rows the Python `Detector._rows` picks.

A flush scores each queued process that is scorable (not a placeholder, not an anchor such as
svchost or explorer) and, for a notable change, its scorable ancestors up to `context_up`, each once,
in first-queued order. The compiled path replaced the Python loop (a quarter of a microsecond per
event in `bench.core_replay`), so both are run here on the same queues: generated device streams
(starts under known and unknown parents, anchors, placeholders, evictions between queueing and the
flush), hand-made queues naming unknown devices and evicted processes, and odd inputs, which must
raise a TypeError instead of crashing the worker's process.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from debug_child import passes_under_debug_allocator
from test_tree_compiled import stream

from pipeline import detect
from pipeline.detect import Detector, DetectorConfig
from pipeline.eventkit import EventKit
from pipeline.lexicon import ANCHOR_CLASSES
from pipeline.model.provisional import ProvisionalRules
from pipeline.tree import ProcessNode, TreeLimits

compiled = pytest.importorskip("pipeline._cforest", reason="pipeline._cforest is not built (setup.py)")
CHILD = "RINGFENCE_ROWS_CHILD"


def _python_rows(detector: Detector, pending: list[tuple[str, str, bool]]) -> list[Any]:
    saved = detect._compiled_rows
    detect._compiled_rows = None
    try:
        return detector._rows(pending)
    finally:
        detect._compiled_rows = saved


def _both(detector: Detector, pending: list[tuple[str, str, bool]]) -> tuple[list[Any], list[Any]]:
    python = _python_rows(detector, pending)
    c = detector._rows(pending)
    return python, c


def _same(python: list[Any], c: list[Any]) -> None:
    assert [(f.device_id, n.key) for f, n in c] == [(f.device_id, n.key) for f, n in python]
    assert all(cf is pf and cn is pn for (cf, cn), (pf, pn) in zip(c, python, strict=True))


def _queued(detector: Detector) -> list[tuple[str, str, bool]]:
    return list(detector._batcher._pending)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("up", [0, 1, 3, 9])
def test_generated_streams_give_the_same_rows(seed: int, up: int) -> None:
    limits = TreeLimits(max_nodes=12, max_depth=4) if seed % 3 == 0 else TreeLimits()
    detector = Detector(ProvisionalRules(), config=DetectorConfig(context_up=up, limits=limits))
    events = [e for d in range(3) for e in stream(seed * 7 + d, 200, device=f"dev-{d}")]
    random.Random(seed).shuffle(events)  # devices interleaved, as records of a fleet arrive
    taken = 0
    for start in range(0, len(events), 37):
        detector.ingest(events[start : start + 37], 0)
        pending = _queued(detector)
        if seed % 2:
            for forest in detector.forests.values():  # processes evicted between queueing and the flush
                for key in list(forest.nodes)[::5]:
                    forest._remove(key)
        python, c = _both(detector, pending)
        _same(python, c)
        taken += len(c)
        detector._batcher.drain()
    assert taken > 0


def _tree(device: str = "dev-a") -> Detector:
    """explorer (an anchor) -> word -> powershell -> tool, plus a placeholder parent of an orphan."""
    kit = EventKit(device, start=datetime(2026, 5, 1, tzinfo=UTC))
    ps = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
    detector = Detector(ProvisionalRules())
    detector.ingest(
        [
            kit.start("e", r"C:\Windows\explorer.exe", "explorer.exe"),
            kit.start("w", r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE", "w", parent="e"),
            kit.start("p", ps, "ps -enc AA", parent="w"),
            kit.start("t", r"C:\Users\a\AppData\Local\Temp\t.exe", "t.exe", parent="p"),
            kit.start("o", r"C:\Users\a\o.exe", "o.exe", parent="ghost"),
        ],
        0,
    )
    detector._batcher.drain()
    return detector


def test_notable_changes_bring_scorable_ancestors_once_and_never_anchors_or_placeholders() -> None:
    detector = _tree()
    pending = [
        ("dev-a", "t", True),  # t, then p and w (explorer is an anchor: skipped)
        ("dev-a", "p", False),  # already taken
        ("dev-a", "e", False),  # an anchor: never a row
        ("dev-a", "ghost", True),  # a placeholder: not a row, and it has no ancestors
        ("dev-a", "o", True),  # its parent is the placeholder
        ("dev-zz", "t", True),  # a device this worker does not hold
        ("dev-a", "gone", True),  # evicted since it was queued
    ]
    python, c = _both(detector, pending)
    _same(python, c)
    assert [n.key for _, n in c] == ["t", "p", "w", "o"]


def test_context_up_bounds_the_ancestors_and_so_does_max_depth() -> None:
    detector = _tree()
    for up in (0, 1, 2):
        detector.config = DetectorConfig(context_up=up)
        python, c = _both(detector, [("dev-a", "t", True)])
        _same(python, c)
        assert len(c) == 1 + up
    detector.forests["dev-a"].limits = TreeLimits(max_depth=1)
    detector.config = DetectorConfig(context_up=3)
    python, c = _both(detector, [("dev-a", "t", True)])
    _same(python, c)
    assert [n.key for _, n in c] == ["t", "p"]


def test_a_parent_cycle_from_a_hostile_state_ends_at_context_up() -> None:
    detector = _tree()
    nodes = detector.forests["dev-a"].nodes
    nodes["w"].parent_key = "t"  # t -> p -> w -> t ...: only a corrupted state could hold this
    python, c = _both(detector, [("dev-a", "t", True)])
    _same(python, c)
    assert [n.key for _, n in c] == ["t", "p", "w"]


def test_a_truthy_object_for_notable_counts_as_notable() -> None:
    detector = _tree()
    python, c = _both(detector, [("dev-a", "t", 1), ("dev-a", "o", "")])  # type: ignore[list-item]
    _same(python, c)


def test_nodes_that_say_they_equal_each_other_are_still_taken_once_each() -> None:
    """A row is one process, however a node subclass defines equality (the C path keys plain nodes by
    identity and any other by address)."""

    class Agreeable(ProcessNode):
        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return 1

    detector = _tree()
    nodes = detector.forests["dev-a"].nodes
    for key in ("w", "p"):
        old = nodes[key]
        node = Agreeable(old.key, image=old.image, started=True, parent_key=old.parent_key)
        node.image_cls = old.image_cls
        nodes[key] = node
    python, c = _both(detector, [("dev-a", "t", True), ("dev-a", "p", False), ("dev-a", "w", True)])
    _same(python, c)
    assert [n.key for _, n in c] == ["t", "p", "w"]


@pytest.mark.parametrize(
    "args",
    [
        ([("dev-a", "t")], {}, 3, ANCHOR_CLASSES),  # a 2-tuple
        (["dev-a"], {}, 3, ANCHOR_CLASSES),  # not a tuple
        ([], [], 3, ANCHOR_CLASSES),  # forests not a dict
        ([], {}, 3, list(ANCHOR_CLASSES)),  # anchors not a set
        ([], {}, "3", ANCHOR_CLASSES),  # context_up not an int
        (42, {}, 3, ANCHOR_CLASSES),  # pending not a sequence
    ],
)
def test_odd_inputs_raise_type_errors(args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError):
        compiled.rows(*args)


def test_a_forest_whose_nodes_is_not_a_dict_raises() -> None:
    detector = _tree()
    detector.forests["dev-a"].nodes = list(detector.forests["dev-a"].nodes.values())  # type: ignore[assignment]
    with pytest.raises(TypeError):
        detector._rows([("dev-a", "t", True)])


def test_an_image_class_whose_hash_raises_propagates_the_error() -> None:
    class Bad:
        def __hash__(self) -> int:
            raise RuntimeError("no hash")

    detector = _tree()
    detector.forests["dev-a"].nodes["t"].image_cls = Bad()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="no hash"):
        detector._rows([("dev-a", "t", False)])


@pytest.mark.parametrize(("max_depth", "rows"), [(2**70, 3), (-(2**70), 1), (-1, 1)])
def test_a_max_depth_past_64_bits_is_compared_as_python_compares_it(max_depth: int, rows: int) -> None:
    detector = _tree()
    detector.forests["dev-a"].limits = TreeLimits(max_depth=max_depth)
    python, c = _both(detector, [("dev-a", "t", True)])
    _same(python, c)
    assert len(c) == rows


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the debug-allocator child")
def test_this_file_passes_under_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)
