"""Event sources: the one interface every collector (live Linux, Sysmon files, replay) implements.

Several sources run at once inside one agent, so the publisher needs nothing from a source but an
async stream of `BehaviorEvent`s and a set of counters it can report (heartbeats, CLI summaries).
Keeping the contract this small lets a source be a file reader, a kernel connector or a test stub.

Sources do not assign anything the publisher owns: they set `seq` per device in the order they
read (the publisher may re-sequence if it merges several sources for one device).

A source that cannot start with its configuration (no input files, a file that is not what the
source reads) raises `SourceConfigError` from its builder, before the agent starts anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from schemas.events import BehaviorEvent

__all__ = ["MAX_SKIP_REASONS", "PushSource", "Source", "SourceConfigError", "SourceStats"]

MAX_SKIP_REASONS = 256
"""Distinct skip reasons kept; hostile input could otherwise grow the counter without bound."""


class SourceConfigError(Exception):
    """A source cannot be built from its settings; the message names the source and the problem."""


@dataclass
class SourceStats:
    """Counters a source keeps while it runs; mutable on purpose (updated per record, read often).

    `skipped` is keyed by a short reason such as `unknown_event_id:security:4624` or
    `malformed:bad_json` so that an operator can see *why* input did not become events, not only
    how much. `by_kind` counts emitted events per payload kind.
    """

    read: int = 0  # raw records seen (lines, evtx records, kernel messages)
    emitted: int = 0  # BehaviorEvents yielded
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    by_kind: Counter[str] = field(default_factory=Counter)  # payload kind -> count

    def skip(self, reason: str) -> None:
        """Count one record that did not become an event, with its reason."""
        if reason not in self.skipped and len(self.skipped) >= MAX_SKIP_REASONS:
            reason = f"{reason.split(':', 1)[0]}:other"
        self.skipped[reason] += 1

    def emit(self, kind: str) -> None:
        """Count one event yielded, by its payload kind."""
        self.emitted += 1
        self.by_kind[kind] += 1

    @property
    def skipped_total(self) -> int:
        """All skipped records, whatever the reason."""
        return sum(self.skipped.values())

    def merge(self, other: SourceStats) -> None:
        """Add another set of counters into this one (e.g. per-file stats into a source total)."""
        self.read += other.read
        self.emitted += other.emitted
        self.skipped.update(other.skipped)
        self.by_kind.update(other.by_kind)


@runtime_checkable
class Source(Protocol):
    """A producer of behaviour events.

    `events()` returns a fresh async iterator; it ends when the source is exhausted (a file read to
    its end) or runs until cancelled (live collection, follow mode). Cancelling the consuming task
    must release the source's resources.
    """

    name: str
    stats: SourceStats

    def events(self) -> AsyncIterator[BehaviorEvent]:
        """Stream this source's events in read order."""
        ...


@runtime_checkable
class PushSource(Source, Protocol):
    """A source that can also hand events over from its own callbacks, without a task switch per
    event (the live Linux source: waking a consumer task costs more than the event on small hosts).

    `attach_sink(sink)` before iterating `events()`: the source then calls `sink(event)`, in order,
    for what it collects; `sink` takes the event now and returns True, or returns False when it has
    no room, and that event and the later ones are yielded by `events()` instead (which may wait).
    """

    def attach_sink(self, sink: Callable[[BehaviorEvent], bool]) -> None:
        """Hand events to `sink` from now on (see the class)."""
        ...
