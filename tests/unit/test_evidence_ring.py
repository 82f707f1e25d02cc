"""A process's evidence as one int64 ring (`pipeline._cring.Ring`) holds and answers what a deque would.

The forest gives each process `new_evidence(max_evidence_per_node)`: a Ring when the extension is built,
else a `collections.deque`. The Ring must behave as the deque did for everything the forest, the
features, the state records and the alerts use, and the C extensions read it in place: so the same
events must give the same forest, the same feature rows, the same decisions and the same state bytes
with either container, on either path. A Ring also refuses what it cannot hold (anything but an int in
int64's range) instead of storing it, and keeps 8 bytes per record (a deque keeps an int object each).
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import random
import sys
from collections import deque
from typing import Any

import numpy as np
import pytest
from debug_child import passes_under_debug_allocator
from forest_support import deque_evidence, snapshot, tree_path
from test_features_compiled import WINDOWS, every_row
from test_tree_compiled import SMALL, fast, stream
from test_tree_state_compiled import state_path

from pipeline.detect import Detector, DetectorConfig
from pipeline.features import feature_matrix, row_context
from pipeline.model.provisional import ProvisionalRules
from pipeline.node import TreeLimits, new_evidence
from pipeline.tree import DeviceForest
from pipeline.tree_state import ForestEncoder, forest_from_bytes

NOT_BUILT = "pipeline._cring is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
try:
    from pipeline._cring import Ring
except ImportError:  # pragma: no cover - every test below then fails with NOT_BUILT (never skipped)
    Ring = None  # type: ignore[assignment,misc]

CHILD = "RINGFENCE_CRING_CHILD"


@pytest.fixture(autouse=True)
def _built() -> None:
    assert Ring is not None, NOT_BUILT


def test_every_extension_reads_rings_in_place() -> None:
    # A ring an extension cannot read in place (another layout: a stale build) gives the same values
    # through the sequence protocol, only slower: this is what says the build is whole.
    from pipeline import _cfeatures, _cforest, _cstate

    assert _cforest.reads_rings() and _cfeatures.reads_rings() and _cstate.reads_rings()


def test_the_forest_keeps_evidence_in_a_ring_when_it_is_built() -> None:
    forest = DeviceForest("d", "windows")
    events = stream(1, 40, "d")
    forest.apply_run(events, 0, [])
    assert all(type(n.evidence) is Ring for n in forest.nodes.values())
    with deque_evidence():
        assert type(new_evidence(8)) is deque


@pytest.mark.parametrize("maxlen", [0, 1, 2, 7, 8, 9, 64, 512])
@pytest.mark.parametrize("seed", range(4))
def test_every_operation_answers_as_a_bounded_deque(maxlen: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + maxlen)
    ring, twin = Ring(maxlen=maxlen), deque(maxlen=maxlen)
    for _ in range(1_500):
        roll = rng.random()
        if roll < 0.8:
            packed = rng.randrange(1 << 50) << 8 | rng.randrange(9)
            value = rng.choice([rng.randrange(-(1 << 63), 1 << 63), packed])
            ring.append(value)
            twin.append(value)
        elif roll < 0.9:
            values = [rng.randrange(1 << 40) for _ in range(rng.randrange(20))]
            ring.extend(values)
            twin.extend(values)
        elif roll < 0.92:
            ring.clear()
            twin.clear()
        elif roll < 0.94:
            ring = ring.copy()
        assert len(ring) == len(twin) and ring.maxlen == twin.maxlen
        assert list(ring) == list(twin) and list(reversed(ring)) == list(reversed(twin))
        assert ring == twin and twin == ring and not ring != twin
        if twin:
            i = rng.randrange(-len(twin), len(twin))
            assert ring[i] == twin[i]
    assert ring.tobytes() == np.array(list(twin), dtype="<i8").tobytes()


def test_a_ring_refuses_what_it_cannot_hold() -> None:
    ring = Ring([1, 2], maxlen=4)
    for bad, error in (("7", TypeError), (1.0, TypeError), (None, TypeError), (1 << 63, OverflowError),
                       (-(1 << 63) - 1, OverflowError)):  # fmt: skip
        before = list(ring)
        with pytest.raises(error):
            ring.append(bad)
        assert list(ring) == before
        with pytest.raises(error):
            ring.extend([3, bad])  # the records before the bad one are kept, as a deque's extend keeps them
        assert list(ring) == [*before, 3][-4:]
    with pytest.raises(TypeError, match="maxlen"):
        Ring([1])
    with pytest.raises(ValueError, match="non-negative"):
        Ring(maxlen=-1)
    with pytest.raises(IndexError):
        Ring(maxlen=3)[0]
    with pytest.raises(TypeError):
        Ring(maxlen=3)[0] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(Ring(maxlen=3))


def test_iterating_a_ring_that_changes_is_an_error_not_a_wrong_answer() -> None:
    ring = Ring(range(10), maxlen=10)
    for mutate in (lambda: ring.append(11), lambda: ring.extend([1]), ring.clear):
        it = iter(ring)
        next(it)
        mutate()
        with pytest.raises(RuntimeError, match="mutated"):
            next(it)
    ring.extend(range(4))
    ring.extend(ring)  # by itself: its records as they were
    assert list(ring) == [0, 1, 2, 3, 0, 1, 2, 3]


def test_copies_and_pickles_are_equal_and_independent() -> None:
    ring = Ring(range(100), maxlen=64)
    pickled = pickle.loads(pickle.dumps(ring))  # noqa: S301 - our own bytes, just made
    for other in (ring.copy(), copy.copy(ring), copy.deepcopy(ring), pickled):
        assert type(other) is Ring and other == ring and other.maxlen == 64 and other is not ring
        other.append(1)
        assert other != ring
    assert repr(Ring([1, 2], maxlen=3)) == "Ring([1, 2], maxlen=3)"


def test_a_full_ring_keeps_eight_bytes_a_record() -> None:
    ring, twin = Ring(range(512), maxlen=512), deque(range(1 << 40, (1 << 40) + 512), maxlen=512)
    assert sys.getsizeof(ring) <= 512 * 8 + 128
    held_by_deque = sys.getsizeof(twin) + sum(sys.getsizeof(v) for v in twin)
    assert held_by_deque > 4 * sys.getsizeof(ring)
    assert not gc.is_tracked(ring)  # it holds no object: the cycle collector never visits it


def _build(events: list[Any], limits: TreeLimits | None, compiled: bool) -> DeviceForest:
    with tree_path(compiled):
        forest = DeviceForest(events[0].device_id, "windows", limits)
        for lo in range(0, len(events), 50):
            forest.apply_run(events[lo : lo + 50], 0, [])
    return forest


@pytest.mark.parametrize("limits", [None, SMALL])
@pytest.mark.parametrize("seed", range(6))
def test_rings_and_deques_give_the_same_forest_rows_and_state_on_both_paths(
    seed: int, limits: TreeLimits | None
) -> None:
    events = stream(seed, 400)
    events = fast(events) if seed % 2 else events
    built = {}
    for container in ("ring", "deque"):
        for compiled in (True, False):
            if container == "deque":
                with deque_evidence():
                    forest = _build(events, limits, compiled)
            else:
                forest = _build(events, limits, compiled)
            kinds = {type(n.evidence) for n in forest.nodes.values()}
            assert kinds == {Ring if container == "ring" else deque}
            matrices = [feature_matrix(every_row([forest], window)).tobytes() for window in WINDOWS]
            states = []
            for c_state in (True, False):
                with state_path(c_state):
                    states.append(ForestEncoder().encode(forest, 0))
            assert states[0] == states[1]
            built[container, compiled] = (snapshot(forest), matrices, states[0])
    first = built["ring", True]
    assert all(value == first for value in built.values())
    assert first[0]["stats"]["evidence_dropped"] > 0 or limits is None


def test_a_restored_forest_keeps_its_evidence_in_a_ring_with_the_same_records() -> None:
    forest = _build(stream(2, 300), SMALL, True)
    restored = forest_from_bytes(ForestEncoder().encode(forest, 0), SMALL)
    for key, node in forest.nodes.items():
        again = restored.nodes[key].evidence
        assert type(again) is Ring and again == node.evidence and again.maxlen == SMALL.max_evidence_per_node


def test_the_detector_decides_the_same_with_rings_and_deques() -> None:
    events = [e for seed in range(6) for e in stream(seed, 200, f"dev-{seed % 3}")]
    random.Random(9).shuffle(events)
    results = []
    for container in ("ring", "deque"):
        with (deque_evidence() if container == "deque" else tree_path(True)):
            detector = Detector(ProvisionalRules(), config=DetectorConfig(max_rows=64, max_delay_ms=0))
            decisions = []
            for lo in range(0, len(events), 37):
                decisions += detector.process(events[lo : lo + 37], 1_777_600_000_000 + lo)
            rows = [row_context(f, k, 300_000) for f in detector.forests.values() for k in sorted(f.nodes)]
            results.append((feature_matrix(rows).tobytes(), [d.model_dump_json() for d in decisions]))
    assert results[0] == results[1] and results[0][1]  # the streams do alert


def test_appending_through_the_fold_leaks_nothing() -> None:
    kit_events = stream(4, 300)
    forest = _build(kit_events[:50], None, True)
    gc.collect()
    rings = [n.evidence for n in forest.nodes.values()]
    before = [sys.getrefcount(r) for r in rings]
    for _ in range(20):
        forest.apply_run(kit_events[50:], 0, [])  # redeliveries: dropped, rings untouched or appended
    assert [sys.getrefcount(r) for r in rings] == before


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the child run")
def test_this_file_passes_in_a_child_with_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)
