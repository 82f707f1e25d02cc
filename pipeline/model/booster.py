"""The trained XGBoost model behind the `Model` protocol: `model.ubj` plus `model.json` metadata.

`model.json` carries what the booster file cannot: `version`, `feature_version`, `feature_names`
(must equal `pipeline.features.FEATURE_NAMES`, in order), `classes` (must equal
`pipeline.scoring.CLASSES`) and `thresholds` (per-class minimum probability, plus `malicious`:
the minimum 1 - P(benign)); a two-view artifact adds `lone` (`thresholds` of `model_lone.ubj`, the
booster of process-creation-only rows, `pipeline.model.routed`). A model built for another feature
list is refused with `FeatureMismatch` rather than silently scoring shifted columns. xgboost is
imported when a model is loaded, never at import time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import FeatureMismatch, ModelError
from pipeline.features import FEATURE_NAMES, FEATURE_VERSION
from pipeline.scoring import CLASSES, LONE_BOOSTER, Matrix


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """The contents of model.json that the pipeline relies on."""

    version: str
    feature_version: str
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]
    thresholds: Mapping[str, float]
    lone_thresholds: Mapping[str, float] | None = None  # a two-view artifact's process-only booster

    @classmethod
    def read(cls, path: Path) -> ModelMetadata:
        """Parse and check model.json; ModelError/FeatureMismatch on anything unusable."""
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read model metadata {path}: {exc}") from exc
        meta = cls.parse(raw, path)
        meta.check()
        return meta

    @classmethod
    def parse(cls, raw: Any, path: Path) -> ModelMetadata:
        """model.json's decoded contents (read from `path`), not yet `check`ed against this code's feature
        list (`pipeline.training.train.kept_full` keeps a booster of an older list); ModelError when
        malformed."""
        try:
            return cls(
                str(raw["version"]),
                str(raw["feature_version"]),
                tuple(raw["feature_names"]),
                tuple(raw["classes"]),
                {str(k): float(v) for k, v in raw.get("thresholds", {}).items()},
                _lone_thresholds(raw.get("lone")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"cannot read model metadata {path}: {exc}") from exc

    def check(self) -> None:
        """The model must speak our feature list and class order."""
        if self.feature_version != FEATURE_VERSION or self.feature_names != FEATURE_NAMES:
            raise FeatureMismatch(
                f"model {self.version} was built for features {self.feature_version} "
                f"({len(self.feature_names)} names), pipeline computes {FEATURE_VERSION} "
                f"({len(FEATURE_NAMES)})"
            )
        if self.classes != CLASSES:
            raise ModelError(f"model {self.version} classes {self.classes} differ from {CLASSES}")


def _lone_thresholds(lone: Any) -> dict[str, float] | None:
    """model.json's `lone.thresholds` (None for a one-booster artifact); ValueError when malformed."""
    if lone is None:
        return None
    if not isinstance(lone, dict) or not isinstance(lone.get("thresholds"), dict) or not lone["thresholds"]:
        raise ValueError("'lone' must be an object with non-empty 'thresholds'")
    return {str(k): float(v) for k, v in lone["thresholds"].items()}


class BoosterModel:
    """An XGBoost multi:softprob booster with its metadata."""

    def __init__(self, booster: Any, metadata: ModelMetadata) -> None:
        self._booster = booster
        self.metadata = metadata

    @classmethod
    def load(cls, directory: Path) -> BoosterModel:
        """Load model.json and model.ubj from `directory`."""
        metadata = ModelMetadata.read(directory / "model.json")
        import xgboost

        booster = xgboost.Booster()
        try:
            booster.load_model(str(directory / "model.ubj"))
        except (xgboost.core.XGBoostError, OSError) as exc:
            raise ModelError(f"cannot load {directory / 'model.ubj'}: {exc}") from exc
        return cls(booster, metadata)

    @classmethod
    def load_lone(cls, directory: Path, metadata: ModelMetadata) -> BoosterModel | None:
        """The process-creation booster of a two-view artifact (`pipeline.model.routed`), with its own
        thresholds; None when model.json names none. ModelError when named but unreadable."""
        if metadata.lone_thresholds is None:
            return None
        import xgboost

        path = directory / LONE_BOOSTER
        booster = xgboost.Booster()
        try:
            booster.load_model(str(path))
        except (xgboost.core.XGBoostError, OSError) as exc:
            raise ModelError(f"cannot load {path} (model.json names a second booster): {exc}") from exc
        return cls(booster, replace(metadata, thresholds=metadata.lone_thresholds, lone_thresholds=None))

    @property
    def version(self) -> str:
        """Version from model.json."""
        return self.metadata.version

    @property
    def feature_version(self) -> str:
        """Feature version from model.json (checked equal to ours)."""
        return self.metadata.feature_version

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names (checked equal to CLASSES)."""
        return self.metadata.classes

    @property
    def thresholds(self) -> Mapping[str, float]:
        """Per-class thresholds calibrated at training time."""
        return self.metadata.thresholds

    def predict_proba(self, matrix: Matrix) -> Matrix:
        """Class probabilities, one inplace_predict call."""
        out = self._booster.inplace_predict(matrix)
        return np.asarray(out, dtype=np.float32).reshape(len(matrix), len(self.classes))

    def contributions(self, matrix: Matrix) -> Matrix:
        """SHAP-style margin contributions per class, bias last."""
        import xgboost

        data = xgboost.DMatrix(matrix, feature_names=self._booster.feature_names)
        out = self._booster.predict(data, pred_contribs=True)
        return np.asarray(out, dtype=np.float32).reshape(
            len(matrix), len(self.classes), len(FEATURE_NAMES) + 1
        )
