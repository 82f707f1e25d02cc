"""The live source's hand-over: events pushed to a sink from the callbacks, the rest through `take()`,
in order, never twice, and never lost when the sink refuses or fails."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from agents.linux.handover import Handover
from schemas.events import BehaviorEvent, FileWrite, Platform


def event(n: int) -> BehaviorEvent:
    return BehaviorEvent(event_id=f"ev-{n}", device_id="dev", seq=0, ts=datetime(2026, 1, 1, tzinfo=UTC),
                         platform=Platform.LINUX, process_key="linux:unattributed",
                         payload=FileWrite(path=f"/w/{n}"))


def ids(events: list[BehaviorEvent]) -> list[str]:
    return [e.event_id for e in events]


async def test_the_sink_takes_what_it_has_room_for_and_take_gets_the_rest_in_order() -> None:
    out = Handover("test")
    room = 2
    got: list[BehaviorEvent] = []

    def sink(e: BehaviorEvent) -> bool:
        nonlocal room
        if room == 0:
            return False
        room -= 1
        got.append(e)
        return True

    out.attach(sink)
    out.pending.extend(event(n) for n in range(4))
    assert out.push() == 2 and ids(got) == ["ev-0", "ev-1"]
    batch = await asyncio.wait_for(out.take(), 1)
    assert ids(batch) == ["ev-2", "ev-3"]
    room = 5
    out.pending.append(event(4))
    assert out.push() == 0  # the taken batch is still being yielded: later events wait behind it
    out.yielded()
    assert out.push() == 1 and ids(got)[-1] == "ev-4" and out.pending == []


async def test_without_a_sink_everything_goes_through_take() -> None:
    out = Handover("test")
    out.pending.extend(event(n) for n in range(3))
    assert out.push() == 0
    assert ids(await asyncio.wait_for(out.take(), 1)) == ["ev-0", "ev-1", "ev-2"]


async def test_a_failing_sink_is_dropped_and_keeps_the_event_it_failed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = Handover("test")
    calls = 0

    def sink(e: BehaviorEvent) -> bool:
        nonlocal calls
        calls += 1
        if e.event_id == "ev-1":
            raise RuntimeError("boom")
        return True

    out.attach(sink)
    out.pending.extend(event(n) for n in range(3))
    assert out.push() == 1
    assert ids(await asyncio.wait_for(out.take(), 1)) == ["ev-1", "ev-2"]
    out.yielded()
    out.pending.append(event(3))
    assert out.push() == 0 and calls == 2  # not offered to the failed sink again
    assert "event sink of source test failed" in caplog.text
