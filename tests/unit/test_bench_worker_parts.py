"""`bench._worker_parts`: each wrapped call counts its own CPU time (inner wrapped calls taken out),
sync and async alike, the window's parts sum to its wall time, and the worker's functions are put back."""

from __future__ import annotations

import asyncio

import pytest

from bench import _worker_parts
from bench._worker_parts import OTHER, PART_NAMES, WAITING, Parts, worker_parts
from pipeline import detect, worker


class _Clock:
    """A CPU clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_inner_wrapped_call_is_taken_out_of_the_outer_one() -> None:
    clock = _Clock()
    parts = Parts(clock=clock)

    def inner() -> str:
        clock.now += 2.0
        return "inner"

    timed_inner = parts.wrap(inner, "b")

    def outer() -> str:
        clock.now += 1.0
        got = timed_inner()
        clock.now += 0.5
        return got

    assert parts.wrap(outer, "a")() == "inner"
    assert parts.seconds == {"a": 1.5, "b": 2.0}


def test_async_parts_count_their_own_time_across_awaits_and_raise_through() -> None:
    clock = _Clock()
    parts = Parts(clock=clock)

    async def fetch() -> None:
        clock.now += 3.0
        await asyncio.sleep(0)

    timed_fetch = parts.wrap(fetch, "io")

    async def emit(fail: bool) -> None:
        clock.now += 1.0
        await timed_fetch()
        if fail:
            raise RuntimeError("send failed")

    timed_emit = parts.wrap(emit, "outputs")
    asyncio.run(timed_emit(False))
    with pytest.raises(RuntimeError, match="send failed"):
        asyncio.run(timed_emit(True))
    assert parts.seconds == {"io": 6.0, "outputs": 2.0}


def test_the_window_counts_what_was_added_since_its_start_and_sums_to_its_wall_time() -> None:
    clock = _Clock()
    parts = Parts(clock=clock)

    def decode() -> None:
        clock.now += 1.0

    timed = parts.wrap(decode, PART_NAMES[0])
    timed()  # before the window
    start = parts.snapshot()
    timed()
    timed()
    window = parts.window(start, cpu_s=2.5, wall_s=4.0)
    assert list(window) == list(PART_NAMES)
    assert window[PART_NAMES[0]] == 2.0
    assert window[OTHER] == 0.5  # the thread's CPU no part claimed
    assert window[WAITING] == 1.5  # wall less CPU
    assert sum(window.values()) == pytest.approx(4.0)


def test_the_workers_functions_are_wrapped_inside_and_restored_after() -> None:
    before = (worker._decode, worker._let_io_run, detect.Detector.ingest, worker.BatchWorker._emit)
    with worker_parts(Parts()):
        inside = (worker._decode, worker._let_io_run, detect.Detector.ingest, worker.BatchWorker._emit)
        assert all(a is not b for a, b in zip(before, inside, strict=True))
        assert asyncio.iscoroutinefunction(worker.BatchWorker._emit)  # still awaitable
    after = (worker._decode, worker._let_io_run, detect.Detector.ingest, worker.BatchWorker._emit)
    assert after == before
    assert {part for _, _, part in _worker_parts._WRAPPED} == set(PART_NAMES) - {OTHER, WAITING}


def test_a_call_in_progress_when_the_window_begins_counts_from_then_on() -> None:
    clock = _Clock()
    parts = Parts(clock=clock)
    starts: list[dict[str, float]] = []

    def inner() -> None:
        clock.now += 1.0

    timed_inner = parts.wrap(inner, "b")

    def poll() -> None:
        timed_inner()  # before the window: not counted
        clock.now += 5.0  # e.g. joining the group
        starts.append(parts.snapshot())  # the first record arrives
        clock.now += 2.0
        timed_inner()

    parts.wrap(poll, "a")()
    window = {k: v - starts[0].get(k, 0.0) for k, v in parts.seconds.items()}
    assert window == {"a": 2.0, "b": 1.0}


def test_calls_of_two_tasks_interleaved_by_awaits_are_each_counted_once_in_their_own_part() -> None:
    clock = _Clock()
    parts = Parts(clock=clock)
    b_started = asyncio.Event()
    a_resume = asyncio.Event()

    async def x() -> None:  # the worker's poll: 5 s, awaits while another task runs, then 1 s
        clock.now += 5.0
        await a_resume.wait()
        clock.now += 1.0

    async def y() -> None:  # a rebalance callback's checkpoint: 1 s, awaits, 1 s
        clock.now += 1.0
        b_started.set()
        await asyncio.sleep(0)
        clock.now += 1.0
        a_resume.set()

    timed_x, timed_y = parts.wrap(x, "X"), parts.wrap(y, "Y")

    async def both() -> None:
        a = asyncio.create_task(timed_x())
        await asyncio.sleep(0)  # x runs its first 5 s and waits
        await asyncio.gather(a, timed_y())

    asyncio.run(both())
    assert parts.seconds == {"X": 6.0, "Y": 2.0}


def test_each_part_is_made_of_the_worker_functions_it_names() -> None:
    made_of = {(owner, name): part for owner, name, part in _worker_parts._WRAPPED}
    assert made_of[(worker, "_decode")] == _worker_parts.DECODE
    assert made_of[(detect.Detector, "ingest")] == _worker_parts.TREE
    for name in ("flush", "start_flush", "finish_flush"):
        assert made_of[(detect.Detector, name)] == _worker_parts.FLUSH
    assert made_of[(detect.Detector, "_decide")] == _worker_parts.INCIDENTS
    assert made_of[(worker.BatchWorker, "_emit")] == _worker_parts.OUTPUTS
    for name in ("_commit_point", "_checkpoint_step", "_state_slice"):
        assert made_of[(worker.BatchWorker, name)] == _worker_parts.CHECKPOINT
    assert made_of[(worker.BatchWorker, "_poll")] == made_of[(worker, "_let_io_run")] == _worker_parts.IO


def test_a_call_of_another_task_that_began_first_never_makes_a_part_negative_and_the_total_holds() -> None:
    clock = _Clock()
    parts = Parts(clock=clock)
    y_waits, x_waits = asyncio.Event(), asyncio.Event()

    async def y() -> None:  # begins first: 3 s, waits until x waits, then 1 s
        clock.now += 3.0
        y_waits.set()
        await x_waits.wait()
        clock.now += 1.0

    async def x() -> None:  # begins while y waits: 2 s, waits while y ends, then 2 s
        clock.now += 2.0
        x_waits.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        clock.now += 2.0

    async def later_x() -> None:
        await y_waits.wait()
        await parts.wrap(x, "X")()

    async def both() -> None:
        await asyncio.gather(parts.wrap(y, "Y")(), later_x())

    asyncio.run(both())
    # interleaved this way the split is approximate (module docstring), but nothing is counted twice
    assert all(seconds >= 0.0 for seconds in parts.seconds.values())
    assert sum(parts.seconds.values()) == 8.0
