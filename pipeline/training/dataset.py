"""Assemble the training data: labelled lab recordings, simulated trees and captured Linux sessions.

Each source (one recording, one simulated tree, one captured session) becomes a `RowBlock` of
feature rows computed by the stream's own code (`pipeline.training.rows`), tagged with its origin
and split. Only the `_`-prefixed recording labels and the adversary view decide labels; nothing
about a host, user, domain, dataset path or Sysmon rule name reaches a feature (features are
computed from BehaviorEvents, which carry none of the `_` fields).

Every training and calibration recording is also replayed as its *process-creation-only view*: its
process starts alone, as a fleet or lab that collects only Security 4688 or Sysmon event 1 would
deliver them (no image loads, process access, registry, file or network events). The lab recordings
are full Sysmon; without this view the model learns to lean on telemetry other labs may not collect,
and an attack seen through process creation alone looks unlike every real attack it was trained on
(the simulated trees already have such views). The view keeps the recording's labels and split (so
it never crosses into dev) and is its own source (`otrf-proc`) in DATA.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agents.sysmon import load_events
from pipeline.features import FEATURE_VERSION, N_FEATURES
from pipeline.scoring import BENIGN
from pipeline.training.labels import (
    Recording,
    extract_clues,
    label_events,
    load_catalog,
    raw_hosts,
    raw_pid_keys,
)
from pipeline.training.rows import AMBIGUOUS, STREAM_CHUNK_EVENTS, RowBlock, replay_rows
from pipeline.training.simulate import SimConfig, lone_view_corpus, simulate_corpus, threshold_corpus
from pipeline.training.split import DEV, THRESHOLDS, hashed_split, lab_of, recording_splits
from schemas.events import BehaviorEvent

log = logging.getLogger(__name__)
DEFAULT_OTRF = Path("/work/shared/datasets/otrf")
CAPTURE_DIR = Path(__file__).resolve().parent.parent / "model" / "data"
PROCESS_VIEW = "otrf-proc"
"""Origin of a recording's process-creation-only view (see the module docstring)."""
LONE_VIEW = "sim-lone"
"""Origin of the simulated lone commands and their look-alikes: the lone booster's data, and benign rows
of the full booster's (`pipeline.training.simulate.lone_view_corpus`, `pipeline.training.train.fit_views`)."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where a block of rows came from."""

    source: str
    origin: str  # otrf | sim | capture
    split: str  # train | calib | dev
    platform: str
    label: str  # the source's own label (recording tactic, simulated tactic, Benign)
    technique: str = ""


@dataclass(slots=True)
class RecordingReport:
    """How labelling went for one lab recording (rendered into DATA.md)."""

    rel: str
    tactic: str
    split: str
    lab: str
    process_starts: int
    seeds: int
    attack_processes: int
    trees: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Dataset:
    """Rows of every source, with per-row source index; ambiguous rows are already dropped."""

    matrix: NDArray[np.float32]
    labels: NDArray[np.str_]
    weights: NDArray[np.float32]
    source_index: NDArray[np.int32]
    trees: NDArray[np.str_]
    keys: NDArray[np.str_]  # "device/process_key" of each row (for inspection, never a feature)
    sources: list[SourceInfo]
    reports: list[RecordingReport]

    def split_mask(self, split: str, origin: str | None = None) -> NDArray[np.bool_]:
        """Rows whose source is in `split` (and of `origin`, when given)."""
        keep = np.array([s.split == split and (origin is None or s.origin == origin) for s in self.sources])
        return keep[self.source_index] if len(keep) else np.zeros(0, dtype=bool)


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Which sources to use."""

    otrf_root: Path | None = DEFAULT_OTRF
    captures: Path | None = CAPTURE_DIR
    sim: SimConfig = field(default_factory=SimConfig)
    only_split: str | None = None
    """Build only the sources of this split (evaluation needs dev only)."""
    process_views: bool = True
    """Also train on each training/calibration recording's process-creation-only view (module docstring)."""
    lone_view: bool = True
    """Also build the simulated lone commands of the process-creation view (`LONE_VIEW`), last."""


