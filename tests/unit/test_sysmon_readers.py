"""File readers: format detection, JSON Lines / gzip / JSON array / evtx, and hostile input files.

Hostile files must end as counted skips with a reason, never as an exception, and must not be
loaded whole into memory.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import tracemalloc
from itertools import islice
from pathlib import Path

import pytest
from shared_data import shared_datasets

from agents.sysmon import FileStats, InputFileError, load_events
from agents.sysmon.readers import InputFormat, detect_format

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sysmon" / "otrf_excerpt.jsonl"
FIXTURE_KINDS = {"process_start": 3, "network_connect": 1, "process_end": 1, "image_load": 1,
                 "remote_thread": 1, "process_access": 1, "file_create": 1, "registry_set": 3, "dns_query": 1,
                 "file_delete": 2}
SYSMON_LINE = {"EventID": 11, "Channel": "Microsoft-Windows-Sysmon/Operational", "Hostname": "h1",
               "UtcTime": "2021-01-01 00:00:00.000", "ProcessGuid": "{11111111-2222-3333-4444-555555555555}",
               "Image": "C:\\a.exe", "TargetFilename": "C:\\t.txt"}


def _shared_evtx() -> Path:
    return sorted(shared_datasets("evtx-samples").glob("TA0006*.evtx"))[0]


def _load(path: Path) -> FileStats:
    stats = FileStats()
    for _ in load_events(path, stats=stats):
        pass
    return stats


def _line(**changes: object) -> bytes:
    return json.dumps({**SYSMON_LINE, **changes}).encode() + b"\n"


def test_fixture_maps_every_kind_and_counts_the_rest() -> None:
    stats = _load(FIXTURE)
    assert stats.format == InputFormat.JSON_LINES
    assert dict(stats.by_kind) == FIXTURE_KINDS
    assert dict(stats.skipped) == {"unknown_event_id:sysmon:18": 1, "unknown_event_id:security:4624": 1}
    assert stats.read == 17


def test_gzip_and_json_array_give_the_same_events(tmp_path: Path) -> None:
    plain = list(load_events(FIXTURE))
    compressed = tmp_path / "excerpt.jsonl.gz"
    compressed.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    records = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    array = tmp_path / "excerpt.json"
    array.write_text(json.dumps(records, indent=2))
    assert detect_format(compressed) == InputFormat.JSON_LINES
    assert detect_format(array) == InputFormat.JSON_ARRAY
    assert list(load_events(compressed)) == plain
    from_array = list(load_events(array))
    assert [event.payload for event in from_array] == [event.payload for event in plain]


def test_format_detection(tmp_path: Path) -> None:
    cases = {"empty.jsonl": b"", "text.jsonl": b"hello world\n", "bom.jsonl": b"\xef\xbb\xbf" + _line(),
             "events.jsonl": next(iter(load_events(FIXTURE))).model_dump_json().encode() + b"\n",
             "junk-first.jsonl": b"\x00\xff junk\n" + _line(), "list-first.jsonl": b"[1]\n" + _line(),
             "one-line-array.json": b"[" + _line().strip() + b"]"}
    expected = {"empty.jsonl": InputFormat.UNKNOWN, "text.jsonl": InputFormat.UNKNOWN,
                "bom.jsonl": InputFormat.JSON_LINES, "events.jsonl": InputFormat.BEHAVIOR_EVENTS,
                "junk-first.jsonl": InputFormat.JSON_LINES, "list-first.jsonl": InputFormat.JSON_LINES,
                "one-line-array.json": InputFormat.JSON_ARRAY}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert detect_format(tmp_path / name) == expected[name], name
    assert detect_format(_shared_evtx()) == InputFormat.EVTX


def test_missing_path_or_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"missing\.evtx"):
        list(load_events(tmp_path / "missing.evtx"))
    with pytest.raises(InputFileError):
        list(load_events(tmp_path))


def test_binary_garbage_is_counted_not_raised(tmp_path: Path) -> None:
    rng = random.Random(7)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"{" + bytes(rng.randrange(256) for _ in range(200_000)))
    stats = _load(garbage)
    assert stats.emitted == 0
    assert stats.read == stats.skipped_total > 0
    assert set(stats.skipped) <= {"malformed:bad_json", "malformed:line_too_long"}
    unknown = tmp_path / "garbage.bin"
    noise = bytes(rng.randrange(256) for _ in range(1000))
    unknown.write_bytes(noise.replace(b"{", b"x").replace(b"[", b"x"))
    assert dict(_load(unknown).skipped) == {"malformed:unknown_format": 1}


def test_garbage_and_corrupt_evtx(tmp_path: Path) -> None:
    fake = tmp_path / "fake.evtx"
    fake.write_bytes(b"ElfFile\x00" + random.Random(1).randbytes(5000))
    assert dict(_load(fake).skipped) == {"malformed:bad_evtx_header": 1}
    fake.write_bytes(b"ElfFile\x00" + random.Random(1).randbytes(70_000))  # header accepted, no chunk
    assert dict(_load(fake).skipped) == {"malformed:evtx_without_records": 1}
    corrupt = tmp_path / "corrupt.evtx"
    shutil.copyfile(_shared_evtx(), corrupt)
    with corrupt.open("r+b") as handle:  # damage the first chunk's string table
        handle.seek(4096 + 512 + 200)
        handle.write(random.Random(3).randbytes(3000))
    stats = _load(corrupt)
    assert stats.skipped["malformed:bad_evtx_chunk"] == 1
    assert stats.emitted == 0


def test_truncated_gzip_keeps_what_came_before(tmp_path: Path) -> None:
    lines = b"".join(_line(RecordNumber=n) for n in range(2000))
    data = gzip.compress(lines)
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(data[: len(data) // 2])
    stats = _load(truncated)
    assert 0 < stats.emitted < 2000
    assert stats.skipped["malformed:truncated_or_corrupt_stream"] == 1
    tiny = tmp_path / "tiny.jsonl.gz"
    tiny.write_bytes(data[:15])  # header only
    assert _load(tiny).skipped["malformed:truncated_or_corrupt_stream"] == 1


def test_huge_line_is_skipped_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as handle:
        handle.write(_line(RecordNumber=1))
        handle.write(b'{"EventID": 1, "CommandLine": "' + b"A" * 8_000_000 + b'"}\n')
        handle.write(_line(RecordNumber=2))
    tracemalloc.start()
    try:
        stats = _load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (stats.emitted, dict(stats.skipped)) == (2, {"malformed:line_too_long": 1})
    assert peak < 3_000_000  # the 8 MB line never sat in memory (limit: 1 MiB per line)


def test_streams_large_files_lazily(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as handle:
        for number in range(20_000):
            handle.write(_line(RecordNumber=number, CommandLine="x" * 1000))
    tracemalloc.start()
    try:
        first = list(islice(load_events(path), 10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(first) == 10
    assert path.stat().st_size > 20_000_000
    assert peak < 2_000_000


@pytest.mark.parametrize(("content", "reason"), [
    (b"[1, 2, 3]\n", "malformed:not_an_object"),
    (b"42\n", "malformed:not_an_object"),
    (b'"text"\n', "malformed:not_an_object"),
    (b"null\n", "malformed:not_an_object"),
    (b"\x00" * 64 + b"\n", "malformed:bad_json"),
    (b'{"EventID": 1, "Image": "a\x00b"}\n', "malformed:bad_json"),  # raw NUL inside a string
    (b'{"EventID": 1, "Image": "\xff\xfe"}\n', "malformed:bad_json"),  # invalid UTF-8
    (b'{"EventID": 1, "Image": ', "malformed:bad_json"),  # cut mid-record, no newline
    (b'{"EventID": {"deep": [1, {"x": null}]}, "Channel": 5}\n', "not_an_event"),
    (b'{"EventID": 11, "Channel": ["Microsoft-Windows-Sysmon/Operational"]}\n', "unsupported_channel:none"),
])
def test_hostile_lines_are_counted_with_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "hostile.jsonl"
    terminated = content if content.endswith(b"\n") else content + b"\n"
    path.write_bytes(_line(RecordNumber=1) + terminated + _line(RecordNumber=2))
    stats = _load(path)
    assert stats.emitted == 2
    assert dict(stats.skipped) == {reason: 1}


def test_wrong_field_types_are_counted_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "types.jsonl"
    path.write_bytes(_line(TargetFilename=["a", "b"]) + _line(ProcessGuid=12345, RecordNumber=9)
                     + _line(UtcTime={"when": "now"}) + _line(Hostname=None))
    stats = _load(path)
    assert dict(stats.skipped) == {"missing_field:TargetFilename": 1, "missing_field:UtcTime/TimeCreated": 1,
                                   "no_device": 1}
    assert stats.emitted == 1  # a numeric ProcessGuid is still a usable key


def test_escaped_nul_crlf_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _line(RecordNumber=1).replace(b"\n", b"\r\n") + b"\n   \n"
                     + _line(RecordNumber=2, TargetFilename="C:\\a\u0000b.txt"))
    events = list(load_events(path))
    assert [event.payload.model_dump()["path"] for event in events] == ["C:\\t.txt", "C:\\a\x00b.txt"]


def test_skip_reasons_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "channels.jsonl"
    path.write_bytes(b"".join(_line(Channel=f"channel-{number}") for number in range(600)))
    stats = _load(path)
    assert stats.skipped_total == 600
    assert len(stats.skipped) <= 257
    assert stats.skipped["unsupported_channel:other"] > 0


def test_json_array_with_a_broken_element_stops_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_bytes(b"[" + _line(RecordNumber=1) + b"," + _line(RecordNumber=2) + b", {broken ...")
    stats = _load(path)
    assert stats.emitted == 2
    assert dict(stats.skipped) == {"malformed:bad_json_array": 1}
