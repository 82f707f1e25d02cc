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
from typing import Any, ClassVar

import numpy as np
import pytest
from debug_child import passes_under_debug_allocator
from forest_support import deque_evidence
from test_features_compiled import assert_same_bytes, c_matrix, every_row, forest_of, numpy_matrix
from test_tree_compiled import SMALL, stream

from pipeline.behaviour import Counter
from pipeline.eventkit import EventKit
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
    with deque_evidence():  # deques, as without pipeline._cring (a ring is read from its buffer either way)
        forest = forest_of(stream(seed, n=400), SMALL if seed % 2 else None)
    assert all(type(node.evidence) is deque for node in forest.nodes.values())
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


def _conn_shapes(now: int) -> dict[str, Callable[[], deque[tuple[int, str, int]]]]:
    """Connection records (`now - 7 i` ms, one of 7 IPs, one of 5 ports) in the shapes read in place."""

    def record(i: int) -> tuple[int, str, int]:
        return (now - 7 * i, f"10.0.0.{i % 7}", 1000 + i % 5)

    return {
        "empty": deque,
        "a block and one": lambda: deque(record(i) for i in range(65)),
        "bounded, overflowed": lambda: deque((record(i) for i in range(1_000)), maxlen=128),
    }


class _Ip(str):
    """An IP that is a str subclass (not read in place)."""


@pytest.mark.parametrize("shape", list(_conn_shapes(0)))
@pytest.mark.parametrize(
    "odd", [None, "list", "ip subclass", "bool port", "huge port", "int subclass ts", "deque subclass"]
)
def test_connections_of_every_shape_and_odd_records_count_as_numpy_counts(
    shape: str, odd: str | None
) -> None:
    forest = forest_of(stream(2, n=200), None)
    now = forest.watermark_ms
    for i, node in enumerate(sorted(forest.nodes.values(), key=lambda n: n.key)):
        conns: deque[Any] = _conn_shapes(now - i)[shape]()
        if conns and odd is not None and i % 2:  # every other node: plain nodes before and after odd ones
            ts, ip, port = conns[-1]
            odd_ts = type("Ts", (int,), {})(ts)
            conns[-1] = {"list": [ts, ip, port], "ip subclass": (ts, _Ip(ip), port),
                         "bool port": (ts, ip, True), "huge port": (ts, ip, 1 << 70),
                         "int subclass ts": (odd_ts, ip, port),
                         "deque subclass": (ts, ip, port)}[odd]  # fmt: skip
            if odd == "deque subclass":
                conns = type("Conns", (deque,), {})(conns, conns.maxlen)
        node.conns = conns
    for window in (1, 5_000, 10**12):
        _both_ways(forest, window)


class _Meddler(str):
    """An IP whose comparison empties every node's connection deque (hash collides with a plain IP)."""

    victims: ClassVar[list[deque[Any]]] = []

    def __hash__(self) -> int:
        return hash(str(self))

    def __eq__(self, other: object) -> bool:
        for victim in self.victims:
            victim.clear()
        return str.__eq__(self, other)


def test_an_ip_whose_comparison_changes_the_deques_cannot_make_the_rows_read_freed_records() -> None:
    forest = forest_of(stream(2, n=200), None)
    now = forest.watermark_ms
    nodes = sorted(forest.nodes.values(), key=lambda n: n.key)
    victims = []
    for i, node in enumerate(nodes):
        records = [(now - j, f"10.0.0.{j % 3}", 80) for j in range(100)]
        if i == 0:
            records[0] = (now, _Meddler("10.0.0.1"), 80)
        node.conns = deque(records, maxlen=128)
        victims.append(node.conns)
    _Meddler.victims = victims
    contexts = every_row([forest], 10**12)
    for on in (True, False):
        for deq, fresh in zip(victims, [deque(v) for v in victims], strict=True):
            deq.extend(fresh)
        with reading(on):
            try:
                c_matrix(contexts)
            except RuntimeError:  # "deque mutated during iteration": an error, never a read of freed memory
                pass
    _Meddler.victims = []


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the debug-allocator child")
def test_this_file_passes_under_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)


def test_distinct_ips_and_ports_count_equal_texts_and_values_once_and_a_wide_subtree_whole() -> None:
    """Connection records read in place are counted by text and value, as sets count them: two equal IP
    strings made apart are one IP, two equal ports made apart one port; a subtree of 200 window-active
    children, each with an IP of its own, counts all of them (more than a row's first 64 descendants)."""
    kit = EventKit("dev-wide")
    events = [kit.start("p", r"C:\Windows\System32\cmd.exe", "cmd.exe /c run.bat")]
    for i in range(200):
        events.append(kit.start(f"c{i}", r"C:\Tools\probe.exe", f"probe.exe {i}", parent="p"))
        events.append(kit.connect(f"c{i}", f"10.1.{i // 250}.{i % 250}", 443))
    forest = forest_of(events, None)
    now = forest.watermark_ms
    parent = forest.nodes["p"]
    one = "".join(["10.0.0.", str(1)])
    parent.conns = deque([(now, "10.0.0." + str(1), int("8080")), (now, one, int("80" + "80")),
                          (now, "10.0.0.2", 443)], maxlen=128)  # fmt: skip
    assert parent.conns[0][1] is not parent.conns[1][1] and parent.conns[0][2] is not parent.conns[1][2]
    contexts = every_row([forest], 10**12)
    row = next(i for i, c in enumerate(contexts) if c.node is parent)
    assert len(contexts[row].descendants) == 200
    for on in (True, False):
        with reading(on):
            matrix = assert_same_bytes(contexts)
        names = ("own_distinct_dst_ip", "own_distinct_dst_port", "sub_distinct_dst_ip")
        assert [matrix[row, FEATURE_NAMES.index(name)] for name in names] == [2, 2, 202]