def build_dataset(config: DataConfig) -> Dataset:
    """Every source's rows (see module docstring); logs progress per origin."""
    blocks: list[tuple[SourceInfo, RowBlock]] = []
    reports: list[RecordingReport] = []
    if config.otrf_root is not None and config.otrf_root.is_dir():
        for labelled_blocks, report in otrf_blocks(config.otrf_root, config.only_split, config.process_views):
            reports.append(report)
            blocks.extend(labelled_blocks)
    else:
        log.warning("no lab recordings at %s: training on simulated and captured data only", config.otrf_root)
    blocks.extend(sim_blocks(config.sim, config.only_split))
    if config.captures is not None and config.captures.is_dir():
        blocks.extend(capture_blocks(config.captures, config.only_split))
    if config.lone_view:
        blocks.extend(sim_blocks(config.sim, config.only_split, lone_view=True))
    if config.only_split in (None, THRESHOLDS):
        blocks.extend(threshold_blocks(config.sim, config.lone_view))
    return _assemble(blocks, reports)


def otrf_blocks(
    root: Path, only_split: str | None = None, process_views: bool = True
) -> Iterator[tuple[list[tuple[SourceInfo, RowBlock]], RecordingReport]]:
    """Labelled row blocks per lab recording (none when no attack tree is found) and its report."""
    catalog = load_catalog(root)
    hosts: dict[str, set[str]] = {}
    for rec in catalog:
        with gzip.open(rec.path, "rb") as handle:
            hosts[rec.rel] = raw_hosts(handle)
    splits = recording_splits(hosts)
    labs = lab_of(hosts)
    for number, rec in enumerate(catalog, start=1):
        if only_split is not None and splits[rec.rel] != only_split:
            continue
        events = list(load_events(rec.path))
        views = process_views and splits[rec.rel] != DEV
        blocks, report = _recording(rec, events, splits[rec.rel], labs[rec.rel], views)
        log.info(
            "recording %d/%d %s: %s",
            number,
            len(catalog),
            rec.rel,
            f"{report.attack_processes} attack processes" if blocks else "no attack tree found, left out",
        )
        yield blocks, report


def _recording(
    rec: Recording, events: Sequence[BehaviorEvent], split: str, lab: str, process_view: bool
) -> tuple[list[tuple[SourceInfo, RowBlock]], RecordingReport]:
    clues = extract_clues(rec.adversary_view)
    with gzip.open(rec.path, "rb") as handle:
        pid_keys = raw_pid_keys(handle, clues.pids)
    labelled = label_events(events, rec, pid_keys)
    starts = [e for e in events if e.payload.kind == "process_start"]
    report = RecordingReport(
        rec.rel, rec.tactic, split, lab, len(starts), len(labelled.matches), len(labelled.node_labels)
    )
    if not labelled.found:
        return [], report
    platform = events[0].platform.value if events else "windows"
    techniques = ",".join(rec.techniques)
    block = replay_rows(events, labelled.node_labels, f"otrf:{rec.rel}")
    report.trees = tree_classes(block)
    out = [(SourceInfo(block.source, "otrf", split, platform, rec.tactic, techniques), block)]
    if process_view and len(starts) < len(events):
        view = replay_rows(starts, labelled.node_labels, f"{PROCESS_VIEW}:{rec.rel}")
        out.append((SourceInfo(view.source, PROCESS_VIEW, split, platform, rec.tactic, techniques), view))
    return out, report


def tree_classes(block: RowBlock) -> Counter[str]:
    """Trees per class: a tree is of a tactic when any of its rows is, else benign."""
    by_tree: dict[str, str] = {}
    for tree, label in zip(block.trees, block.labels, strict=True):
        if label not in (BENIGN, AMBIGUOUS) or tree not in by_tree:
            by_tree[tree] = label if label != AMBIGUOUS else by_tree.get(tree, BENIGN)
    return Counter(by_tree.values())


