"""Streaming readers: files of Windows events -> raw records, one at a time.

Inputs are large (a day of Sysmon is hundreds of MB) and hostile (truncated uploads, binary junk,
a 2 GB "line"), so every reader streams with bounded memory and turns damage into `BadRecord`s
that the caller counts, never into an exception that would lose the rest of the file:

- `.evtx` through the `evtx` package (Rust parser, one thread: the agent must stay light);
  a corrupt chunk costs that chunk's records, reported once.
- JSON Lines, plain or gzip: one object per line, any shipper shape (see `records.py`).
  Lines longer than `max_line_bytes` are skipped without being held in memory.
- A JSON array (`[{...}, {...}]`, as PowerShell's ConvertTo-Json writes) is streamed element
  by element.

Follow mode (a growing JSON Lines file) lives in `agents.sysmon.follow`.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import orjson

from agents.sysmon.errors import InputFileError

EVTX_MAGIC = b"ElfFile\x00"
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 1 << 20
_READ_CHUNK_BYTES = 1 << 16
_EVTX_HEADER_BYTES = 4096
_MAX_EVTX_ERRORS = 1000  # a corrupt file stops after this many failed chunks, whatever happens


class InputFormat(StrEnum):
    """What a file holds, decided from its first bytes (the name is only a hint)."""

    EVTX = "evtx"
    JSON_LINES = "jsonl"
    JSON_ARRAY = "json_array"
    BEHAVIOR_EVENTS = "behavior_events"  # our own BehaviorEvent JSON Lines (output of `ingest`)
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One decoded record and an id for it that does not depend on where the file lives."""

    record: dict[str, Any]
    fallback_id: str  # digest of the raw bytes + ordinal: idempotent when no record number exists


@dataclass(frozen=True, slots=True)
class BadRecord:
    """Input that could not be decoded; `reason` is short and stable (it is counted)."""

    reason: str
    position: str  # "line 17", "evtx chunk", ... for the log line


ReadItem = RawRecord | BadRecord


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading, transparently un-gzipping; raises InputFileError if it cannot."""
    try:
        handle: IO[bytes] = path.open("rb")
    except OSError as exc:
        raise InputFileError(path, exc.strerror or type(exc).__name__) from exc
    if handle.read(2) == GZIP_MAGIC:
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    handle.seek(0)
    return handle


def detect_format(path: Path) -> InputFormat:
    """Sniff the first bytes (and first record) of a file, gzip-compressed or not."""
    with path.open("rb") as raw:
        magic = raw.read(len(EVTX_MAGIC))
    if magic == EVTX_MAGIC:
        return InputFormat.EVTX
    try:
        with open_binary(path) as handle:
            head = handle.read(_READ_CHUNK_BYTES)
    except (EOFError, OSError, zlib.error):
        # damaged gzip: let the line reader yield what it can and report where it broke
        return InputFormat.JSON_LINES if magic.startswith(GZIP_MAGIC) else InputFormat.UNKNOWN
    return _format_of_text(head.removeprefix(UTF8_BOM))


def _format_of_text(head: bytes) -> InputFormat:
    """JSON array if the text opens one; JSON Lines if any sniffed line is JSON (a damaged first line
    must not hide a good file); our own events if the first object is a BehaviorEvent."""
    lines = [line.strip() for line in head.lstrip().split(b"\n")]
    non_blank = [line for line in lines if line]
    if lines[0].startswith(b"[") and (len(non_blank) == 1 or not _is_json(lines[0])):
        return InputFormat.JSON_ARRAY  # one line, or `[` followed by pretty-printed elements
    first = next((line for line in non_blank if line.startswith(b"{")), None)
    if first is None:
        return InputFormat.JSON_LINES if any(map(_is_json, non_blank)) else InputFormat.UNKNOWN
    try:
        record = orjson.loads(first)
    except orjson.JSONDecodeError:
        return InputFormat.JSON_LINES  # damaged, or longer than the sniffed head
    if isinstance(record, dict) and {"schema_version", "event_id", "payload"} <= record.keys():
        return InputFormat.BEHAVIOR_EVENTS
    return InputFormat.JSON_LINES


def _is_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def read_evtx(path: Path) -> Iterator[ReadItem]:
    """Records of an .evtx file; a chunk the parser rejects is one BadRecord."""
    import evtx  # the agent extra provides it; imported here so `--help` never needs it

    try:
        records = evtx.PyEvtxParser(str(path), number_of_threads=1).records_json()
    except (RuntimeError, OSError) as exc:
        yield BadRecord("bad_evtx_header", _short(exc))
        return
    produced = 0
    for _ in range(_MAX_EVTX_ERRORS):
        try:
            for item in records:
                produced += 1
                yield _evtx_item(item)
            break
        except RuntimeError as exc:
            produced += 1
            yield BadRecord("bad_evtx_chunk", _short(exc))
    if produced == 0 and path.stat().st_size > _EVTX_HEADER_BYTES:
        yield BadRecord("evtx_without_records", "the parser found no valid chunk")  # junk after a header


def _evtx_item(item: object) -> ReadItem:
    if not isinstance(item, dict):
        return BadRecord("bad_evtx_record", "not a record")
    record_id = str(item.get("event_record_id"))
    try:
        record = orjson.loads(item["data"])
    except (KeyError, TypeError, orjson.JSONDecodeError):
        return BadRecord("bad_evtx_record", f"record {record_id}")
    if not isinstance(record, dict):
        return BadRecord("not_an_object", f"record {record_id}")
    return RawRecord(record, f"evtx:{record_id}")


def read_json_lines(handle: IO[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[ReadItem]:
    """Decode one JSON object per line; blank lines are ignored, damage is reported per line."""
    line_no = 0
    try:
        for line in iter_lines(handle, max_line_bytes):
            line_no += 1
            if line is None:
                yield BadRecord("line_too_long", f"line {line_no}")
            elif line.strip():
                yield decode_line(line, line_no)
    except (EOFError, OSError, zlib.error) as exc:
        yield BadRecord("truncated_or_corrupt_stream", f"after line {line_no}: {_short(exc)}")


def iter_lines(handle: IO[bytes], max_line_bytes: int) -> Iterator[bytes | None]:
    """Lines without holding more than `max_line_bytes`; an over-long line is yielded as None."""
    first = True
    while True:
        line = handle.readline(max_line_bytes + 1)
        if not line:
            return
        if first:
            line, first = line.removeprefix(UTF8_BOM), False
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            _discard_rest_of_line(handle, _READ_CHUNK_BYTES)
            yield None
        else:
            yield line


def _discard_rest_of_line(handle: IO[bytes], chunk_bytes: int) -> None:
    while True:
        piece = handle.readline(chunk_bytes)
        if not piece or piece.endswith(b"\n"):
            return


def decode_line(line: bytes, line_no: int) -> ReadItem:
    """One JSON Lines line -> RawRecord, or BadRecord(bad_json / not_an_object)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return BadRecord("bad_json", f"line {line_no}")
    if not isinstance(record, dict):
        return BadRecord("not_an_object", f"line {line_no}")
    digest = hashlib.blake2b(line.strip(), digest_size=8).hexdigest()
    return RawRecord(record, f"{digest}:{line_no}")


