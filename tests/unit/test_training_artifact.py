"""The model version names the whole decision rule: booster, thresholds and feature list."""

from __future__ import annotations

import json

from pipeline.features import FEATURE_NAMES, FEATURE_VERSION
from pipeline.scoring import LONE_BOOSTER, MODEL_DIR
from pipeline.training.artifact import MODEL_NAME, model_digest, model_version

BOOSTER = b"\x7bbooster bytes\x7d"
THRESHOLDS = {"Impact": 0.7, "generic": 0.98, "malicious": 0.6}


def test_the_same_booster_and_thresholds_give_the_same_version() -> None:
    first = model_version(BOOSTER, THRESHOLDS)
    assert first == model_version(BOOSTER, dict(reversed(list(THRESHOLDS.items()))))
    assert first.startswith(f"{MODEL_NAME}-{FEATURE_VERSION}-") and len(first.rsplit("-", 1)[1]) == 10


def test_a_recalibrated_threshold_changes_the_version() -> None:
    moved = {**THRESHOLDS, "Impact": 0.71}
    assert model_version(BOOSTER, moved) != model_version(BOOSTER, THRESHOLDS)


def test_another_booster_or_feature_list_changes_the_digest() -> None:
    base = model_digest(BOOSTER, THRESHOLDS)
    assert model_digest(BOOSTER + b"!", THRESHOLDS) != base
    assert model_digest(BOOSTER, THRESHOLDS, feature_version="9.9") != base
    assert model_digest(BOOSTER, THRESHOLDS, feature_names=FEATURE_NAMES[:-1]) != base


def test_the_committed_model_version_is_the_digest_of_its_booster_and_thresholds() -> None:
    meta = json.loads((MODEL_DIR / "model.json").read_text(encoding="utf-8"))
    booster = (MODEL_DIR / "model.ubj").read_bytes()
    lone = ((MODEL_DIR / LONE_BOOSTER).read_bytes(), meta["lone"]["thresholds"])
    assert meta["version"] == model_version(booster, meta["thresholds"], lone)
    assert meta["version"] != model_version(booster, meta["thresholds"])