def sim_blocks(
    config: SimConfig, only_split: str | None = None, *, lone_view: bool = False
) -> Iterator[tuple[SourceInfo, RowBlock]]:
    """Rows of every simulated tree (of one split, when given); with `lone_view`, of the lone commands
    and their look-alikes (origin `LONE_VIEW`, `pipeline.training.train.fit_views`)."""
    keep = None if only_split is None else (lambda tree_id: hashed_split(tree_id) == only_split)
    corpus = lone_view_corpus(config, keep) if lone_view else simulate_corpus(config, keep)
    for number, tree in enumerate(corpus, start=1):
        block = replay_rows(tree.events, tree.node_labels, tree.tree_id, chunk_events=STREAM_CHUNK_EVENTS)
        yield (
            SourceInfo(
                tree.tree_id,
                LONE_VIEW if lone_view else "sim",
                hashed_split(tree.tree_id),
                tree.platform.value,
                tree.label,
                tree.technique,
            ),
            block,
        )
        if number % 2000 == 0:
            log.info("simulated %d trees", number)


def threshold_blocks(config: SimConfig, lone_view: bool = True) -> Iterator[tuple[SourceInfo, RowBlock]]:
    """Rows of the threshold-only benign trees (`threshold_corpus`, split `THRESHOLDS`), last, so no other
    row moves; the lone-command look-alikes among them have origin `LONE_VIEW` (only with `lone_view`)."""
    for number, (tree, look_alike) in enumerate(threshold_corpus(config, lone_view), start=1):
        block = replay_rows(tree.events, tree.node_labels, tree.tree_id, chunk_events=STREAM_CHUNK_EVENTS)
        origin = LONE_VIEW if look_alike else "sim"
        yield (
            SourceInfo(tree.tree_id, origin, THRESHOLDS, tree.platform.value, tree.label, tree.technique),
            block,
        )
        if number % 10000 == 0:
            log.info("simulated %d threshold-only benign trees", number)


def capture_blocks(directory: Path, only_split: str | None = None) -> Iterator[tuple[SourceInfo, RowBlock]]:
    """Rows of captured benign sessions (BehaviorEvent JSON Lines in `directory`)."""
    for path in sorted(directory.glob("*.jsonl*")):
        if only_split is not None and hashed_split(path.name) != only_split:
            continue
        events = list(load_events(path))
        if not events:
            continue
        block = replay_rows(events, {}, f"capture:{path.name}", chunk_events=STREAM_CHUNK_EVENTS)
        yield (
            SourceInfo(
                block.source, "capture", hashed_split(path.name), events[0].platform.value, BENIGN, path.name
            ),
            block,
        )


def _assemble(blocks: list[tuple[SourceInfo, RowBlock]], reports: list[RecordingReport]) -> Dataset:
    matrices, labels, weights, index, trees, keys = [], [], [], [], [], []
    sources: list[SourceInfo] = []
    for info, block in blocks:
        keep = np.array([label != AMBIGUOUS for label in block.labels], dtype=bool)
        if not keep.any():
            continue
        matrices.append(block.matrix[keep])
        labels += [lab for lab, k in zip(block.labels, keep, strict=True) if k]
        weights.append(block.weights[keep])
        trees += [f"{info.source}|{t}" for t, k in zip(block.trees, keep, strict=True) if k]
        keys += [key for key, k in zip(block.keys, keep, strict=True) if k]
        index.append(np.full(int(keep.sum()), len(sources), dtype=np.int32))
        sources.append(info)
    if not matrices:
        empty = np.zeros((0, N_FEATURES), dtype=np.float32)
        none = np.array([], dtype=str)
        return Dataset(empty, none, np.zeros(0, np.float32), np.zeros(0, np.int32), none, none, [], reports)
    return Dataset(
        np.vstack(matrices),
        np.array(labels),
        np.concatenate(weights),
        np.concatenate(index),
        np.array(trees),
        np.array(keys),
        sources,
        reports,
    )