def read_json_array(handle: IO[bytes], max_record_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[ReadItem]:
    """Elements of a top-level JSON array, streamed; stops at the first undecodable element."""
    try:
        yield from _array_elements(handle, max_record_bytes)
    except (EOFError, OSError, zlib.error) as exc:
        yield BadRecord("truncated_or_corrupt_stream", _short(exc))


def _array_elements(handle: IO[bytes], max_record_bytes: int) -> Iterator[ReadItem]:
    decoder = json.JSONDecoder()
    reader = _TextChunks(handle)
    buffer = reader.skip_until("[")
    index = 0
    while buffer is not None:
        buffer = reader.fill(buffer.lstrip(" \t\r\n,"))
        if buffer is None or buffer.startswith("]"):
            return
        try:
            value, end = decoder.raw_decode(buffer)
        except json.JSONDecodeError:
            if reader.exhausted or len(buffer) > max_record_bytes:
                yield BadRecord("bad_json_array", f"element {index}")
                return
            buffer = reader.more(buffer)
            continue
        index += 1
        yield _array_item(value, buffer[:end], index)
        buffer = buffer[end:]


def _array_item(value: object, source: str, index: int) -> ReadItem:
    if not isinstance(value, dict):
        return BadRecord("not_an_object", f"element {index}")
    digest = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return RawRecord(value, f"{digest}:{index}")


class _TextChunks:
    """Incremental UTF-8 text from a binary stream, for the array reader."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.exhausted = False

    def more(self, buffer: str) -> str:
        chunk = self._handle.read(_READ_CHUNK_BYTES)
        if not chunk:
            self.exhausted = True
        return buffer + self._decoder.decode(chunk, final=not chunk)

    def fill(self, buffer: str) -> str | None:
        """Make sure the buffer holds a non-blank character, or report the end (None)."""
        while not buffer.strip(" \t\r\n,"):
            if self.exhausted:
                return None
            buffer = self.more(buffer).lstrip(" \t\r\n,")
        return buffer

    def skip_until(self, marker: str) -> str | None:
        buffer = self.fill(self.more("").lstrip("\ufeff"))
        if buffer is None or not buffer.lstrip().startswith(marker):
            return None
        return buffer.lstrip()[len(marker) :]


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
