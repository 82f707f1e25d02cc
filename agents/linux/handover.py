"""How the live source's events reach its consumer: pushed to a sink, or yielded by `events()`.

Why two ways: the reader callbacks run on the event loop with nothing to wait for, so the cheapest
hand-over is a direct call into the consumer (the agent queues events for the publisher) from the
callback that built them: no task to wake per kernel message, which on a small host costs more than
the events themselves (BENCHMARKS.md, "Agent"). A sink cannot wait, though: when it has no room,
what it refused (and everything gathered after it) waits here and wakes the `events()` generator,
whose consumer can wait, and so backpressure pauses the readers as before.

Order holds across both ways: the sink is offered events only while no batch taken by `events()` is
still being yielded, and always the oldest gathered first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from schemas.events import BehaviorEvent

__all__ = ["Handover", "Sink"]

log = logging.getLogger(__name__)

Sink = Callable[[BehaviorEvent], bool]  # takes one event now, or returns False when it has no room


class Handover:
    """Events gathered by the readers, not yet taken by the consumer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: list[BehaviorEvent] = []
        self._sink: Sink | None = None
        self._yielding = False  # `events()` is yielding a taken batch: the sink waits its turn
        self._wake = asyncio.Event()

    def attach(self, sink: Sink) -> None:
        self._sink = sink

    def wake(self) -> None:
        """Have `take()` return now (the readers paused: it resumes them)."""
        self._wake.set()

    def push(self) -> int:
        """Give what is pending to the sink, in order, as far as it has room, and say how many it
        took; the rest (all of it without a sink, or while an earlier batch is being yielded) wakes
        `take()`."""
        taken = 0
        if self.pending and self._sink is not None and not self._yielding:
            taken = self._offer(self._sink)
            del self.pending[:taken]
        if self.pending:
            self._wake.set()
        return taken

    async def take(self) -> list[BehaviorEvent]:
        """Wait until something is left for `events()` (or `wake()`), and take it; call `yielded()`
        once it has all been handed over."""
        await self._wake.wait()
        self._wake.clear()
        batch, self.pending = self.pending, []
        self._yielding = True
        return batch

    def yielded(self) -> None:
        self._yielding = False

    def _offer(self, sink: Sink) -> int:
        """How many pending events the sink took (a sink that fails is dropped: `take()` takes over)."""
        for taken, event in enumerate(self.pending):
            try:
                if not sink(event):
                    return taken
            except Exception:
                log.exception("event sink of source %s failed; events go through events() from now on",
                              self.name)
                self._sink = None
                return taken  # offered again by events(): at-least-once, like the rest of the path
        return len(self.pending)
