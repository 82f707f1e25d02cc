"""`Detector.ingest` queues its changes straight into the batcher's pending keys (`MicroBatcher.add_into`):
the same keys, in the same order, on the same clock as `add` of a list, from the C fold and from `apply`.
"""

from __future__ import annotations

import random

import pytest
from forest_support import queued, tree_path
from test_tree_compiled import SMALL, fast, stream

from pipeline.scoring import MicroBatcher
from pipeline.tree import DeviceForest


def _keys(rng: random.Random) -> list[tuple[str, str, bool]]:
    return [("d", f"k{rng.randrange(12)}", rng.random() < 0.3) for _ in range(rng.randrange(0, 8))]


@pytest.mark.parametrize("seed", range(10))
def test_add_into_keeps_the_keys_order_and_clock_add_keeps(seed: int) -> None:
    rng = random.Random(seed)
    by_add: MicroBatcher[tuple[str, str, bool]] = MicroBatcher(max_rows=20, max_delay_ms=30)
    by_fill: MicroBatcher[tuple[str, str, bool]] = MicroBatcher(max_rows=20, max_delay_ms=30)
    now = 0
    for _ in range(200):
        now += rng.randrange(0, 20)
        keys = _keys(rng)
        if keys:  # Detector.ingest called `add` only with changes
            by_add.add(keys, now)
        by_fill.add_into(lambda pending, keys=keys: pending.update(dict.fromkeys(keys)), now)
        assert len(by_fill) == len(by_add)
        assert by_fill.due(now) == by_add.due(now)
        if rng.random() < 0.1:
            assert by_fill.drain() == by_add.drain()


def test_add_into_starts_the_clock_for_what_was_added_before_the_fill_raised() -> None:
    batcher: MicroBatcher[str] = MicroBatcher(max_rows=100, max_delay_ms=10)

    def fails(pending: dict[str, None]) -> None:
        pending["a"] = None
        raise ValueError("an event raised")

    with pytest.raises(ValueError):
        batcher.add_into(fails, 5)
    assert not batcher.due(14) and batcher.due(15)  # the clock started at 5
    batcher.add_into(lambda pending: None, 50)  # nothing added: the clock is not moved
    assert batcher.due(15) and batcher.drain() == ["a"]
    batcher.add_into(lambda pending: None, 60)
    assert not batcher.due(10_000)  # nothing pending, nothing owed


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_a_run_queues_into_a_dict_what_it_appends_to_a_list(seed: int, compiled: bool) -> None:
    events = fast(stream(seed))
    with tree_path(compiled):
        results = []
        for changed in ([], {}):
            forest = DeviceForest(events[0].device_id, "windows", SMALL)
            for lo in range(0, len(events), 50):
                forest.apply_run(events[lo : lo + 50], 0, changed)
            results.append(queued(changed) if isinstance(changed, list) else list(changed))
    assert results[0] == results[1] and results[0]


def test_the_fold_refuses_changed_of_another_kind() -> None:
    cforest = pytest.importorskip("pipeline._cforest", reason="not built")
    forest = DeviceForest("d", "windows")
    with pytest.raises(TypeError, match="changed must be a list or a dict"):
        cforest.fold(forest, [], 0, (), {}, frozenset(), frozenset())
