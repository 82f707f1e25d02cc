"""Offline entry point: any supported file -> BehaviorEvents, with per-file statistics.

This is what the model and hunt code call (`agents.sysmon.load_events`) and what the `ingest`
command and the async `SysmonSource` run underneath: detect the format, stream raw records,
map each one (pure), stamp `seq`/parent links (stateful, in read order), count everything.
Only a path that cannot be opened raises (`InputFileError`); damaged content is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.sources import SourceStats
from agents.sysmon.errors import InputFileError
from agents.sysmon.event_lines import read_behavior_events
from agents.sysmon.mapping import MappingConfig, Skip, map_record
from agents.sysmon.readers import (
    DEFAULT_MAX_LINE_BYTES,
    BadRecord,
    InputFormat,
    ReadItem,
    detect_format,
    open_binary,
    read_evtx,
    read_json_array,
    read_json_lines,
)
from agents.sysmon.sequencing import Sequencer
from schemas.events import BehaviorEvent

log = logging.getLogger(__name__)


@dataclass
class FileStats(SourceStats):
    """SourceStats of one input file, with its path and detected format."""

    path: str = ""
    format: str = ""

    def summary(self) -> str:
        """One line for humans: counts, then the top skip reasons."""
        kinds = ", ".join(f"{kind}={count}" for kind, count in self.by_kind.most_common())
        reasons = ", ".join(f"{reason}={count}" for reason, count in self.skipped.most_common(8))
        more = len(self.skipped) - 8
        reasons += f", ... {more} more reasons" if more > 0 else ""
        return (
            f"{self.path} [{self.format}]: read {self.read}, mapped {self.emitted}, "
            f"skipped {self.skipped_total}" + (f" | kinds: {kinds}" if kinds else "")
            + (f" | skipped: {reasons}" if reasons else "")
        )


def load_events(
    path: Path | str,
    *,
    device_id: str | None = None,
    stats: FileStats | None = None,
    sequencer: Sequencer | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    fallback_device_id: str | None = None,
) -> Generator[BehaviorEvent, None, None]:
    """Stream the BehaviorEvents of one file (.evtx, JSON Lines, JSON array, gzip, or our own output).

    Pass `stats` to receive the counters (filled while iterating) and `sequencer` to continue
    another file's per-device `seq`. BehaviorEvent files are returned as recorded (not re-stamped).
    `device_id` names every record's device; `fallback_device_id` only those that name no host.
    Raises InputFileError (when iteration starts) if the path cannot be opened.
    """
    path = Path(path)
    stats = stats if stats is not None else FileStats()
    stats.path = str(path)
    stats.format = _detect(path)
    if stats.format == InputFormat.BEHAVIOR_EVENTS:
        with open_binary(path) as handle:
            yield from read_behavior_events(handle, stats, max_line_bytes)
    else:
        config = MappingConfig(device_id=device_id, fallback_device_id=fallback_device_id)
        items = _raw_items(path, InputFormat(stats.format), max_line_bytes)
        yield from map_items(items, config, sequencer or Sequencer(), stats)
    log.debug("%s", stats.summary())


def load_many(
    paths: Iterable[Path | str], *, device_id: str | None = None, stats: list[FileStats] | None = None
) -> Iterator[BehaviorEvent]:
    """Several files in order, sharing one per-device sequence; one FileStats appended per file."""
    sequencer = Sequencer()
    for path in paths:
        file_stats = FileStats()
        if stats is not None:
            stats.append(file_stats)
        yield from load_events(path, device_id=device_id, stats=file_stats, sequencer=sequencer)


def map_items(
    items: Iterable[ReadItem], config: MappingConfig, sequencer: Sequencer, stats: SourceStats
) -> Iterator[BehaviorEvent]:
    """The core loop: raw records -> events, counting every record that is not mapped."""
    for item in items:
        event = map_item(item, config, sequencer, stats)
        if event is not None:
            yield event


def map_item(
    item: ReadItem, config: MappingConfig, sequencer: Sequencer, stats: SourceStats
) -> BehaviorEvent | None:
    """One step of `map_items` (follow mode drives it from an async loop)."""
    stats.read += 1
    if isinstance(item, BadRecord):
        stats.skip(f"malformed:{item.reason}")
        log.debug("skipped malformed input at %s: %s", item.position, item.reason)
        return None
    result = map_record(item.record, config, item.fallback_id)
    if isinstance(result, Skip):
        stats.skip(result.key)
        return None
    event = sequencer.stamp(result)
    stats.emit(event.payload.kind)
    return event


def _detect(path: Path) -> str:
    try:
        return detect_format(path)
    except OSError as exc:
        raise InputFileError(path, exc.strerror or type(exc).__name__) from exc


def _raw_items(path: Path, fmt: InputFormat, max_line_bytes: int) -> Iterator[ReadItem]:
    if fmt is InputFormat.EVTX:
        yield from read_evtx(path)
    elif fmt is InputFormat.UNKNOWN:
        yield BadRecord("unknown_format", str(path))
    else:
        with open_binary(path) as handle:
            if fmt is InputFormat.JSON_ARRAY:
                yield from read_json_array(handle, max_line_bytes)
            else:
                yield from read_json_lines(handle, max_line_bytes)


def read_paths(paths: Sequence[Path]) -> list[Path]:
    """Expand directories into the supported files they hold (sorted), keep files as given."""
    expanded: list[Path] = []
    for path in paths:
        if path.is_dir():
            expanded.extend(sorted(p for p in path.rglob("*") if p.is_file() and _looks_supported(p)))
        else:
            expanded.append(path)
    return expanded


_SUFFIXES = (".evtx", ".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz", ".gz")


def _looks_supported(path: Path) -> bool:
    return path.name.lower().endswith(_SUFFIXES)
