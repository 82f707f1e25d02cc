"""A node's evidence deque read in place by `pipeline._cfeatures` counts what its iterator counts.

Counting the evidence (up to 512 packed `ts << 8 | code` ints per node, in a `collections.deque`) was
the largest part of the C feature rows, most of it the deque iterator's reference taken and dropped per
record; on CPython 3.11 the rows read the deque's blocks in place instead (`read_in_place`), after
checking the deque's layout at import. Here the rows are computed with the in-place reading on and
off and against numpy on generated forests, and on deques of every shape the reading walks: empty,
one block and many, a start index moved by pops, `appendleft` and `rotate`, a bounded deque that
dropped thousands of records; records that are not small ints (a bool, a three-digit int, an int
subclass) and deque subclasses go through the iterator and count as numpy counts them.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from debug_child import passes_under_debug_allocator
from test_features_compiled import assert_same_bytes, c_matrix, every_row, forest_of, numpy_matrix
from test_tree_compiled import SMALL, stream

from pipeline.behaviour import Counter
from pipeline.features import FEATURE_NAMES
from pipeline.tree import DeviceForest

_cfeatures = pytest.importorskip("pipeline._cfeatures", reason="pipeline._cfeatures is not built (setup.py)")
CHILD = "RINGFENCE_FEATURES_DEQUE_CHILD"


@contextmanager
def reading(on: bool) -> Iterator[None]:
    previous = _cfeatures.read_in_place(on)
    try:
        yield
    finally:
        _cfeatures.read_in_place(previous)


def _both_ways(forest: DeviceForest, window: int) -> np.ndarray:
    contexts = every_row([forest], window)
    with reading(True):
        in_place = assert_same_bytes(contexts)  # equal to numpy's
    with reading(False):
        iterated = c_matrix(contexts)
    assert in_place.tobytes() == iterated.tobytes()
    return in_place


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the deque is read in place on CPython 3.11 only")
def test_the_deque_is_read_in_place_on_this_python() -> None:
    assert _cfeatures.read_in_place() is True
    with reading(False):
        assert _cfeatures.read_in_place() is False
    assert _cfeatures.read_in_place() is True


@pytest.mark.parametrize("seed", range(6))
def test_generated_forests_give_the_same_rows_read_in_place_or_iterated(seed: int) -> None:
    forest = forest_of(stream(seed, n=400), SMALL if seed % 2 else None)
    for window in (1, 60_000, 10**12):
        _both_ways(forest, window)


def _shapes(now: int, codes: int) -> dict[str, Callable[[], deque[int]]]:
    """Deques of packed records (`now - i ms`, code i % codes) in the shapes an in-place read walks."""

    def packed(i: int) -> int:
        return (now - i) << 8 | (i % codes)

    def moved() -> deque[int]:
        d = deque(packed(i) for i in range(200))
        d.extendleft(packed(i) for i in range(200, 270))
        d.rotate(5)
        for _ in range(33):
            d.popleft()
        return d

    return {
        "empty": deque,
        "one": lambda: deque([packed(0)]),
        "a block": lambda: deque(packed(i) for i in range(64)),
        "a block and one": lambda: deque(packed(i) for i in range(65)),
        "bounded, overflowed": lambda: deque((packed(i) for i in range(5_000)), maxlen=512),
        "moved": moved,
    }


@pytest.mark.parametrize("shape", list(_shapes(0, 1)))
@pytest.mark.parametrize("odd", [None, True, 1 << 70, "int subclass", "deque subclass"])
def test_evidence_of_every_shape_and_odd_records_counts_as_numpy_counts(shape: str, odd: object) -> None:
    forest = forest_of(stream(3, n=200), None)
    now = forest.watermark_ms
    nodes = sorted(forest.nodes.values(), key=lambda n: n.key)
    for i, node in enumerate(nodes):
        evidence = _shapes(now, len(Counter) + i % 3)[shape]()  # codes past the counters are ignored
        if odd == "int subclass" and evidence:
            evidence[len(evidence) // 2] = type("Packed", (int,), {})(evidence[len(evidence) // 2])
        elif odd == "deque subclass":
            evidence = type("Evidence", (deque,), {})(evidence, evidence.maxlen)
        elif odd is not None and evidence:
            evidence[-1] = odd
        node.evidence = evidence
    if odd == 1 << 70 and shape != "empty":  # numpy refuses what does not fit int64, and so does C
        contexts = every_row([forest], 10**12)
        with pytest.raises(OverflowError):
            numpy_matrix(contexts)
        for on in (True, False):
            with reading(on), pytest.raises(OverflowError):
                c_matrix(contexts)
        return
    for window in (1, 1_000, 10**12):
        _both_ways(forest, window)


def test_counts_read_in_place_are_the_window_s_records() -> None:
    forest = forest_of(stream(5, n=120), None)
    node = next(n for n in forest.nodes.values() if n.started)
    now = forest.watermark_ms
    node.evidence = deque([(now - 10) << 8 | 0, (now - 10) << 8 | 0, (now - 5_000) << 8 | 0], maxlen=512)
    for n in forest.nodes.values():
        if n is not node:
            n.evidence = deque(maxlen=512)
    rows = {c.node.key: i for i, c in enumerate(every_row([forest], 1_000))}
    column = FEATURE_NAMES.index("sub_" + Counter(0).name.lower())
    with reading(True):
        matrix = c_matrix(every_row([forest], 1_000))
    assert matrix[rows[node.key], column] == 2  # the third record is older than the window


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the debug-allocator child")
def test_this_file_passes_under_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)
