"""Follow mode: a growing JSON Lines file is read as it grows, across truncation and rotation."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.sysmon import FollowError, SysmonSource
from agents.sysmon.follow import MAX_POLL_S, MIN_POLL_S, LineFollower
from schemas.events import BehaviorEvent

POLL_S = 0.05
TIMEOUT_S = 10.0


def _line(number: int, path: str = "C:\\t.txt") -> bytes:
    record = {"EventID": 11, "Channel": "Microsoft-Windows-Sysmon/Operational", "Hostname": "h1",
              "UtcTime": "2021-01-01 00:00:00.000", "ProcessGuid": "{11111111-2222-3333-4444-555555555555}",
              "Image": "C:\\a.exe", "TargetFilename": path, "RecordNumber": number}
    return json.dumps(record).encode() + b"\n"


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


async def _take(events: AsyncIterator[BehaviorEvent], count: int) -> list[BehaviorEvent]:
    taken: list[BehaviorEvent] = []
    async with asyncio.timeout(TIMEOUT_S):
        while len(taken) < count:
            taken.append(await anext(events))
    return taken


def _numbers(events: list[BehaviorEvent]) -> list[str]:
    return [event.payload.model_dump()["path"] for event in events]


async def test_follow_picks_up_appended_and_completed_lines(tmp_path: Path) -> None:
    path = tmp_path / "sysmon.jsonl"
    path.write_bytes(_line(1, "one") + _line(2, "two"))
    source = SysmonSource([path], follow=True, poll_interval_s=POLL_S)
    events = source.events()
    try:
        assert _numbers(await _take(events, 2)) == ["one", "two"]
        partial = _line(3, "three")
        _append(path, partial[:20])  # a writer in the middle of a line: nothing yet
        await asyncio.sleep(POLL_S * 4)
        _append(path, partial[20:] + b"not json\n" + _line(4, "four"))
        later = await _take(events, 2)
        assert _numbers(later) == ["three", "four"]
        assert [event.seq for event in later] == [2, 3]
        assert source.stats.skipped == {"malformed:bad_json": 1}
        assert source.stats.emitted == 4
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_follow_restarts_after_truncation(tmp_path: Path) -> None:
    path = tmp_path / "sysmon.jsonl"
    path.write_bytes(_line(1, "old-1") + _line(2, "old-2"))
    events = SysmonSource([path], follow=True, poll_interval_s=POLL_S).events()
    try:
        await _take(events, 2)
        path.write_bytes(_line(3, "new"))  # truncated and rewritten, shorter than before
        assert _numbers(await _take(events, 1)) == ["new"]
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_follow_switches_to_the_new_file_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "sysmon.jsonl"
    path.write_bytes(_line(1, "before"))
    events = SysmonSource([path], follow=True, poll_interval_s=POLL_S).events()
    try:
        await _take(events, 1)
        _append(path, _line(2, "last-of-old").rstrip(b"\n"))  # unterminated when rotated
        path.rename(tmp_path / "sysmon.jsonl.1")
        await asyncio.sleep(POLL_S * 2)  # the path is briefly missing: keep waiting
        path.write_bytes(_line(3, "first-of-new"))
        assert _numbers(await _take(events, 2)) == ["last-of-old", "first-of-new"]
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_follow_waits_for_a_file_that_does_not_exist_yet(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    events = SysmonSource([path], follow=True, poll_interval_s=POLL_S).events()
    try:
        reader = asyncio.ensure_future(_take(events, 1))
        await asyncio.sleep(POLL_S * 3)
        assert not reader.done()
        path.write_bytes(_line(1, "arrived"))
        assert _numbers(await reader) == ["arrived"]
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_follow_several_files_at_once(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(_line(1, "a1"))
    second.write_bytes(_line(1, "b1"))
    source = SysmonSource([first, second], follow=True, poll_interval_s=POLL_S)
    events = source.events()
    try:
        got = await _take(events, 2)
        _append(second, _line(2, "b2"))
        got += await _take(events, 1)
        assert sorted(_numbers(got)) == ["a1", "b1", "b2"]
        assert len(source.file_stats) == 2
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_over_long_lines_are_skipped_while_following(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"")
    follower = LineFollower(path, max_line_bytes=1000, poll_interval_s=POLL_S)
    lines = follower.lines()
    try:
        _append(path, b"x" * 700)
        await asyncio.sleep(POLL_S * 2)
        _append(path, b"y" * 700 + b"\nshort\n")
        async with asyncio.timeout(TIMEOUT_S):
            assert [await anext(lines), await anext(lines)] == [None, b"short"]
    finally:
        await lines.aclose()  # type: ignore[attr-defined]


async def test_cannot_follow_gzip_or_evtx(tmp_path: Path) -> None:
    compressed = tmp_path / "x.jsonl.gz"
    compressed.write_bytes(gzip.compress(_line(1)))
    evtx = tmp_path / "x.evtx"
    evtx.write_bytes(b"ElfFile\x00" + b"\x00" * 100)
    for path in (compressed, evtx):
        with pytest.raises(FollowError):
            await anext(SysmonSource([path], follow=True).events())


def test_poll_interval_is_bounded(tmp_path: Path) -> None:
    assert LineFollower(tmp_path / "x", poll_interval_s=3600)._poll_s == MAX_POLL_S
    assert LineFollower(tmp_path / "x", poll_interval_s=0)._poll_s == MIN_POLL_S


async def test_whole_files_through_the_async_source(tmp_path: Path) -> None:
    path = tmp_path / "done.jsonl"
    path.write_bytes(b"".join(_line(number, f"f{number}") for number in range(1500)))
    source = SysmonSource([path])
    events = [event async for event in source.events()]
    assert [event.seq for event in events] == list(range(1500))
    assert (source.stats.read, source.stats.emitted) == (1500, 1500)