def save_dataset(data: Dataset, path: Path, fingerprint: str = "") -> None:
    """Cache a built dataset (rows as .npz, sources and reports as JSON beside it), with the
    `fingerprint` of what built it (`cache_fingerprint`). Each file is written beside its name and then
    moved into place, so an interrupted save leaves no half-written cache."""
    rows, meta_path = path.with_suffix(".npz"), path.with_suffix(".json")
    with open(rows.with_suffix(".npz.partial"), "wb") as out:
        np.savez_compressed(
            out,
            matrix=data.matrix,
            labels=data.labels,
            weights=data.weights,
            source_index=data.source_index,
            trees=data.trees,
            keys=data.keys,
        )
    meta = {
        "feature_version": FEATURE_VERSION,
        "fingerprint": fingerprint,
        "sources": [asdict(s) for s in data.sources],
        "reports": [{**asdict(r), "trees": dict(r.trees)} for r in data.reports],
    }
    meta_path.with_suffix(".json.partial").write_text(json.dumps(meta), encoding="utf-8")
    os.replace(rows.with_suffix(".npz.partial"), rows)
    os.replace(meta_path.with_suffix(".json.partial"), meta_path)


_ARRAYS = ("matrix", "labels", "weights", "source_index", "trees", "keys")
_CODE_ROOT = Path(__file__).resolve().parents[2]
_CODE = ("pipeline", "schemas", "agents")  # what turns recordings and simulations into rows


def cache_fingerprint(config: DataConfig) -> str:
    """SHA-256 of what builds the rows: the data configuration, the name, size and modification time of
    every file of its recordings and captures, and every Python and C source of the packages that turn
    them into rows. A cache built by other code, settings or data is stale even at the same feature
    version, such as one built before a simulation module was added (any source edit rebuilds: a few
    minutes)."""
    digest = hashlib.sha256(repr(config).encode())
    for folder in (config.otrf_root, config.captures):
        if folder is not None and folder.is_dir():
            for item in sorted(folder.rglob("*")):
                if item.is_file():
                    stat = item.stat()
                    name = item.relative_to(folder).as_posix()
                    digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for package in _CODE:
        for source in sorted((_CODE_ROOT / package).rglob("*")):
            if source.suffix in (".py", ".c", ".h") and source.is_file():
                digest.update(source.relative_to(_CODE_ROOT).as_posix().encode())
                digest.update(source.read_bytes())
    return digest.hexdigest()


class StaleCache(ValueError):
    """A cached dataset that this code would not build: another feature version, column count or
    fingerprint (`cache_fingerprint`), or a cache that cannot be read whole."""


def load_dataset(path: Path, fingerprint: str | None = None) -> Dataset:
    """Read a dataset cached by `save_dataset`; `StaleCache` when its rows are not this feature version's
    (a cache written before the version was recorded is judged by its column count), when `fingerprint`
    is given and differs from the one it was saved with, or when a part is missing or unreadable."""
    try:
        with np.load(path.with_suffix(".npz")) as stored:
            arrays = {name: stored[name] for name in _ARRAYS}
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        columns = arrays["matrix"].shape[1]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise StaleCache(f"{path}: cannot be read whole ({exc})") from exc
    version = meta.get("feature_version")
    if version not in (None, FEATURE_VERSION) or columns != N_FEATURES:
        raise StaleCache(
            f"{path} holds feature version {version or 'unknown'} rows of {columns} columns; "
            f"this code computes version {FEATURE_VERSION}, {N_FEATURES} columns"
        )
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise StaleCache(f"{path} was built by other code, settings or data (its fingerprint differs)")
    reports = [RecordingReport(**{**r, "trees": Counter(r["trees"])}) for r in meta["reports"]]
    return Dataset(
        arrays["matrix"],
        arrays["labels"],
        arrays["weights"],
        arrays["source_index"],
        arrays["trees"],
        arrays["keys"],
        [SourceInfo(**s) for s in meta["sources"]],
        reports,
    )
