"""Train the XGBoost classifier (benign + 12 tactics) and calibrate its thresholds.

Deterministic: fixed seed, fixed thread count, `hist` trees, and data built in a fixed order, so
two runs on the same data give the same booster and the same predictions.

Imbalance: every process contributes total weight one (its snapshot rows share it); then each
class's rows are scaled so that every class carries the same total weight (capped so that a class
with a handful of processes is not blown up past `max_class_weight`).

Thresholds (consumed by `pipeline.scoring.classify`) are calibrated on the calibration split's
*benign trees* (a tree alerts when any of its rows does):
- per tactic: the smallest probability at which no more than `fp_per_1000 / 13` benign trees per
  thousand would be named that tactic (floored at `min_threshold`);
- `generic`: the same budget for alerts that name no tactic;
- `malicious`: the lowest of them (the gate before any naming).
The union is then checked against the whole budget and every threshold raised together until it
holds. With a finite calibration set the budget is met *on that set*; dev measures it out of sample.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.features import FEATURE_NAMES
from pipeline.scoring import CLASSES, classify
from pipeline.training.dataset import Dataset
from pipeline.training.split import CALIB, TRAIN

log = logging.getLogger(__name__)
GENERIC = "generic"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters and calibration targets."""

    seed: int = 7
    nthread: int = 2
    rounds: int = 120
    early_stopping_rounds: int = 25
    max_depth: int = 5
    eta: float = 0.2
    subsample: float = 0.85
    colsample_bytree: float = 0.6
    min_child_weight: float = 0.5
    reg_lambda: float = 2.0
    max_bin: int = 64
    max_class_weight: float = 40.0
    fp_per_1000: float = 1.0
    calibration_margin: float = 0.7  # aim below the budget on calibration data (dev is out of sample)
    min_threshold: float = 0.5

    def params(self) -> dict[str, Any]:
        """XGBoost booster parameters."""
        return {
            "objective": "multi:softprob",
            "num_class": len(CLASSES),
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "max_bin": self.max_bin,
            "seed": self.seed,
            "nthread": self.nthread,
            "eval_metric": "mlogloss",
            "verbosity": 0,
        }


@dataclass(frozen=True, slots=True)
class Trained:
    """A fitted booster with its calibrated thresholds."""

    booster: Any
    thresholds: dict[str, float]
    best_iteration: int
    class_weights: dict[str, float]


def class_index(labels: NDArray[np.str_]) -> NDArray[np.int32]:
    """Class column of each label (CLASSES order); ValueError for an unknown label."""
    lookup = {name: i for i, name in enumerate(CLASSES)}
    return np.array([lookup[str(label)] for label in labels], dtype=np.int32)


def balanced_weights(
    y: NDArray[np.int32], weights: NDArray[np.float32], cap: float
) -> tuple[NDArray[np.float32], dict[str, float]]:
    """Row weights scaled so each present class has equal total weight (scale capped at `cap`)."""
    totals = np.bincount(y, weights=weights, minlength=len(CLASSES))
    present = totals > 0
    target = totals[present].sum() / max(int(present.sum()), 1)
    scale = np.where(present, np.minimum(target / np.where(present, totals, 1.0), cap), 0.0)
    scale /= scale[0] if scale[0] > 0 else 1.0
    return (weights * scale[y]).astype(np.float32), {CLASSES[i]: float(scale[i]) for i in range(len(CLASSES))}


