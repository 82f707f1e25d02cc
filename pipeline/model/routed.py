"""Two boosters behind one `Model`, one per sensor view: a row that carries process creation alone
and a lone-command indicator is scored by the *lone* booster, every other row by the *full* booster.

Why: many fleets and labs collect process creation only (Security 4688, Sysmon event 1), and a
single-technique recording is often one to three process starts. One booster trained on both views
had to trade one for the other: recipes that taught it lone commands lost a fifth of the held-out
lab detections, because "no file, registry or network activity" then pulled full-telemetry implants
away from their tactic (`pipeline/training/weaknesses.py`). With two boosters each view has its own
trees and its own thresholds, each calibrated to the false-alert budget on benign rows of its view.

The route is a property of the row, not of the device: a row is *process-only* when every feature
computed from file, registry, network, image-load, process-access or script events is zero, for the
process and its subtree (`TELEMETRY_FEATURES`), and it goes to the lone booster when, in addition, its
own or its nearest ancestors' command line shows one of the lone-command indicators of feature
versions 1.1 and 1.2 (`LONE_FEATURES`: a service's recovery command changed, a debugger set for another
image, a password typed on the line, a remote shell's output redirection, a download fed to IEX, ...).
Other process-only rows (a lone `whoami`, a Linux build step, an admin's remote query) stay with the full
booster, which also learns from the lone-command simulations' benign rows routed to it, admins'
look-alikes among them (`pipeline.training.train.full_view_rows`): the lone booster is a specialist for
what the full one cannot see, calibrated on its own rows (its thresholds may be lower than the full
booster's: neither view floors the other since feature version 1.1, and the lone booster's own floor is
`TrainConfig.lone_min_threshold`, below the full one's; weaknesses.py). That is exactly what the lone
booster was trained on (`pipeline.training.train.fit_views` selects rows by the same function,
`lone_rows`), so training, the stream and hunting route alike, with no state kept per device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.features import FEATURE_NAMES, N_BASE_FEATURES, N_FEATURES
from pipeline.scoring import Matrix, RunningPredict, start_predict

TELEMETRY_FEATURES: tuple[str, ...] = tuple(
    name for name in FEATURE_NAMES if name.startswith(("own_", "sub_")) and "_child_" not in name
)
"""Features only events other than process start and exit can raise (own and subtree)."""
LONE_FEATURES: tuple[str, ...] = FEATURE_NAMES[N_BASE_FEATURES:]
"""The lone-command indicators of feature versions 1.1 and 1.2 (own and ancestors' command lines)."""


def _runs(names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """`names`' columns as contiguous (start, stop) slices, so the route reads views, not copies."""
    columns = sorted(FEATURE_NAMES.index(name) for name in names)
    runs: list[list[int]] = []
    for column in columns:
        if runs and runs[-1][1] == column:
            runs[-1][1] = column + 1
        else:
            runs.append([column, column + 1])
    return tuple((start, stop) for start, stop in runs)


_TELEMETRY_RUNS = _runs(TELEMETRY_FEATURES)
_LONE_COLUMNS = slice(N_BASE_FEATURES, N_FEATURES)  # one block, appended after 1.0's (feature_catalogue)


def process_only(matrix: Matrix) -> NDArray[np.bool_]:
    """Per row: True when no telemetry feature is set (the row is the process-creation view)."""
    rich = np.zeros(len(matrix), dtype=np.bool_)
    for start, stop in _TELEMETRY_RUNS:
        rich |= np.any(matrix[:, start:stop] != 0, axis=1)
    return ~rich


def lone_rows(matrix: Matrix) -> NDArray[np.bool_]:
    """Per row: True when the lone booster scores it (process-only, with a lone-command indicator).
    Called a few times per flush, nearly always on rows without one: that answer costs one `any`; the
    telemetry columns are then read only on the rows that show an indicator (a flush's few, not all)."""
    block = matrix[:, _LONE_COLUMNS]
    if not block.any():
        return np.zeros(len(matrix), dtype=np.bool_)
    lone: NDArray[np.bool_] = np.asarray(block.any(axis=1), dtype=np.bool_)
    shown = np.flatnonzero(lone)
    if len(shown) < len(lone):
        lone[shown] = process_only(matrix[shown])
        return lone
    return lone & process_only(matrix)


class RoutedModel:
    """The lone booster for `lone_rows`, the full booster for every other row."""

    def __init__(self, full: Any, lone: Any, version: str) -> None:
        self.full, self.lone, self._version = full, lone, version

    @property
    def version(self) -> str:
        """The artifact's version (it hashes both boosters and both threshold sets)."""
        return self._version

    @property
    def feature_version(self) -> str:
        """Both boosters' feature version."""
        return str(self.full.feature_version)

    @property
    def classes(self) -> tuple[str, ...]:
        """Both boosters' classes."""
        return tuple(self.full.classes)

    @property
    def thresholds(self) -> Mapping[str, float]:
        """The full booster's thresholds (rows with telemetry)."""
        thresholds: Mapping[str, float] = self.full.thresholds
        return thresholds

    @property
    def lone_thresholds(self) -> Mapping[str, float]:
        """The lone booster's thresholds (process-only rows)."""
        thresholds: Mapping[str, float] = self.lone.thresholds
        return thresholds

    def lone_rows(self, matrix: Matrix) -> NDArray[np.bool_]:
        """The rows the lone booster scores (`lone_rows`)."""
        return lone_rows(matrix)

    def predict_proba(self, matrix: Matrix) -> Matrix:
        """Each row's probabilities from the booster of its view."""
        return self._routed(matrix, lambda model, rows: model.predict_proba(rows))

    def contributions(self, matrix: Matrix) -> Matrix:
        """Each row's contributions (rows, classes, features + 1) from the booster that scored it."""
        return self._routed(matrix, lambda model, rows: model.contributions(rows))

    def class_contributions(
        self, matrix: Matrix, class_index: int, lone: NDArray[np.bool_] | None = None
    ) -> Matrix:
        """One class's contributions (rows, features + 1), each row from the booster that scored it.
        `lone`: the matrix's `lone_rows` when the caller has them (`Scorer.explain`, from the flush's)."""
        return self._routed(matrix, lambda model, rows: _class_contributions(model, rows, class_index), lone)

    def predict_start(self, matrix: Matrix, lone: NDArray[np.bool_] | None = None) -> RunningPredict | None:
        """Both boosters' predicts begun on their C threads (`FastBooster.predict_start`); a booster
        that declines (no C trees) scores its rows now; None when both decline, so the caller scores
        synchronously. `lone`: the matrix's `lone_rows` when the caller has them (`Scorer.start` routes a
        flush once, for its predict and its classification)."""
        lone = lone_rows(matrix) if lone is None else lone
        if not lone.any():
            return start_predict(self.full, matrix)
        if lone.all():
            return start_predict(self.lone, matrix)
        parts = ((self.full, matrix[~lone]), (self.lone, matrix[lone]))
        started = [start_predict(model, rows) for model, rows in parts]
        if started[0] is None and started[1] is None:
            return None
        full_part, lone_part = (
            _Ready(model.predict_proba(rows)) if running is None else running
            for running, (model, rows) in zip(started, parts, strict=True)
        )
        return _PairPredict(lone, full_part, lone_part)

    def _routed(
        self, matrix: Matrix, apply: Callable[[Any, Matrix], Matrix], lone: NDArray[np.bool_] | None = None
    ) -> Matrix:
        lone = lone_rows(matrix) if lone is None else lone
        if not lone.any():
            return np.asarray(apply(self.full, matrix), dtype=np.float32)
        if lone.all():
            return np.asarray(apply(self.lone, matrix), dtype=np.float32)
        return merge_routes(lone, apply(self.full, matrix[~lone]), apply(self.lone, matrix[lone]))


def merge_routes(lone: NDArray[np.bool_], full_part: Matrix, lone_part: Matrix) -> Matrix:
    """One array of per-row results from each booster's part: `lone_part` for the rows `lone` marks (in
    order), `full_part` for the others."""
    out: Matrix = np.empty((len(lone), *np.shape(full_part)[1:]), dtype=np.float32)
    out[~lone] = full_part
    out[lone] = lone_part
    return out


def _class_contributions(model: Any, rows: Matrix, class_index: int) -> Matrix:
    per_class = getattr(model, "class_contributions", None)
    if per_class is not None:
        return np.asarray(per_class(rows, class_index), dtype=np.float32)
    return np.asarray(model.contributions(rows), dtype=np.float32)[:, class_index]


class _Ready:
    """A part of `RoutedModel.predict_start` scored at once (its booster declined to start)."""

    __slots__ = ("_probabilities",)

    def __init__(self, probabilities: Matrix) -> None:
        self._probabilities = probabilities

    def done(self) -> bool:
        """Always True."""
        return True

    def wait(self) -> Matrix:
        """The probabilities."""
        return self._probabilities


class _PairPredict:
    """Two boosters' predicts under way; `wait` merges them back into the rows' order."""

    __slots__ = ("_full", "_lone", "_mask")

    def __init__(self, mask: NDArray[np.bool_], full: RunningPredict, lone: RunningPredict) -> None:
        self._mask, self._full, self._lone = mask, full, lone

    def done(self) -> bool:
        """True when both are computed."""
        return self._full.done() and self._lone.done()

    def wait(self) -> Matrix:
        """The probabilities of every row, in the matrix's order; once only."""
        return merge_routes(self._mask, self._full.wait(), self._lone.wait())
