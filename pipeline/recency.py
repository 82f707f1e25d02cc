"""A forest's recency order, with the moves of its hot path deferred.

`DeviceForest._lru` (an OrderedDict, least recently active first) is what flood eviction, idle eviction
and the state record read. Keeping it current cost a `move_to_end` per event: a method call, a hash
lookup and three linked entries rewritten, ~0.11 µs of the fold's ~1.6 (BENCHMARKS.md, Session L). The
forest now appends the node an event names to `DeviceForest._touched` instead, and applies those touches
here before anything reads or changes the order (`DeviceForest._recency`). Between two reads a process
is usually named by many events, and only its last touch decides where it ends up.

Why the order is the same: putting a key at the end (`move_to_end`, or inserting a new key) leaves the
keys not touched in their order, followed by the touched ones in the order of their *last* touch. So
applying, for each touched node once, in the order of its last touch, "at the end" (moved when its key
is in the order, inserted when it is a new node's) gives the order the immediate moves gave. Removals,
placeholders (put first) and every read apply the pending touches first, so nothing else interleaves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pipeline.node import ProcessNode

TOUCHED_MAX = 1024
"""Touches a forest keeps pending at most (then they are applied at the end of a run): bounds the list of
a forest whose order nobody reads for a long time (a replay, a device whose state is not written yet),
and the work a state encoding finds pending (a worker's commit reads every written device's order:
at most this many touches per device to apply then, ~10 µs, instead of all since the last commit)."""

_compiled: Callable[[OrderedDict[str, None], list[Any]], None] | None
try:  # the same in C (pipeline/_cforest.c); optional
    from pipeline._cforest import apply_touches as _compiled_touches
except ImportError:  # pragma: no cover - depends on the build
    _compiled = None
else:
    _compiled = _compiled_touches


def apply_touches(lru: OrderedDict[str, None], touched: list[ProcessNode]) -> None:
    """Put each node of `touched` at the end of `lru`, in the order of its last touch; empty `touched`."""
    if not touched:
        return
    if _compiled is not None:
        _compiled(lru, touched)
        return
    pending = touched[:]
    touched.clear()
    seen: set[int] = set()
    last: list[ProcessNode] = []
    for node in reversed(pending):
        if id(node) not in seen:
            seen.add(id(node))
            last.append(node)
    for node in reversed(last):
        if node.key in lru:
            lru.move_to_end(node.key)
        else:
            lru[node.key] = None
