"""`ringfence-agent ingest`: files in, BehaviorEvent JSON Lines out, a per-file summary on stderr."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.cli import main
from agents.commands.ingest import run_source
from agents.sysmon import SysmonSource
from schemas.codec import decode_event
from schemas.events import BehaviorEvent

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sysmon" / "otrf_excerpt.jsonl"


def _decoded(data: bytes) -> list[BehaviorEvent]:
    return [decode_event(line) for line in data.splitlines() if line.strip()]


def test_ingest_to_a_file_with_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "events.jsonl"
    assert main(["ingest", str(FIXTURE), "--out", str(out)]) == 0
    events = _decoded(out.read_bytes())
    assert len(events) == 15
    assert {event.payload.kind for event in events} >= {"process_start", "registry_set", "dns_query"}
    err = capsys.readouterr().err
    assert "read 17, mapped 15, skipped 2" in err
    assert "unknown_event_id:sysmon:18=1" in err and "unknown_event_id:security:4624=1" in err


def test_ingest_to_stdout_gzip_and_device_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", str(FIXTURE), "--stdout", "--device-id", "lab-1"]) == 0
    events = _decoded(capsys.readouterr().out.encode())
    assert len(events) == 15 and {event.device_id for event in events} == {"lab-1"}
    assert [event.seq for event in events] == list(range(15))
    compressed = tmp_path / "events.jsonl.gz"
    assert main(["ingest", str(FIXTURE), "--out", str(compressed), "--device-id", "lab-1"]) == 0
    assert _decoded(gzip.decompress(compressed.read_bytes())) == events


def test_ingest_searches_directories_and_counts_only_without_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copyfile(FIXTURE, tmp_path / "sub" / "a.jsonl")
    (tmp_path / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(FIXTURE.read_bytes()))
    (tmp_path / "sub" / "notes.txt").write_text("not an input")
    assert main(["ingest", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "a.jsonl [jsonl]" in captured.err and "b.jsonl.gz [jsonl]" in captured.err
    assert "notes.txt" not in captured.err
    assert "total: read 34, mapped 30, skipped 4" in captured.err


def test_hostile_file_is_summarised_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_bytes(b"\x00\xff garbage\n[1]\n" + FIXTURE.read_bytes()[:500])
    assert main(["ingest", str(hostile), "--out", str(tmp_path / "o.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "malformed:bad_json=2" in err and "malformed:not_an_object=1" in err


def test_ingest_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(tmp_path / "missing.evtx")]) == 2
    assert main(["ingest", str(tmp_path)]) == 2  # an empty directory
    compressed = tmp_path / "x.jsonl.gz"
    compressed.write_bytes(gzip.compress(b"{}\n"))
    assert main(["ingest", str(compressed), "--follow", "--duration-s", "1"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "no input files" in err and "only plain JSON Lines" in err


def test_ingest_follow_stops_after_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    growing = tmp_path / "growing.jsonl"
    shutil.copyfile(FIXTURE, growing)
    out = tmp_path / "out.jsonl"
    assert main(["ingest", str(growing), "--follow", "--duration-s", "1", "--poll-interval-s", "0.05",
                 "--out", str(out)]) == 0
    assert len(_decoded(out.read_bytes())) == 15
    assert "jsonl (follow)" in capsys.readouterr().err


async def test_any_async_function_is_a_sink() -> None:
    """The publisher plugs in the same way: an async function consuming the event stream."""
    seen: list[str] = []

    async def sink(events: AsyncIterator[BehaviorEvent]) -> int:
        async for event in events:
            seen.append(event.payload.kind)
        return len(seen)

    assert await run_source(SysmonSource([FIXTURE]), sink) == 15
    assert seen.count("registry_set") == 3
    assert json.loads(FIXTURE.read_text().splitlines()[0])["EventID"] == 4624  # fixture sanity
