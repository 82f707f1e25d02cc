"""One-row vs batched XGBoost predict: why the worker scores micro-batches instead of each event.

Each `predict_proba` call pays a fixed cost (Python -> C, input checks, thread start-up, walking
every tree once per call) before the per-row work, so the rows/s of one-row calls is the floor the
micro-batches of the pipeline are measured against. The model is the one the pipeline would load:
the committed `pipeline/model/model.ubj` + `model.json` when present and usable, loaded through
`pipeline.model.booster.BoosterModel` exactly as the worker does; otherwise a stand-in booster of
realistic size with the real feature count (`pipeline.features.FEATURE_NAMES`) and classes: the
training defaults of `pipeline/training/train.py` (120 rounds x 13 classes = 1,560 trees, max depth
5), trained once on random sparse rows with one thread and cached under
`$RINGFENCE_HOME/bench/` (its scores are meaningless; its size is what costs).

Rows are sparse float32 feature rows (5 % non-zero, like process-tree features). Each case is timed
best-of-N passes, alternating one-row and batched calls so both see the same machine load. The
figures are the one-row latency (us per call) and rows/s of `predict_proba` on batches of B rows
(B = 64, and 512: the worker's `micro_batch_rows` until session AF, 1,024 since; kept so that figures
stay comparable with those recorded); the baseline is rows/s of one-row calls on the
same rows in the same run. Everything is measured twice: with the booster's thread count as
`BoosterModel.load` leaves it (xgboost's default: all cores), then with `nthread=1`, because on a
busy machine OpenMP's per-call thread wake-up dominates small predictions. Last, the worker's
compiled scorer and per-class explainer (`pipeline.compiled_model`) against XGBoost on the same rows.

    .venv/bin/python -m bench.bench_xgboost [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench import Result

NEEDS_KAFKA = False
BATCH_SIZES = (64, 512)  # 512: the worker's micro_batch_rows until session AF (1,024 since)
COMPILED_BATCHES = (1, 20, 100, 500)
DENSITY = 0.05
ROUNDS, MAX_DEPTH, ETA = 120, 5, 0.2  # pipeline/training/train.py's defaults
TRAIN_ROWS = 1000


@dataclass(frozen=True)
class Sizes:
    single_rows: int  # rows scored one call each, per pass
    batched_rows: int  # rows scored per batch size, per pass
    passes: int  # best of


QUICK = Sizes(40, 2048, 2)
FULL = Sizes(200, 8192, 3)


@dataclass(frozen=True)
class Loaded:
    model: Any  # pipeline.model.booster.BoosterModel
    label: str  # "model <version>" (the committed one) / "stand-in"


@dataclass(frozen=True)
class Timing:
    """Best seconds per pass: one-row calls over `single_rows`, each batch size over `batched_rows`."""

    one_row_s: float
    batched_s: dict[int, float]


def run(quick: bool) -> list[Result]:
    """One-row latency and batched rows/s, with the booster as loaded and then with one thread."""
    sizes = QUICK if quick else FULL
    loaded = load()
    matrix = rows(max(sizes.batched_rows, sizes.single_rows))
    as_loaded = measure(loaded.model.predict_proba, matrix, sizes)
    # The worker loads the booster with xgboost's default thread count (all cores); on a busy
    # machine OpenMP's start-up per call dominates small calls, so one thread is measured too.
    loaded.model._booster.set_param({"nthread": 1})  # a benchmark may reach in
    one_thread = measure(loaded.model.predict_proba, matrix, sizes)
    return [*results(as_loaded, sizes, f"{loaded.label}, default threads"),
            *results(one_thread, sizes, f"{loaded.label}, nthread=1"),
            *compiled(loaded, matrix, sizes)]


def compiled(loaded: Loaded, matrix: NDArray[np.float32], sizes: Sizes) -> list[Result]:
    """`pipeline.compiled_model` against XGBoost (nthread=1) on the same rows: ms per call.

    Scoring: `CompiledTrees.predict_proba` vs `inplace_predict` at COMPILED_BATCHES rows per call
    (the worker's `FastBooster` takes the compiled path up to `COMPILED_MAX_ROWS`); explaining:
    one class's contributions (`ClassExplainers`) vs the whole model's `pred_contribs`, the work
    of an alerting flush (1 and 2 rows).
    """
    from pipeline.compiled_model import FastBooster, load_fast
    from pipeline.features import FEATURE_NAMES
    from pipeline.scoring import MODEL_DIR

    path = MODEL_DIR / "model.ubj" if loaded.label.startswith("model") else stand_in() / "model.ubj"
    fast = load_fast(loaded.model, path, FEATURE_NAMES)
    if not isinstance(fast, FastBooster):
        return []
    found = []
    for size in COMPILED_BATCHES:
        chunks = _chunks(matrix[: max(size, min(sizes.batched_rows, size * 8))], size)
        xgb_s = min(_seconds(loaded.model.predict_proba, chunks) for _ in range(sizes.passes))
        own_s = min(_seconds(fast.compiled.predict_proba, chunks) for _ in range(sizes.passes))
        found.append(Result(f"compiled trees, {size}-row calls ({loaded.label})", 1e3 * own_s / len(chunks),
                            "ms/call", 1e3 * xgb_s / len(chunks), "xgboost inplace_predict, nthread=1",
                            higher_is_better=False))
    for size in (1, 2):
        chunks = _chunks(matrix[: size * 8], size)
        every_s = min(_seconds(loaded.model.contributions, chunks) for _ in range(sizes.passes))
        one_s = min(_seconds(lambda m: fast.class_contributions(m, 1), chunks) for _ in range(sizes.passes))
        found.append(Result(f"one class's SHAP, {size}-row calls ({loaded.label})", 1e3 * one_s / len(chunks),
                            "ms/call", 1e3 * every_s / len(chunks), "xgboost pred_contribs, all classes",
                            higher_is_better=False))
    return found


def measure(predict: Callable[[NDArray[np.float32]], object], matrix: NDArray[np.float32],
            sizes: Sizes) -> Timing:
    """Best of `passes`, alternating one-row and batched calls so both see the same machine load."""
    predict(matrix[: BATCH_SIZES[-1]])  # first call: lazy allocations and thread pool start-up
    singles = _chunks(matrix[: sizes.single_rows], 1)
    batches = {size: _chunks(matrix[: sizes.batched_rows], size) for size in BATCH_SIZES}
    one_s = float("inf")
    batched_s = dict.fromkeys(BATCH_SIZES, float("inf"))
    for _ in range(sizes.passes):
        one_s = min(one_s, _seconds(predict, singles))
        for size, chunks in batches.items():
            batched_s[size] = min(batched_s[size], _seconds(predict, chunks))
    return Timing(one_s, batched_s)


def _chunks(matrix: NDArray[np.float32], size: int) -> list[NDArray[np.float32]]:
    return [matrix[i : i + size] for i in range(0, len(matrix), size)]


def results(timing: Timing, sizes: Sizes, label: str) -> list[Result]:
    one_rate = sizes.single_rows / timing.one_row_s
    found = [Result(f"xgboost one-row predict ({label})", 1e6 * timing.one_row_s / sizes.single_rows,
                    "us", higher_is_better=False)]
    found += [Result(f"xgboost {size}-row batches ({label})",
                     sizes.batched_rows / timing.batched_s[size], "rows/s", one_rate,
                     "one-row predict_proba calls, same rows, same threads, same run")
              for size in BATCH_SIZES]
    return found


def _seconds(predict: Callable[[NDArray[np.float32]], object], chunks: list[NDArray[np.float32]]) -> float:
    started = time.perf_counter()
    for chunk in chunks:
        predict(chunk)
    return time.perf_counter() - started


def rows(count: int, seed: int = 7) -> NDArray[np.float32]:
    """Sparse non-negative float32 feature rows with the real feature count."""
    from pipeline.features import N_FEATURES

    rng = np.random.default_rng(seed)
    mask = rng.random((count, N_FEATURES)) < DENSITY
    values = rng.random((count, N_FEATURES), dtype=np.float32) * 10
    return np.ascontiguousarray(np.where(mask, values, 0.0).astype(np.float32))


# ---------------------------------------------------------------- the model


def load() -> Loaded:
    """The committed model when it loads, else the cached (or freshly trained) stand-in."""
    from pipeline.errors import ModelError
    from pipeline.model.booster import BoosterModel
    from pipeline.scoring import MODEL_DIR

    if (MODEL_DIR / "model.ubj").is_file() and (MODEL_DIR / "model.json").is_file():
        try:
            model = BoosterModel.load(MODEL_DIR)
            return Loaded(model, f"model {model.version}")
        except ModelError as exc:  # FeatureMismatch included: the worker would refuse it too
            print(f"  committed model not usable ({exc}); measuring a stand-in booster instead")
    return Loaded(BoosterModel.load(stand_in()), "stand-in")


def stand_in(home: Path | None = None) -> Path:
    """The folder of the stand-in booster (model.ubj + model.json), trained on first use."""
    from pipeline.features import FEATURE_VERSION, N_FEATURES
    from pipeline.kafka_local_config import ringfence_home
    from pipeline.scoring import CLASSES

    root = (home or ringfence_home(os.environ)) / "bench"
    folder = root / f"xgb-stand-in-{FEATURE_VERSION}-{N_FEATURES}x{len(CLASSES)}-r{ROUNDS}d{MAX_DEPTH}"
    if (folder / "model.ubj").is_file() and (folder / "model.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="xgb-stand-in-", dir=root))
    try:
        _train(staging)
        with contextlib.suppress(OSError):  # another run may have stored its own meanwhile: keep that
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _train(folder: Path) -> None:
    import xgboost

    from pipeline.features import FEATURE_NAMES, FEATURE_VERSION
    from pipeline.scoring import CLASSES

    print(f"  training the stand-in booster once ({ROUNDS} rounds x {len(CLASSES)} classes), cached in "
          f"{folder.parent}", flush=True)
    x = rows(TRAIN_ROWS, seed=0)
    y = np.random.default_rng(0).integers(0, len(CLASSES), TRAIN_ROWS)
    params = {"objective": "multi:softprob", "num_class": len(CLASSES), "max_depth": MAX_DEPTH, "eta": ETA,
              "tree_method": "hist", "min_child_weight": 0.0,
              "nthread": 1}  # one thread trains ~10x faster than two on a busy 2-core machine
    booster = xgboost.train(params, xgboost.DMatrix(x, label=y, nthread=1), num_boost_round=ROUNDS)
    booster.save_model(str(folder / "model.ubj"))
    meta = {"version": "bench-stand-in-1", "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES), "classes": list(CLASSES), "thresholds": {"malicious": 1.01}}
    (folder / "model.json").write_text(json.dumps(meta), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_xgboost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.batched_rows} rows per batch size, best of {QUICK.passes}")
    args = parser.parse_args(argv)
    from bench.__main__ import format_results

    print(format_results(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
