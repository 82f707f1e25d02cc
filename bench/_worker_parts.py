"""Where the worker's thread spends `bench_pipeline`'s timed window: its CPU time per part of the path.

Why: the figure of (b) is one number, and the parts that make it are not all what the issue names
("decode, validate, tree update, features, batched score"). On the benchmark's fleet the model raises
an alert every few hundred events, each with its explanation, signed commands and records, and the
window ends with a checkpoint of every device's state; without Kafka, `bench.core_replay --stages`
times the detector's stages but not the outputs, the checkpoint, the clients' I/O, or the time the
thread waits. `--breakdown` shows them all, in one window, summing to 100 %.

How: `Parts` wraps the worker's functions (sync and async) so that each adds its *own* CPU time on
the calling thread (`time.thread_time`) to its part: a wrapped call made inside another is taken out
of the outer one (a flush's incidents are "incidents", not "flush"; decoding ahead during a flush's
predict is "decode"). Calls nest per asyncio task, and a task's outermost wrapped call is taken out of the
calls other tasks have in progress, for at most the time since each began: a rebalance callback's
checkpoint, run by aiokafka's coordinator task while the worker's task awaits its poll, is neither an
inner call of that poll nor part of it. Calls of two tasks that overlap otherwise are split only
approximately (nothing is counted twice); in the bench's window only the worker's task runs them.
An async part includes what other tasks of the loop ran on that thread while it awaited: aiokafka's
sender and fetcher, so "Kafka clients" is the client work done while the worker polled or yielded to
them, and what they did while it awaited its outputs' sends or a checkpoint's acks is in those parts.
What no part claims is "other" (the loop's own glue), and the window less the thread's CPU is "waiting".

The wrappers cost ~1.5-2 us a call (~8,600 calls for 200,000 events, ~1.5 % of the window), so the
headline figure is measured without them; `--breakdown` is for reading where the time goes, in its own
runs.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from pipeline import detect, worker

__all__ = ["PART_NAMES", "Parts", "worker_parts"]

DECODE, TREE, FLUSH = "decode + validate", "tree update", "flush: rows, features, predict"
INCIDENTS = "incidents: explain, alert, commands"
OUTPUTS, CHECKPOINT, IO = "outputs: sign, produce", "checkpoint: states, commit", "Kafka clients"
OTHER, WAITING = "other (the loop's glue)", "waiting (off the CPU)"
PART_NAMES = (DECODE, TREE, FLUSH, INCIDENTS, OUTPUTS, CHECKPOINT, IO, OTHER, WAITING)

# (owner, attribute, part): what each part is made of; a module attribute is looked up when called,
# so replacing it reaches the worker's calls (`worker._decode`, `worker._let_io_run`)
_WRAPPED: tuple[tuple[Any, str, str], ...] = (
    (worker, "_decode", DECODE),
    (detect.Detector, "ingest", TREE),
    (detect.Detector, "flush", FLUSH),
    (detect.Detector, "start_flush", FLUSH),
    (detect.Detector, "finish_flush", FLUSH),
    (detect.Detector, "_decide", INCIDENTS),
    (worker.BatchWorker, "_emit", OUTPUTS),
    (worker.BatchWorker, "_dead_letter", OUTPUTS),
    (worker.BatchWorker, "_commit_point", CHECKPOINT),
    (worker.BatchWorker, "_checkpoint_step", CHECKPOINT),
    (worker.BatchWorker, "_state_slice", CHECKPOINT),
    (worker.BatchWorker, "_poll", IO),  # what it does besides a flush and a state slice: the fetch
    (worker, "_let_io_run", IO),
)


@dataclass
class Parts:
    """Own CPU seconds per part, with a stack per asyncio task of the wrapped calls in progress (see the
    module)."""

    clock: Callable[[], float] = time.thread_time
    seconds: dict[str, float] = field(default_factory=dict)
    _stacks: dict[object, list[list[float]]] = field(default_factory=dict)  # task -> [started, inner]

    def _stack(self) -> list[list[float]]:
        return self._stacks.setdefault(_current_task(), [])

    def enter(self) -> None:
        self._stack().append([self.clock(), 0.0])

    def leave(self, part: str) -> None:
        stack = self._stack()
        started, inner = stack.pop()
        spent = self.clock() - started
        self.seconds[part] = self.seconds.get(part, 0.0) + spent - inner
        if stack:
            stack[-1][1] += spent
            return
        task = _current_task()
        del self._stacks[task]  # an idle task's key is not kept
        now = started + spent
        for other, calls in self._stacks.items():  # one thread: they were suspended meanwhile
            if other is not task and calls:  # (at most since they began: this call may be older)
                calls[-1][1] += min(spent, now - calls[-1][0])

    def wrap(self, function: Callable[..., Any], part: str) -> Callable[..., Any]:
        """`function` (sync or a coroutine function) counting its own CPU time into `part`."""
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                self.enter()
                try:
                    return await function(*args, **kwargs)
                finally:
                    self.leave(part)

            return timed_async

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.enter()
            try:
                return function(*args, **kwargs)
            finally:
                self.leave(part)

        return timed

    def snapshot(self) -> dict[str, float]:
        """The seconds so far, to subtract at a window's end (`window`); the calls in progress count from
        now on only (the window begins inside the worker's poll, a wrapped call)."""
        now = self.clock()
        for stack in self._stacks.values():
            for frame in stack:
                frame[0], frame[1] = now, 0.0
        return dict(self.seconds)

    def window(self, since: dict[str, float], cpu_s: float, wall_s: float) -> dict[str, float]:
        """Seconds per part of `PART_NAMES` over a window: what was added since `since`, then "other" (the
        thread's `cpu_s` no part claimed) and "waiting" (`wall_s` less `cpu_s`)."""
        out = {name: self.seconds.get(name, 0.0) - since.get(name, 0.0) for name in PART_NAMES[:-2]}
        out[OTHER] = max(cpu_s - sum(out.values()), 0.0)
        out[WAITING] = max(wall_s - cpu_s, 0.0)
        return out


def _current_task() -> object:
    """The running asyncio task, or None outside one (a sync call with no loop running)."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


@contextmanager
def worker_parts(parts: Parts) -> Iterator[Parts]:
    """The worker's functions wrapped to count into `parts` while inside, then restored."""
    with ExitStack() as stack:
        for owner, name, part in _WRAPPED:
            original = getattr(owner, name)
            setattr(owner, name, parts.wrap(original, part))
            stack.callback(setattr, owner, name, original)
        yield parts
