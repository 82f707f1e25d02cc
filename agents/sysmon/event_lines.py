"""Reading our own BehaviorEvent JSON Lines back (replay, and `load_events` on `ingest` output).

Each line is decoded by the contract codec, so a file edited by hand or written by another tool is
held to the same rules as a Kafka record; lines that fail are counted by error class, not raised.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from typing import IO

from agents.sources import SourceStats
from agents.sysmon.readers import DEFAULT_MAX_LINE_BYTES, iter_lines
from schemas.codec import decode_event
from schemas.errors import ContractError
from schemas.events import BehaviorEvent

log = logging.getLogger(__name__)


def read_behavior_events(
    handle: IO[bytes], stats: SourceStats, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[BehaviorEvent]:
    """Decode BehaviorEvent JSON Lines; bad lines are counted in `stats` by contract error class."""
    line_no = 0
    try:
        for line in iter_lines(handle, max_line_bytes):
            line_no += 1
            if line is not None and not line.strip():
                continue
            stats.read += 1
            event = _decode(line, line_no, stats)
            if event is not None:
                stats.emit(event.payload.kind)
                yield event
    except (EOFError, OSError, zlib.error) as exc:
        stats.skip("malformed:truncated_or_corrupt_stream")
        log.warning("stopped reading events after line %d: %s", line_no, exc)


def _decode(line: bytes | None, line_no: int, stats: SourceStats) -> BehaviorEvent | None:
    if line is None:
        stats.skip("malformed:line_too_long")
        return None
    try:
        return decode_event(line.strip())
    except ContractError as exc:
        stats.skip(f"invalid_event:{exc.error_class}")
        log.debug("line %d is not a BehaviorEvent: %s", line_no, exc)
        return None
