"""Ship a finite stream of events (`ingest --kafka`, `replay --kafka`) with the agent's spool and publisher.

Why not a bare producer: a one-shot import deserves the same guarantees as `ringfence-agent run` —
each event is on disk before it is sent, EventBatch records keyed by device_id are acknowledged with
acks=all and idempotence, and whatever the broker did not acknowledge by the flush deadline stays in
the spool and is sent first by the next command that uses the same spool (`BacklogLeft` says so).
A spool is used by one process at a time (`agents.spool` locks it), so the import commands default
to a spool of their own beside the agent's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agents.publisher import ProducerFactory, Publisher, PublisherConfig
from agents.spool import Spool

if TYPE_CHECKING:
    from schemas.events import BehaviorEvent

__all__ = ["BacklogLeft", "KafkaSinkConfig", "kafka_sink"]

EventSink = Callable[["AsyncIterator[BehaviorEvent]"], Awaitable[int]]


class BacklogLeft(Exception):
    """The flush deadline passed with events still spooled (broker unreachable or slow)."""

    def __init__(self, pending_events: int, spool_path: Path) -> None:
        super().__init__(f"{pending_events} events were not acknowledged by the broker and stay spooled in "
                         f"{spool_path}; the next run with this spool sends them first")
        self.pending_events = pending_events
        self.spool_path = spool_path


@dataclass(frozen=True, slots=True)
class KafkaSinkConfig:
    """Where to spool, how to publish, and how long to wait for the broker at the end."""

    spool_path: Path
    publisher: PublisherConfig
    spool_max_bytes: int = 256 << 20
    spool_sync: Literal["full", "normal"] = "full"
    flush_timeout_s: float = 60.0  # after the input ends, keep sending the backlog this long


def kafka_sink(config: KafkaSinkConfig, producer_factory: ProducerFactory) -> EventSink:
    """A sink that spools and publishes every event; returns how many it took (raises `BacklogLeft`)."""

    async def sink(events: AsyncIterator[BehaviorEvent]) -> int:
        spool = Spool(config.spool_path, max_bytes=config.spool_max_bytes, sync=config.spool_sync)
        publisher = Publisher(spool, producer_factory, config.publisher)
        publisher.start()
        count = 0
        stopped: asyncio.CancelledError | None = None
        try:
            async for event in events:
                await publisher.submit(event)
                count += 1
        except asyncio.CancelledError as exc:  # a time limit ran out: flush what was taken, then say so
            stopped = exc
        finally:
            await publisher.close(config.flush_timeout_s)
            pending = spool.pending_events
            spool.close()
        if pending:
            raise BacklogLeft(pending, config.spool_path)
        if stopped is not None:
            raise stopped
        return count

    return sink
