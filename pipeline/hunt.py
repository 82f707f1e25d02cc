"""Offline hunting: run the stream's detection path over recorded files and report the alerts.

"What would this model have blocked?" is answered by the same code the fleet runs: events are
read by the agent's own loaders (`.evtx`, Sysmon JSON Lines in either flattened style, BehaviorEvent
JSON Lines, gzip or not), folded into trees and scored by `pipeline.detect.Detector`, one scoring pass
per chunk of at most `CHUNK_EVENTS` events and `pipeline.detect.PASS_SPAN_MS` of event time (training
replays recordings in chunks too: `pipeline.training.rows`).

Each file is hunted on its own (a fresh detector): files are separate recordings, and mixing two
recordings of one host would interleave unrelated trees. A file that cannot be opened, a line that
is not JSON or an event the mapper does not know is counted in that file's summary and skipped;
nothing in an input file stops the hunt. Records that name no host are hunted as the device
`UNNAMED_HOST`'s.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.sysmon import FileStats, InputFileError, load_events, read_paths
from pipeline.detect import PASS_SPAN_MS, Detector, passes
from pipeline.lexicon import ANCHOR_CLASSES
from pipeline.node import ProcessNode
from pipeline.scoring import Model
from pipeline.tree import ts_ms
from schemas.alerts import Alert
from schemas.events import BehaviorEvent, ProcessStart

log = logging.getLogger(__name__)
CHUNK_EVENTS = 256
"""Events per scoring pass at most (training replays recordings 256 events at a time too, but without
the span bound: `pipeline.training.rows`)."""
UNNAMED_HOST = "unnamed-host"
"""The device of a record that names no host (an export that kept only the event's fields): its events
are hunted as one device's rather than skipped (each file is hunted on its own)."""
Progress = Callable[[str], None]


@dataclass(slots=True)
class FileSummary:
    """What happened to one input file."""

    path: str
    format: str = ""
    events_read: int = 0
    events_mapped: int = 0
    trees: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    error: str | None = None

    def line(self) -> str:
        """One human line: counts, alerts by tactic, top skip reasons."""
        if self.error:
            return f"{self.path}: SKIPPED FILE ({self.error})"
        alerts = ", ".join(f"{t}={n}" for t, n in sorted(self.alerts.items())) or "none"
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{r}={n}" for r, n in self.skipped.most_common(5))
        return (
            f"{self.path} [{self.format}]: events read {self.events_read}, mapped {self.events_mapped}, "
            f"trees {self.trees}, alerts: {alerts}; skipped {skipped}" + (f" ({reasons})" if reasons else "")
        )


@dataclass(frozen=True, slots=True)
class Found:
    """One alert, the file it came from and the tree it belongs to.

    `tree` is the process key of the tree's root in the sense `FileSummary.trees` counts trees (the
    highest ancestor below an unknown parent or an anchor), so alerts can be counted per tree: one
    tree can raise several alerts (two children flagged in turn, or a later flush on a grown tree).
    """

    path: str
    alert: Alert
    tree: str = ""


def expand(paths: Sequence[Path]) -> list[Path]:
    """Files to hunt: files as given, folders expanded to the supported files inside (sorted)."""
    return read_paths(list(paths))


def hunt_file(
    path: Path,
    model: Model,
    summary: FileSummary,
    *,
    min_score: float = 0.0,
    progress: Progress | None = None,
) -> Iterator[Found]:
    """Alerts of one file (fills `summary`); never raises for bad content or an unreadable path."""
    stats = FileStats()
    detector = Detector(model=model)
    try:
        for chunk in chunks(load_events(path, stats=stats, fallback_device_id=UNNAMED_HOST)):
            summary.trees += _new_trees(detector, chunk)
            yield from _alerts(detector, detector.flush(ts_ms(chunk[-1])), path, summary, min_score)
            _report(progress, path, stats)
    except InputFileError as exc:
        summary.error = str(exc)
        log.warning("hunt: cannot read %s: %s", path, exc)
    finally:
        summary.format, summary.events_read, summary.events_mapped = stats.format, stats.read, stats.emitted
        summary.skipped.update(stats.skipped)


def chunks(
    events: Iterable[BehaviorEvent], size: int = CHUNK_EVENTS, span_ms: int | None = PASS_SPAN_MS
) -> Iterator[list[BehaviorEvent]]:
    """Consecutive runs of at most `size` events whose times lie within `span_ms` of each other (None:
    any span), in file order: one scoring pass each (`pipeline.detect.passes`)."""
    return passes(events, size, span_ms)


def _new_trees(detector: Detector, chunk: list[BehaviorEvent]) -> int:
    """Ingest a chunk; count processes that start a new tree (parent unknown or an anchor)."""
    detector.ingest(chunk, ts_ms(chunk[-1]))  # the caller's flush scores it (and then evicts)
    roots = 0
    for event in chunk:
        if not isinstance(event.payload, ProcessStart):
            continue
        forest = detector.forests.get(event.device_id)
        node = forest.get(event.process_key) if forest else None
        if forest is None or node is None or node.image_cls in ANCHOR_CLASSES:
            continue
        roots += _above_tree(forest.get(node.parent_key))
    return roots


def _above_tree(parent: ProcessNode | None) -> bool:
    """A process under this parent starts a tree: the parent is unknown, known only as a parent, or
    an anchor (services, desktop shells). `_new_trees` counts trees and `tree_of` finds them by it."""
    return parent is None or parent.placeholder or parent.image_cls in ANCHOR_CLASSES


def _alerts(
    detector: Detector, decisions: Iterable[object], path: Path, summary: FileSummary, min_score: float
) -> Iterator[Found]:
    for decision in decisions:
        if isinstance(decision, Alert) and decision.score >= min_score:
            summary.alerts[str(decision.tactic)] += 1
            yield Found(str(path), decision, tree_of(detector, decision))


def tree_of(detector: Detector, alert: Alert) -> str:
    """Root key of the tree holding `alert`'s root: climb while the parent is a known, real,
    non-anchor process (the trees `_new_trees` counts)."""
    key = alert.process_tree.root_process_key
    forest = detector.forests.get(alert.device_id)
    if forest is None:
        return key
    for parent in forest.ancestors(key):
        if _above_tree(parent):
            break
        key = parent.key
    return key


_last_report = [0.0]


def _report(progress: Progress | None, path: Path, stats: FileStats) -> None:
    """At most one progress line per two seconds."""
    now = time.monotonic()
    if progress is not None and now - _last_report[0] >= 2.0:
        _last_report[0] = now
        progress(f"{path}: {stats.read} records read, {stats.emitted} events")


def hunt(
    paths: Sequence[Path], model: Model, *, min_score: float = 0.0, progress: Progress | None = None
) -> tuple[list[Found], list[FileSummary]]:
    """Hunt every file under `paths`; alerts in file order and one summary per file."""
    found: list[Found] = []
    summaries: list[FileSummary] = []
    for path in expand(paths):
        summary = FileSummary(str(path))
        summaries.append(summary)
        found.extend(hunt_file(path, model, summary, min_score=min_score, progress=progress))
    return found, summaries
