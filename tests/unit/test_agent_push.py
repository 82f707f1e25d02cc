"""`ringfence-agent run` with a source that pushes events from its own callbacks (`PushSource`, as
the live Linux source does): what the sink takes and what the source yields when the sink is full
reach Kafka once each, in order, and every plugin observes each event once, before it is queued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeKafka

from agents.commands import run as run_command
from agents.commands.run import AgentContext, run_agent
from agents.settings import AgentSettings
from agents.sources import PushSource, SourceStats
from schemas.events import BehaviorEvent, FileWrite, Platform
from schemas.topics import KafkaSettings

EVENTS = "t.events"


def event(n: int) -> BehaviorEvent:
    return BehaviorEvent(event_id=f"ev-{n:04d}", device_id="lab-1", seq=0,
                         ts=datetime(2026, 1, 1, tzinfo=UTC), platform=Platform.LINUX, process_key="k" * 32,
                         payload=FileWrite(path=f"/w/{n}"))


class BurstSource:
    """Pushes bursts from loop callbacks like a kernel reader; what the sink refuses, and everything
    after it in the burst, is yielded by `events()` (the contract of `PushSource`)."""

    name = "burst"

    def __init__(self, bursts: list[list[BehaviorEvent]]) -> None:
        self.stats = SourceStats()
        self.sink: Callable[[BehaviorEvent], bool] | None = None
        self.pushed = 0
        self._bursts = bursts
        self._left: asyncio.Queue[BehaviorEvent | None] = asyncio.Queue()

    def attach_sink(self, sink: Callable[[BehaviorEvent], bool]) -> None:
        self.sink = sink

    async def events(self) -> AsyncIterator[BehaviorEvent]:
        loop = asyncio.get_running_loop()
        for index, burst in enumerate(self._bursts):
            loop.call_later(0.05 * index, self._push, burst)
        loop.call_later(0.05 * len(self._bursts), self._left.put_nowait, None)
        while (left := await self._left.get()) is not None:
            yield left

    def _push(self, burst: list[BehaviorEvent]) -> None:
        refused = not self._left.empty()  # earlier refused events go first: keep the order
        for item in burst:
            if not refused and self.sink is not None and self.sink(item):
                self.pushed += 1
                continue
            refused = True
            self._left.put_nowait(item)


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def observe(self, event: BehaviorEvent) -> None:
        self.seen.append(event.event_id)

    async def run(self, context: AgentContext) -> None:
        await asyncio.Event().wait()


async def test_pushed_and_yielded_events_reach_kafka_once_in_order_and_are_observed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [event(n) for n in range(60)]
    source = BurstSource([events[:5], events[5:45], events[45:]])  # the middle burst overfills the queue
    assert isinstance(source, PushSource)
    recorder = Recorder()
    monkeypatch.setattr(run_command, "PLUGIN_BUILDERS", [lambda _s, _k: recorder])
    settings: dict[str, Any] = dict(device_id="lab-1", enforce=False, spool_dir=tmp_path / "spool",
                                    linger_ms=20, spool_commit_ms=50, queue_max_events=8,
                                    events_topic=EVENTS, devices_topic="t.devices")
    kafka = FakeKafka()
    await run_agent(AgentSettings(**settings), KafkaSettings(), sources=[source],
                    producer_factory=kafka.factory, duration_s=1.5)
    sent = [e for batch in kafka.batches(EVENTS) for e in batch.events]
    assert [e.event_id for e in sent] == [e.event_id for e in events]
    assert [e.seq for e in sent] == list(range(60))
    assert recorder.seen == [e.event_id for e in events]
    assert 8 <= source.pushed < 60  # both paths were used: the sink while there was room
