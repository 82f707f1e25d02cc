"""The `ringfence train` and `ringfence evaluate` workflows, end to end.

train:    build (or load a cached) dataset -> fit (with `two_view`, the default, a second booster for
          process-only rows that show a lone-command indicator: `pipeline.model.routed`) -> write
          model.ubj/model.json -> measure on dev (tree level per origin; recording level through hunt
          on held-out lab recordings and on the .evtx samples) -> write DATA.md, MODEL_CARD.md and
          confusion_dev.png next to the model.
evaluate: load a model directory -> rebuild the dev sources only -> the same measurements, printed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.scoring import Model, load_model, model_classify
from pipeline.training.artifact import artifact_bytes, write_model
from pipeline.training.card import LoneBooster, Results, render_card, render_data
from pipeline.training.dataset import (
    LONE_VIEW,
    DataConfig,
    Dataset,
    StaleCache,
    build_dataset,
    cache_fingerprint,
    load_dataset,
    save_dataset,
)
from pipeline.training.evaluate import (
    RecordingReport,
    TreeReport,
    save_confusion_png,
    summarise,
    tree_report_of,
)
from pipeline.training.probes import SECOND_PROBES, TAIL_S
from pipeline.training.recordings import evtx_outcomes, otrf_dev_outcomes, probe_outcomes
from pipeline.training.split import DEV
from pipeline.training.train import TrainConfig, Trained, Views, fit, fit_views, kept_full

log = logging.getLogger(__name__)
DEFAULT_EVTX = Path("/work/shared/datasets/evtx-samples")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Inputs and outputs of a training or evaluation run."""

    out: Path
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evtx_dir: Path | None = DEFAULT_EVTX
    cache: Path | None = None  # dataset cache (build once, reuse)
    recordings: bool = True  # also hunt whole recordings (slower)
    two_view: bool = True  # also fit the lone-command rows' booster (`pipeline.model.routed`)
    full_from: Path | None = None  # keep this model's full booster (`train.kept_full`)


def dataset(config: RunConfig) -> Dataset:
    """The dataset: from the cache when it exists, else built (and cached when a cache path is given)."""
    fingerprint = cache_fingerprint(config.data) if config.cache is not None else ""
    if config.cache is not None and config.cache.with_suffix(".npz").is_file():
        log.info("loading cached dataset %s", config.cache)
        try:
            return load_dataset(config.cache, fingerprint)
        except StaleCache as stale:
            log.warning("%s: building the dataset again and replacing the cache", stale)
    data = build_dataset(config.data)
    if config.cache is not None:
        save_dataset(data, config.cache, fingerprint)
    return data


def run_train(config: RunConfig) -> Results:
    """Train, save, measure and document (see module docstring)."""
    full: Trained | None = None
    full_from: str | None = None  # the model that fitted the kept full booster
    if config.full_from is not None:
        if not config.two_view:
            raise ValueError("--full-from keeps the full booster of a two-view model: not with --one-view")
        full, full_from = kept_full(config.full_from)  # before the dataset: a wrong folder fails at once
    data = dataset(config)
    started = time.monotonic()
    views = fit_views(data, config.train, full) if config.two_view else None
    trained = fit(data, config.train) if views is None else views.full
    lone = None if views is None else views.lone
    seconds = time.monotonic() - started
    extra = None if full_from is None else {"full_from": full_from}
    version = write_model(config.out, trained, config.train, data, extra, lone=lone)
    model = load_model(config.out)
    results = Results(
        version,
        artifact_bytes(config.out),
        trained.best_iteration,
        trained.thresholds,
        tree_reports(model, data),
        hunt_reports(model, config),
        seconds,
        _lone_summary(views),
        full_from,
    )
    _write_documents(config, data, results)
    return results


def _lone_summary(views: Views | None) -> LoneBooster | None:
    if views is None:
        return None
    return LoneBooster(views.lone.best_iteration, views.lone.thresholds, views.lone_rows)


def tree_reports(model: Model, data: Dataset) -> dict[str, TreeReport]:
    """Tree-level dev reports: all dev rows, then per origin."""
    out = {}
    dev = data.split_mask(DEV)
    for title, mask in (
        ("Trees, all dev sources", dev),
        ("Trees, all dev sources but the lone-command simulations", dev & ~data.split_mask(DEV, LONE_VIEW)),
        ("Trees, held-out lab recordings", data.split_mask(DEV, "otrf")),
        ("Trees, held-out simulated trees", data.split_mask(DEV, "sim")),
        ("Trees, held-out lone-command simulations", data.split_mask(DEV, LONE_VIEW)),
        ("Trees, captured Linux sessions", data.split_mask(DEV, "capture")),
    ):
        if mask.any():
            matrix = data.matrix[mask]
            probabilities = np.asarray(model.predict_proba(matrix), dtype=np.float32)
            scores = model_classify(model, matrix, probabilities)
            out[title] = tree_report_of(scores, data.labels[mask], data.trees[mask])
    return out


def hunt_reports(model: Model, config: RunConfig) -> dict[str, RecordingReport]:
    """Recording-level reports through the hunt path."""
    if not config.recordings:
        return {}
    out = {}
    root = config.data.otrf_root
    if root is not None and root.is_dir():
        out["Recordings: held-out lab recordings (hunt)"] = summarise(list(otrf_dev_outcomes(root, model)))
    if config.evtx_dir is not None and config.evtx_dir.is_dir():
        out["Recordings: .evtx samples (hunt; tactic from the file name)"] = summarise(
            list(evtx_outcomes(config.evtx_dir, model))
        )
    out["Recordings: hand-written lone-command probes (hunt; never training data)"] = summarise(
        list(probe_outcomes(model))
    )
    tail = f"Recordings: the same probes, each log going on {TAIL_S // 60} minutes after its commands (hunt)"
    out[tail] = summarise(list(probe_outcomes(model, TAIL_S)))
    second = "Recordings: a second set of lone-command probes, from session AC (hunt; never training data)"
    out[second] = summarise(list(probe_outcomes(model, probes=SECOND_PROBES)))
    return out


def _write_documents(config: RunConfig, data: Dataset, results: Results) -> None:
    (config.out / "DATA.md").write_text(render_data(data, config.data.sim), encoding="utf-8")
    (config.out / "MODEL_CARD.md").write_text(
        render_card(results, data, config.train, config.data.sim), encoding="utf-8"
    )
    first = next(iter(results.tree_reports.values()), None)
    if first is not None:
        save_confusion_png(first, str(config.out / "confusion_dev.png"), f"{results.version}: dev trees")
    meta_path = config.out / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["dev_summary"] = headline(results)
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def headline(results: Results) -> dict[str, float]:
    """The numbers the judges care about, for model.json."""
    out: dict[str, float] = {}
    for title, report in results.tree_reports.items():
        out[f"{title}: alerts per 1000 benign trees"] = round(report.alerts_per_1000_benign, 3)
    for title, hunt in results.hunts.items():
        out[f"{title}: detected"] = round(hunt.rate("detected"), 3)
        out[f"{title}: right tactic (any alert)"] = round(hunt.rate("right_tactic_any"), 3)
    return out
