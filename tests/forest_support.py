"""Every observable part of a process forest, for tests that compare the C and Python tree paths."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

from pipeline import node as node_module
from pipeline import tree
from pipeline.node import ProcessNode
from pipeline.tree import DeviceForest

try:
    from pipeline._cring import Ring
except ImportError:  # pragma: no cover - depends on the build; rings are then never made
    Ring = None  # type: ignore[assignment,misc]


@contextmanager
def tree_path(compiled: bool) -> Iterator[None]:
    """Inside, forests apply events through the C fold (`compiled`) or through Python alone."""
    fold = tree._fold
    tree._fold = fold if compiled else None
    try:
        yield
    finally:
        tree._fold = fold


@contextmanager
def deque_evidence() -> Iterator[None]:
    """Inside, `new_evidence` makes deques of ints, as a build without pipeline._cring does (the C
    extensions then read the deques: in place where they can, else through their iterators)."""
    saved = node_module._ring
    node_module._ring = None
    try:
        yield
    finally:
        node_module._ring = saved


def snapshot(forest: DeviceForest) -> dict[str, Any]:
    """Every observable part of a forest, deques, evidence rings and dicts as lists (key types included)."""
    nodes = {}
    for key, node in forest.nodes.items():
        values = {}
        for f in fields(ProcessNode):
            value = getattr(node, f.name)
            if isinstance(value, deque) or (Ring is not None and type(value) is Ring):
                value = (value.maxlen, [id(v) if f.name == "notable" else v for v in value])
            elif isinstance(value, dict):
                value = [(type(k).__name__, int(k), type(v).__name__, v) for k, v in value.items()]
            values[f.name] = (type(value).__name__, value)
        nodes[key] = values
    return {
        "nodes": nodes, "recency": forest.recency_order(), "exited": forest.exit_order(),
        "stats": forest.stats.as_dict(), "watermark": forest.watermark_ms, "seq_hwm": forest.seq_hwm,
    }  # fmt: skip


def queued(changed: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """The queued changes as `Detector.ingest`'s batcher keeps them: the first of equal ones, in order
    (the C fold queues an equal change once per call, Python's `apply` once per event)."""
    return list(dict.fromkeys(changed))


def apply_in_runs(forest: DeviceForest, events: list[Any], compiled: bool) -> list[tuple[str, str, bool]]:
    """`apply_run` of `events` in runs of 50 (as the worker's records), on the C fold or Python's
    `apply`; the changes it queued."""
    changed: list[tuple[str, str, bool]] = []
    with tree_path(compiled):
        for lo in range(0, len(events), 50):
            assert forest.apply_run(events[lo : lo + 50], 0, changed) == len(events[lo : lo + 50])
    return changed
