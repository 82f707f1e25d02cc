"""Write the model artifact: `model.ubj` (the booster) and `model.json` (what the pipeline needs).

`model.json` is read by `pipeline.model.booster.ModelMetadata`: version, feature_version,
feature_names (must equal `pipeline.features.FEATURE_NAMES`), classes (must equal
`pipeline.scoring.CLASSES`) and thresholds. The rest (parameters, class weights, a summary of the
training data and of the dev measurements) is documentation for people. The version is derived
from the booster's bytes, so retraining on the same data with the same seed reproduces it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.features import FEATURE_NAMES, FEATURE_VERSION
from pipeline.scoring import CLASSES
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
    out_dir: Path, trained: Trained, config: TrainConfig, data: Dataset, extra: dict[str, Any] | None = None
) -> str:
    """Save booster and metadata into `out_dir`; return the model version."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ubj = out_dir / "model.ubj"
    trained.booster.save_model(str(ubj))
    digest = hashlib.sha256(ubj.read_bytes()).hexdigest()
    version = f"{MODEL_NAME}-{FEATURE_VERSION}-{digest[:10]}"
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
        **(extra or {}),
    }
    (out_dir / "model.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return version


def artifact_bytes(out_dir: Path) -> int:
    """Size of model.ubj + model.json."""
    return sum(
        (out_dir / name).stat().st_size for name in ("model.ubj", "model.json") if (out_dir / name).exists()
    )
