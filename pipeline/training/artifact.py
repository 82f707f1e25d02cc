"""Write the model artifact: `model.ubj` (the booster) and `model.json` (what the pipeline needs).

`model.json` is read by `pipeline.model.booster.ModelMetadata`: version, feature_version,
feature_names (must equal `pipeline.features.FEATURE_NAMES`), classes (must equal
`pipeline.scoring.CLASSES`) and thresholds. The rest (parameters, class weights, a summary of the
training data and of the dev measurements) is documentation for people.

A two-view artifact adds `model_lone.ubj`, the booster of process-creation-only rows
(`pipeline.model.routed`), and its thresholds under model.json's `lone`.

The version hashes everything that decides whether a row alerts: the booster's bytes, the calibrated
thresholds and the feature list (its version and names), and the second booster's when there is one.
Retraining on the same data with the same seed reproduces it; a recalibration of the same booster, or
the same booster read through another feature list, gets a new one, so an alert's `model_version`
names exactly the decision rule behind it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.features import FEATURE_NAMES, FEATURE_VERSION
from pipeline.scoring import CLASSES, LONE_BOOSTER
from pipeline.training.dataset import Dataset
from pipeline.training.train import TrainConfig, Trained, summary

MODEL_NAME = "ringfence-xgb"
MAX_ARTIFACT_BYTES = 5 * 1024 * 1024


def data_summary(data: Dataset) -> dict[str, Any]:
    """Sources and rows per origin/split/label (no host, user or path appears here)."""
    sources = Counter(f"{s.origin}/{s.split}" for s in data.sources)
    rows: Counter[str] = Counter()
    for label, index in zip(data.labels.tolist(), data.source_index.tolist(), strict=True):
        info = data.sources[index]
        rows[f"{info.origin}/{info.split}/{label}"] += 1
    return {
        "sources": dict(sorted(sources.items())),
        "rows": dict(sorted(rows.items())),
        "total_rows": len(data.labels),
    }


def write_model(
    out_dir: Path,
    trained: Trained,
    config: TrainConfig,
    data: Dataset,
    extra: dict[str, Any] | None = None,
    lone: Trained | None = None,
) -> str:
    """Save booster and metadata into `out_dir` (and the process-creation booster, `lone`, as
    `model_lone.ubj` with its thresholds under model.json's `lone`); return the model version."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ubj = out_dir / "model.ubj"
    trained.booster.save_model(str(ubj))
    booster = ubj.read_bytes()
    digest = hashlib.sha256(booster).hexdigest()
    lone_path = out_dir / LONE_BOOSTER
    lone_meta: dict[str, Any] = {}
    if lone is None:
        lone_path.unlink(missing_ok=True)  # a stale second booster must not route rows of this model
        version = model_version(booster, trained.thresholds)
    else:
        lone.booster.save_model(str(lone_path))
        lone_bytes = lone_path.read_bytes()
        version = model_version(booster, trained.thresholds, (lone_bytes, lone.thresholds))
        lone_meta["lone"] = {
            "thresholds": lone.thresholds,
            "booster_sha256": hashlib.sha256(lone_bytes).hexdigest(),
            "best_iteration": lone.best_iteration,
            "class_weights": lone.class_weights,
            "routes": "process-only rows with a lone-command indicator (pipeline.model.routed.lone_rows)",
        }
    meta: dict[str, Any] = {
        "version": version,
        "feature_version": FEATURE_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "classes": list(CLASSES),
        "thresholds": trained.thresholds,
        "booster_sha256": digest,
        "best_iteration": trained.best_iteration,
        "params": summary(config),
        "class_weights": trained.class_weights,
        "training_data": data_summary(data),
        **lone_meta,
        **(extra or {}),
    }
    (out_dir / "model.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return version


def model_digest(
    booster: bytes,
    thresholds: Mapping[str, float],
    feature_version: str = FEATURE_VERSION,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
) -> str:
    """sha256 over what decides an alert: booster bytes, thresholds (sorted JSON) and the feature list."""
    decision = json.dumps(
        {"thresholds": dict(thresholds), "feature_version": feature_version, "features": list(feature_names)},
        sort_keys=True,
    )
    return hashlib.sha256(booster + b"\n" + decision.encode("utf-8")).hexdigest()


def model_version(
    booster: bytes, thresholds: Mapping[str, float], lone: tuple[bytes, Mapping[str, float]] | None = None
) -> str:
    """`ringfence-xgb-<feature version>-<first 10 hex digits of model_digest>`; with a process-creation
    booster (`lone`: its bytes and thresholds), the digest of the first hashed with the second's."""
    digest = model_digest(booster, thresholds)
    if lone is not None:
        digest = hashlib.sha256(f"{digest}\n".encode() + model_digest(*lone).encode()).hexdigest()
    return f"{MODEL_NAME}-{FEATURE_VERSION}-{digest[:10]}"


def artifact_bytes(out_dir: Path) -> int:
    """Size of model.ubj + model.json."""
    return sum(
        (out_dir / name).stat().st_size
        for name in ("model.ubj", LONE_BOOSTER, "model.json")
        if (out_dir / name).exists()
    )
