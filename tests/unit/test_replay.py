"""Replay of BehaviorEvent JSON Lines: pacing (with a fake clock), speeds, gaps, retiming, bad lines, CLI."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.cli import main
from agents.replay import Pacer, ReplaySource
from agents.sources import Source
from schemas.codec import encode_event
from schemas.events import BehaviorEvent, FileCreate, Platform

START = datetime(2021, 1, 1, tzinfo=UTC)


def _event(seq: int, offset_s: float, device: str = "dev-1") -> BehaviorEvent:
    return BehaviorEvent(
        event_id=f"e{device}{seq}", device_id=device, seq=seq, ts=START + timedelta(seconds=offset_s),
        platform=Platform.WINDOWS, process_key="p1", payload=FileCreate(path=f"C:\\f{seq}"))


def _write(path: Path, events: list[BehaviorEvent], extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(encode_event(event) + b"\n" for event in events) + extra)
    return path


class FakeTime:
    """A monotonic clock that only moves when the replay sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now_s += seconds


async def _replay(paths: list[Path], pacer: Pacer, *, retime: bool = False
                  ) -> tuple[list[BehaviorEvent], FakeTime, ReplaySource]:
    fake = FakeTime()
    source = ReplaySource(paths, pacer, retime=retime, clock=fake.clock, sleep=fake.sleep,
                          now=lambda: datetime(2030, 6, 1, tzinfo=UTC))
    return [event async for event in source.events()], fake, source


async def test_recorded_speed_waits_the_recorded_gaps(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [_event(0, 0), _event(1, 2.5), _event(2, 2.5), _event(3, 10)])
    events, fake, source = await _replay([path], Pacer(speed=1))
    assert [event.seq for event in events] == [0, 1, 2, 3]
    assert fake.sleeps == [2.5, 7.5]
    assert isinstance(source, Source)


async def test_accelerated_and_as_fast_as_possible(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [_event(0, 0), _event(1, 10), _event(2, 30)])
    _, fast, _ = await _replay([path], Pacer(speed=10))
    assert fast.sleeps == [1.0, 2.0]
    events, instant, _ = await _replay([path], Pacer(speed=0))
    assert instant.sleeps == [] and len(events) == 3


async def test_long_gaps_are_squeezed_and_backwards_time_is_released_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [_event(0, 0), _event(1, 3600), _event(2, 3000), _event(3, 3601)])
    _, fake, _ = await _replay([path], Pacer(speed=1, max_gap_s=5))
    assert fake.sleeps == [5.0, 1.0]


def test_pacing_is_anchored_so_slow_consumers_catch_up() -> None:
    pacer = Pacer(speed=2)
    assert pacer.delay_s(offset_s=10, started_at_s=100, now_s=100) == 5
    assert pacer.delay_s(offset_s=10, started_at_s=100, now_s=104) == 1
    assert pacer.delay_s(offset_s=10, started_at_s=100, now_s=120) == 0  # late: no waiting, no drift


async def test_retime_moves_events_to_their_release_times(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [_event(0, 0), _event(1, 20)])
    events, _, _ = await _replay([path], Pacer(speed=10), retime=True)
    now = datetime(2030, 6, 1, tzinfo=UTC)
    assert [event.ts for event in events] == [now, now + timedelta(seconds=2)]
    assert [event.event_id for event in events] == ["edev-10", "edev-11"]  # ids are kept


async def test_bad_lines_are_counted_and_several_files_play_in_order(tmp_path: Path) -> None:
    bad_lines = b'{not json}\n\n{"schema_version": "1.0"}\n'
    first = _write(tmp_path / "a.jsonl", [_event(0, 0)], extra=bad_lines)
    second = tmp_path / "b.jsonl.gz"
    second.write_bytes(gzip.compress(encode_event(_event(1, 1)) + b"\n"))
    events, _, source = await _replay([first, second], Pacer(speed=0))
    assert [event.seq for event in events] == [0, 1]
    assert source.stats.read == 4 and source.stats.emitted == 2
    assert source.stats.skipped == {"invalid_event:DecodeError": 1, "invalid_event:ValidationFailed": 1}


def test_pacer_rejects_negative_settings() -> None:
    with pytest.raises(ValueError, match="speed"):
        Pacer(speed=-1)
    with pytest.raises(ValueError, match="max_gap_s"):
        Pacer(speed=1, max_gap_s=-2)


def test_replay_command_writes_the_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recorded = [_event(0, 0), _event(1, 0.01), _event(0, 0.02, device="dev-2")]
    path = _write(tmp_path / "r.jsonl", recorded)
    out = tmp_path / "out.jsonl"
    assert main(["replay", str(path), "--speed", "0", "--out", str(out)]) == 0
    assert out.read_bytes() == path.read_bytes()
    assert "total: read 3, mapped 3, skipped 0" in capsys.readouterr().err


def test_replay_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    not_events = tmp_path / "sysmon.jsonl"
    not_events.write_text('{"EventID": 1}\n')
    assert main(["replay", str(not_events)]) == 2
    good = _write(tmp_path / "r.jsonl", [_event(0, 0)])
    assert main(["replay", str(good), "--speed", "-3"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "ringfence-agent ingest" in err and "speed must be >= 0" in err
