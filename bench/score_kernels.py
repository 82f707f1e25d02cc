"""CPU time per row of the C trees' scoring kernels, at chosen batch sizes, on the replay's real rows.

Why: `pipeline._ctrees` scores with one of several kernels (one row at a time, or blocks of rows per
walk of the splits, with AVX2 or AVX-512: `_ctrees.kernels()`), all giving the same bits. Which is
faster depends on the batch size and the CPU, and on this shared host a difference shows only when
the candidates run alternately in the same minutes: this runs every kernel (and optionally another
build of the extension, e.g. one from a `git worktree` of an older commit, loaded under another
module name) round after round in one process and prints medians [min .. max].

    .venv/bin/python -m bench.score_kernels [--events 60000] [--sizes 1,8,64,512,0] [--rounds 5]
        [--before path/to/_ctrees.cpython-311-x86_64-linux-gnu.so]

Rows: every flush's feature matrix of `bench.core_replay`'s records through a `Detector` (the
committed model). Size 0 means "the replay's flushes as they came"; any other size scores up to
3,000 rows in batches of that size. Before timing, every kernel's probabilities are checked equal,
byte for byte, to the first kernel's (and the other build's) at a few batch sizes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from bench._pipeline_data import records
from bench.core_replay import feature_matrices
from pipeline import detect
from pipeline.compiled_model import FastBooster
from pipeline.scoring import load_model
from schemas import fastcodec

Matrix = Any


def replay_rows(events: int) -> list[Matrix]:
    """Every flush's feature matrix of the core replay's first `events` events."""
    matrices: list[Matrix] = []
    detector = detect.Detector(load_model())
    with feature_matrices(lambda matrix: matrices.append(matrix.copy())):
        now = 1_700_000_000_000
        for _, value in records(events, 50, 200):
            now += 3
            detector.process(fastcodec.decode_events(value), now)
        detector.flush(now + 1_000)
    return matrices


def other_build(path: str) -> ModuleType:
    """The extension at `path` under another name (its init function is `PyInit__ctrees` either way)."""
    spec = importlib.util.spec_from_file_location("before._ctrees", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_row_us(forest: Any, batches: Sequence[Matrix], classes: int) -> float:
    outs = [np.empty((len(batch), classes), np.float32) for batch in batches]
    started = time.process_time()
    for batch, out in zip(batches, outs, strict=True):
        forest.predict(batch, out)
    return (time.process_time() - started) / sum(len(batch) for batch in batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--sizes", default="1,8,64,512,0", help="batch sizes, 0 = the replay's flushes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", help="another build of pipeline/_ctrees (.so) to time alongside")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pipeline import _ctrees

    model = load_model()
    if not isinstance(model, FastBooster) or model.native is None:
        raise SystemExit("pipeline._ctrees is not built: `python setup.py build_ext --inplace`")
    flushes = replay_rows(args.events)
    rows = np.concatenate(flushes)
    classes = len(model.classes)
    forests: dict[str, tuple[Any, str | None]] = {name: (model.native, name) for name in _ctrees.kernels()}
    if args.before:
        before = other_build(args.before)
        compiled = model.compiled
        forests = {"before": (before.Forest(*_forest_args(compiled, rows.shape[1])), None), **forests}
    _check_equal(forests, rows, classes)
    print(f"{len(rows):,} rows in {len(flushes)} flushes; load average {os.getloadavg()[0]:.2f}")
    for size in (int(text) for text in args.sizes.split(",")):
        batches = (
            flushes if size == 0 else [rows[i : i + size] for i in range(0, min(len(rows), 3_000), size)]
        )
        times: dict[str, list[float]] = {name: [] for name in forests}
        for _ in range(args.rounds):
            for name, (forest, kernel) in forests.items():
                if kernel is not None:
                    _ctrees.use_kernel(kernel)
                times[name].append(per_row_us(forest, batches, classes))
        cells = [
            f"{name} {statistics.median(t):.2f} [{min(t):.2f} .. {max(t):.2f}]" for name, t in times.items()
        ]
        print(f"{'flushes' if size == 0 else size:>8} | " + " | ".join(cells) + " us/row")


def _forest_args(compiled: Any, width: int) -> tuple[Any, ...]:
    return (
        np.ascontiguousarray(compiled.features, np.int32),
        np.ascontiguousarray(compiled.thresholds, np.float32),
        np.ascontiguousarray(compiled.default_left, np.int32),
        np.ascontiguousarray(compiled.leaves, np.float32),
        np.argmax(compiled.classes, axis=1).astype(np.int32),
        np.ascontiguousarray(compiled.intercept, np.float32),
        compiled.depth,
        width,
    )


def _check_equal(forests: dict[str, tuple[Any, str | None]], rows: Matrix, classes: int) -> None:
    """Every candidate's probabilities, byte for byte the first one's, at a few batch sizes."""
    from pipeline import _ctrees

    expected: dict[int, bytes] = {}
    for name, (forest, kernel) in forests.items():
        if kernel is not None:
            _ctrees.use_kernel(kernel)
        for n in (1, 5, 8, 13, 16, 100, len(rows)):
            out = np.empty((n, classes), np.float32)
            forest.predict(rows[:n], out)
            if expected.setdefault(n, out.tobytes()) != out.tobytes():
                raise SystemExit(f"{name} scores {n} rows differently")


if __name__ == "__main__":
    main()