def fit(data: Dataset, config: TrainConfig) -> Trained:
    """Train on the train split, stop early on the calibration split, calibrate thresholds there."""
    import xgboost

    train, calib = data.split_mask(TRAIN), data.split_mask(CALIB)
    y = class_index(data.labels)
    w, class_weights = balanced_weights(y[train], data.weights[train], config.max_class_weight)
    w_calib, _ = balanced_weights(y[calib], data.weights[calib], config.max_class_weight)
    dtrain = xgboost.DMatrix(
        data.matrix[train],
        label=y[train],
        weight=w,
        feature_names=list(FEATURE_NAMES),
        nthread=config.nthread,
    )
    dcalib = xgboost.DMatrix(
        data.matrix[calib],
        label=y[calib],
        weight=w_calib,
        feature_names=list(FEATURE_NAMES),
        nthread=config.nthread,
    )
    log.info("training on %d rows (%d calibration rows)", int(train.sum()), int(calib.sum()))
    booster = xgboost.train(
        config.params(),
        dtrain,
        num_boost_round=config.rounds,
        evals=[(dcalib, "calib")],
        early_stopping_rounds=config.early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(getattr(booster, "best_iteration", config.rounds - 1))
    booster = booster[: best + 1]
    probabilities = predict(booster, data.matrix[calib], config.nthread)
    thresholds = calibrate(probabilities, data.labels[calib], data.trees[calib], config)
    return Trained(booster, thresholds, best, class_weights)


def predict(booster: Any, matrix: NDArray[np.float32], nthread: int = 2) -> NDArray[np.float32]:
    """Class probabilities (rows, classes)."""
    import xgboost

    if len(matrix) == 0:
        return np.zeros((0, len(CLASSES)), dtype=np.float32)
    dmatrix = xgboost.DMatrix(matrix, feature_names=list(FEATURE_NAMES), nthread=nthread)
    return np.asarray(booster.predict(dmatrix), dtype=np.float32).reshape(len(matrix), len(CLASSES))


def calibrate(
    probabilities: NDArray[np.float32], labels: NDArray[np.str_], trees: NDArray[np.str_], config: TrainConfig
) -> dict[str, float]:
    """Thresholds meeting the benign-tree budget on the given rows (see module docstring)."""
    rows, tree_of_row = _benign_tree_rows(labels, trees)
    start = {name: config.min_threshold for name in (*CLASSES[1:], GENERIC)}
    if len(rows) == 0:
        return {**start, "malicious": config.min_threshold}
    allowed = int(
        np.floor(config.fp_per_1000 * config.calibration_margin / 1000 * (int(tree_of_row.max()) + 1))
    )
    thresholds = _tighten(probabilities[rows], tree_of_row, start, allowed)
    thresholds["malicious"] = min(thresholds.values())
    return {k: float(v) for k, v in thresholds.items()}


def _benign_tree_rows(
    labels: NDArray[np.str_], trees: NDArray[np.str_]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows of trees with no attack row, and each such row's tree number (0..n_trees-1)."""
    attack = {t for t, label in zip(trees.tolist(), labels.tolist(), strict=True) if label != CLASSES[0]}
    numbers: dict[str, int] = {}
    rows, tree_of_row = [], []
    for i, tree in enumerate(trees.tolist()):
        if tree not in attack:
            rows.append(i)
            tree_of_row.append(numbers.setdefault(tree, len(numbers)))
    return np.array(rows, dtype=np.int64), np.array(tree_of_row, dtype=np.int64)


def _tighten(
    probabilities: NDArray[np.float32],
    tree_of_row: NDArray[np.int64],
    thresholds: dict[str, float],
    allowed: int,
) -> dict[str, float]:
    """While more benign trees alert than `allowed`, raise the threshold of the class responsible for
    the highest-scoring false alert to just above that alert's score (the cheapest alerts survive)."""
    current = dict(thresholds)
    for _ in range(5000):
        culprits = _false_alerts(probabilities, tree_of_row, current)
        if len(culprits) <= allowed:
            break
        name, score = max(culprits, key=lambda c: c[1])
        if current[name] >= 0.999999:
            break
        current[name] = min(0.999999, score + 1e-6)
    return current


def _false_alerts(
    probabilities: NDArray[np.float32], tree_of_row: NDArray[np.int64], thresholds: Mapping[str, float]
) -> list[tuple[str, float]]:
    """(threshold name, score) of the top alerting row of each benign tree that alerts."""
    batch = classify(probabilities, {**thresholds, "malicious": min(thresholds.values())})
    hits = np.nonzero(batch.flagged)[0]
    if len(hits) == 0:
        return []
    hits = hits[np.lexsort((-batch.malicious[hits], tree_of_row[hits]))]
    tops = hits[np.r_[True, tree_of_row[hits][1:] != tree_of_row[hits][:-1]]]
    out = []
    for top in tops.tolist():
        best = int(batch.best[top])
        if batch.named[top]:
            out.append((CLASSES[best], float(probabilities[top, best])))
        else:
            out.append((GENERIC, float(batch.malicious[top])))
    return out


def false_alert_trees(
    probabilities: NDArray[np.float32], trees: list[NDArray[np.int64]], thresholds: Mapping[str, float]
) -> int:
    """Benign trees with at least one alerting row under `thresholds`."""
    full = dict(thresholds)
    full.setdefault("malicious", min(thresholds.values()))
    flagged = classify(probabilities, full).flagged
    return sum(bool(flagged[rows].any()) for rows in trees)


def summary(config: TrainConfig) -> dict[str, Any]:
    """The configuration as plain data (for model.json)."""
    return asdict(config)
