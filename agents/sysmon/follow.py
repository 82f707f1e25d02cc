"""Follow a growing JSON Lines file (`tail -F` semantics) as an async stream of records.

Shippers (winlogbeat's file output, nxlog, a scheduled `wevtutil` export) append to a file and
rotate it. The follower:
- reads complete lines only; a partial last line waits for its newline;
- notices truncation (size below the read position) and starts again from the top;
- notices rotation (the path now names another inode): finishes the old file, then opens the new
  one from its beginning; if the path is briefly missing it keeps waiting;
- polls with a bounded interval (backing off from `MIN_POLL_S` to `poll_interval_s` while idle).
Reads are plain local-file reads of at most 64 KiB at a time between awaits, so the event loop
stays responsive. Gzip and .evtx cannot be followed (`FollowError`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agents.sysmon.errors import FollowError, InputFileError
from agents.sysmon.readers import (
    DEFAULT_MAX_LINE_BYTES,
    EVTX_MAGIC,
    GZIP_MAGIC,
    BadRecord,
    ReadItem,
    decode_line,
)

log = logging.getLogger(__name__)

MIN_POLL_S = 0.02
MAX_POLL_S = 5.0
_CHUNK_BYTES = 1 << 16


@dataclass
class _Open:
    handle: IO[bytes]
    inode: tuple[int, int]


def check_followable(path: Path) -> None:
    """Raise FollowError unless `path` is (or will be) a plain text file."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(EVTX_MAGIC))
    except FileNotFoundError:
        return  # may appear later: tail -F waits for it
    except OSError as exc:
        raise InputFileError(path, exc.strerror or type(exc).__name__) from exc
    if head.startswith(GZIP_MAGIC) or head == EVTX_MAGIC:
        raise FollowError(path, "only plain JSON Lines files can be followed (not gzip or .evtx)")


class LineFollower:
    """Complete lines appended to one path, across truncation and rotation."""

    def __init__(self, path: Path, *, from_start: bool = True, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 poll_interval_s: float = 0.5) -> None:
        self.path = path
        self._from_start = from_start
        self._max_line = max_line_bytes
        self._poll_s = min(max(poll_interval_s, MIN_POLL_S), MAX_POLL_S)
        self._open: _Open | None = None
        self._partial = b""
        self._oversize = False
        self.truncations = 0
        self.rotations = 0

    async def lines(self) -> AsyncIterator[bytes | None]:
        """Yield each complete line (None for one over `max_line_bytes`); runs until cancelled."""
        idle_s = MIN_POLL_S
        try:
            while True:
                chunk = self._read_chunk()
                if chunk:
                    idle_s = MIN_POLL_S
                    for line in self._split(chunk):
                        yield line
                    await asyncio.sleep(0)
                    continue
                if self._open is not None and (last := self._check_replaced(self._open)) is not None:
                    yield last
                    continue
                await asyncio.sleep(idle_s)
                idle_s = min(idle_s * 2, self._poll_s)
        finally:
            self._close()

    def _read_chunk(self) -> bytes:
        current = self._open or self._reopen()
        return current.handle.read(_CHUNK_BYTES) if current is not None else b""

    def _reopen(self) -> _Open | None:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return None
        stat = os.fstat(handle.fileno())
        if not self._from_start:
            handle.seek(0, os.SEEK_END)
            self._from_start = True  # only the first file is joined at its end
        self._open = _Open(handle, (stat.st_dev, stat.st_ino))
        return self._open

    def _check_replaced(self, current: _Open) -> bytes | None:
        """At end of file: handle truncation or rotation; returns a last unterminated line if any."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None  # rotated away and not yet recreated: keep waiting
        if (stat.st_dev, stat.st_ino) != current.inode:
            log.info("followed file %s was rotated; reading the new file from its start", self.path)
            self.rotations += 1
            return self._switch()
        if stat.st_size < current.handle.tell():
            log.warning("followed file %s was truncated; reading again from its start", self.path)
            self.truncations += 1
            current.handle.seek(0)
            self._partial, self._oversize = b"", False
        return None

    def _switch(self) -> bytes | None:
        last = None if self._oversize or not self._partial.strip() else self._partial
        self._close()
        self._partial, self._oversize = b"", False
        return last

    def _split(self, chunk: bytes) -> list[bytes | None]:
        pieces = (self._partial + chunk).split(b"\n")
        self._partial = pieces.pop()
        lines: list[bytes | None] = []
        for piece in pieces:
            lines.append(None if self._oversize or len(piece) > self._max_line else piece)
            self._oversize = False
        if len(self._partial) > self._max_line:
            self._partial, self._oversize = b"", True
        return lines

    def _close(self) -> None:
        if self._open is not None:
            self._open.handle.close()
            self._open = None


async def follow_json_lines(path: Path, *, from_start: bool = True, poll_interval_s: float = 0.5,
                            max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> AsyncIterator[ReadItem]:
    """Decoded records of a followed JSON Lines file; damage becomes BadRecords, as in `readers`."""
    check_followable(path)
    follower = LineFollower(path, from_start=from_start, poll_interval_s=poll_interval_s,
                            max_line_bytes=max_line_bytes)
    line_no = 0
    async for line in follower.lines():
        line_no += 1
        if line is None:
            yield BadRecord("line_too_long", f"line {line_no}")
        elif line.strip():
            yield decode_line(line, line_no)
