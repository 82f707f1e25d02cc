"""The compiled booster scores and explains exactly as XGBoost does, on the committed model and real rows."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.compiled_model import COMPILED_MAX_ROWS, CompiledTrees, FastBooster, load_fast, native_trees
from pipeline.detect import Detector
from pipeline.errors import ModelError
from pipeline.eventkit import EventKit
from pipeline.features import FEATURE_NAMES, feature_matrix, row_context
from pipeline.model.booster import BoosterModel
from pipeline.model.provisional import ProvisionalRules
from pipeline.model.routed import RoutedModel
from pipeline.scoring import CLASSES, MODEL_DIR, Matrix, Scorer, load_model

xgboost = pytest.importorskip("xgboost")


@cache
def committed() -> tuple[BoosterModel, FastBooster]:
    base = BoosterModel.load(MODEL_DIR)
    fast = load_fast(base, MODEL_DIR / "model.ubj", FEATURE_NAMES)
    assert isinstance(fast, FastBooster)
    return base, fast


def _attack(kit: EventKit, i: int) -> list[Any]:
    ps = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
    word = r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE"
    vss = r"C:\Windows\System32\vssadmin.exe"
    drop = rf"C:\Users\alice\AppData\Local\Temp\u{i}.exe"
    return [
        kit.start(f"w{i}", word, "WINWORD.EXE", parent="e"),
        kit.start(f"p{i}", ps, "powershell.exe -nop -w hidden -enc SQBFAFgA", parent=f"w{i}"),
        kit.write(f"p{i}", drop),
        kit.start(f"u{i}", drop, "upd.exe", parent=f"p{i}", sha256=f"{i:064x}"),
        kit.start(f"v{i}", vss, "vssadmin delete shadows /all", parent=f"u{i}"),
        *(kit.rename(f"u{i}", rf"C:\Users\a\f{j}.docx", rf"C:\Users\a\f{j}.locked") for j in range(i % 9)),
    ]


def _benign(kit: EventKit, i: int) -> list[Any]:
    chrome = r"C:\Program Files\Google\Chrome\Application\chrome.exe"
    return [
        kit.start(f"c{i}", chrome, "chrome.exe", parent="e"),
        kit.write(f"c{i}", rf"C:\Users\a\Downloads\r{i}.pdf"),
        kit.start(f"d{i}", r"C:\Windows\System32\cmd.exe", f"cmd.exe /c dir C:\\Users\\{i}", parent=f"c{i}"),
    ]


@cache
def real_rows() -> Matrix:
    """Feature rows of real trees (ransomware-like chains, benign ones) as the detector builds them."""
    detector = Detector(ProvisionalRules())
    kit = EventKit("dev-compiled", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [kit.start("e", r"C:\Windows\explorer.exe", "explorer.exe")]
    for i in range(24):
        events += _attack(kit, i) + _benign(kit, i)
    detector.ingest(events, 0)
    forest = detector.forests["dev-compiled"]
    keys = [node.key for node in forest.nodes.values() if not node.placeholder]
    contexts = [row_context(forest, key, 300_000) for key in keys]
    return feature_matrix(contexts)


def test_compiled_trees_reproduce_inplace_predict_on_real_rows() -> None:
    base, fast = committed()
    rows = real_rows()
    assert len(rows) > 100 and rows.any(axis=0).sum() > 20  # many rows, many features in use
    expected = base.predict_proba(rows)
    assert np.abs(fast.compiled.predict_proba(rows) - expected).max() <= 1e-5
    assert (expected[:, 1:].max(axis=1) > 0.5).any() and (expected[:, 0] > 0.5).any()  # both verdicts seen


def test_missing_values_take_each_split_default_branch() -> None:
    base, fast = committed()
    rows = real_rows()[:40].copy()
    rows[::3, ::4] = np.nan
    assert np.abs(fast.compiled.predict_proba(rows) - base.predict_proba(rows)).max() <= 1e-5


def test_without_the_c_trees_small_batches_use_numpy_and_large_ones_xgboost() -> None:
    base, built = committed()
    fast = FastBooster(base, built.compiled, built.explainers, native=None)
    rows = real_rows()
    small, large = rows[:COMPILED_MAX_ROWS], rows[: COMPILED_MAX_ROWS * 3]
    assert np.array_equal(fast.predict_proba(small), fast.compiled.predict_proba(small))
    assert np.array_equal(fast.predict_proba(large), base.predict_proba(large))


def _bits(matrix: Matrix) -> bytes:
    return np.ascontiguousarray(matrix, dtype=np.float32).tobytes()


def test_the_c_trees_are_built_and_serve_every_batch_size_bit_for_bit_as_xgboost() -> None:
    base, fast = committed()
    assert fast.native is not None, NOT_BUILT
    rows = real_rows()
    for n in (0, 1, 7, 8, 9, 63, 64, 65, len(rows)):  # lane tails, row blocks, the whole set
        assert _bits(fast.predict_proba(rows[:n])) == _bits(base.predict_proba(rows[:n])), n


@contextmanager
def scoring_kernel(name: str) -> Iterator[None]:
    """Every `Forest` of the process scores with kernel `name` inside the block."""
    from pipeline import _ctrees

    previous = _ctrees.use_kernel(name)
    try:
        yield
    finally:
        _ctrees.use_kernel(previous)


def kernels() -> list[str]:
    from pipeline import _ctrees

    return list(_ctrees.kernels())


def test_every_scoring_kernel_gives_xgboosts_bits_at_every_batch_size() -> None:
    """Blocks of 8 rows, padded tails (4-7 rows), rows left to the row kernel (1-3), NaN and inf."""
    base, fast = committed()
    assert fast.native is not None, NOT_BUILT
    rows = real_rows()[:90].copy()
    rows[::3, ::4] = np.nan
    rows[1::5, 2::7] = np.inf
    rows[2::7, 1::3] = -np.inf
    expected = _bits(base.predict_proba(rows)), _bits(base.predict_proba(real_rows()))
    assert {"row", "block"} <= set(kernels())
    for name in kernels():
        with scoring_kernel(name):
            for n in range(len(rows) + 1):
                assert _bits(fast.predict_proba(rows[:n])) == expected[0][: n * 4 * len(CLASSES)], (name, n)
            assert _bits(fast.predict_proba(real_rows())) == expected[1], name


def test_the_widest_kernel_the_cpu_has_is_the_default_and_names_are_checked() -> None:
    from pipeline import _ctrees

    available = kernels()
    widest = next((name for name in ("avx512", "avx2") if name in available), "row")
    assert _ctrees.kernel() == widest
    with pytest.raises(ValueError, match="unknown kernel"):
        _ctrees.use_kernel("gpu")
    with pytest.raises(TypeError, match="str"):
        _ctrees.use_kernel(8)  # type: ignore[arg-type]
    assert _ctrees.kernel() == widest  # a refused name changes nothing
    with scoring_kernel("row"):
        assert _ctrees.kernel() == "row"
    assert _ctrees.kernel() == widest


def test_the_c_trees_send_missing_values_to_each_splits_default_exactly() -> None:
    base, fast = committed()
    assert fast.native is not None, NOT_BUILT
    rows = real_rows()[:70].copy()
    rows[::3, ::4] = np.nan
    rows[1::5, 2::7] = np.inf
    assert _bits(fast.predict_proba(rows)) == _bits(base.predict_proba(rows))


def test_the_c_trees_refuse_a_matrix_of_another_width_or_type() -> None:
    _, fast = committed()
    assert fast.native is not None, NOT_BUILT
    with pytest.raises(ValueError, match="features"):
        fast.native.predict(np.zeros((2, 5), np.float32), np.empty((2, len(CLASSES)), np.float32))
    with pytest.raises(TypeError, match="format 'f'"):
        fast.native.predict(np.zeros((2, len(FEATURE_NAMES))), np.empty((2, len(CLASSES)), np.float32))


def test_one_class_contributions_equal_the_whole_models_for_that_class() -> None:
    base, fast = committed()
    rows = real_rows()[:12]
    every = base.contributions(rows)
    for index in (0, CLASSES.index("Impact"), len(CLASSES) - 1):
        assert np.array_equal(fast.class_contributions(rows, index), every[:, index, :])


def test_scorer_explains_alerting_rows_the_same_with_either_model() -> None:
    base, fast = committed()
    rows = real_rows()
    picks = [2, 7, 30]
    classes = [CLASSES.index("Impact"), CLASSES.index("Execution"), CLASSES.index("Impact")]
    plain = Scorer(base).explain(rows, picks, classes, FEATURE_NAMES)
    quick = Scorer(fast).explain(rows, picks, classes, FEATURE_NAMES)
    assert plain == quick and list(quick) == picks and any(quick.values())


NOT_BUILT = "pipeline._ctrees is not built: `pip install -e .` or `python setup.py build_ext --inplace` (gcc)"


def _tiny_booster(rows: int = 60, native: bool = True, **params: Any) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    x = rng.random((rows, 6), dtype=np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan  # learned default directions
    x[rng.random(x.shape) < 0.2] = 0.0  # ties with thresholds at zero, as the real rows have
    y = rng.integers(0, 3, rows)
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 4, **params},
                            xgboost.DMatrix(x, label=y), num_boost_round=5)  # fmt: skip
    model: dict[str, Any] = json.loads(bytes(booster.save_raw("json")))
    compiled = CompiledTrees.from_json(model)
    assert np.abs(compiled.predict_proba(x) - booster.inplace_predict(x)).max() <= 1e-5
    if not native:
        return model
    trees = native_trees(compiled, x.shape[1])
    assert trees is not None, NOT_BUILT
    for name in kernels():  # the 64-leaf trees take the 64-bit sets, shallower ones the 32-bit ones
        with scoring_kernel(name):
            out = np.empty((len(x), 3), np.float32)
            trees.predict(x, out)
            assert _bits(out) == _bits(booster.inplace_predict(x)), name
            margins = np.empty((len(x), 3), np.float32)
            trees.margins(x, margins)
            assert _bits(margins) == _bits(booster.inplace_predict(x, predict_type="margin")), name
    return model


def test_trees_of_uneven_depth_with_missing_values_compile() -> None:
    _tiny_booster()  # asserts equality with xgboost itself (numpy within rounding, C bit for bit)


def test_the_c_trees_take_trees_of_64_leaves_and_refuse_deeper_ones() -> None:
    model = _tiny_booster(rows=2000, max_depth=6, min_child_weight=0)  # exact at 64 leaves (all mask bits)
    assert CompiledTrees.from_json(model).depth == 6
    deeper = CompiledTrees.from_json(_tiny_booster(rows=2000, native=False, max_depth=8, min_child_weight=0))
    assert deeper.depth > 6
    with pytest.raises(ValueError, match="depth"):
        native_trees(deeper, 6)  # load_fast then scores with numpy and XGBoost (test below)


def test_the_c_trees_refuse_a_layout_that_would_read_out_of_bounds() -> None:
    compiled = CompiledTrees.from_json(_tiny_booster())
    assert native_trees(compiled, 6) is not None, NOT_BUILT
    with pytest.raises(ValueError, match="feature"):
        native_trees(compiled, 2)  # splits use features 0..5
    bad_class = CompiledTrees(**{**_fields(compiled), "intercept": compiled.intercept[:1]})
    with pytest.raises(ValueError, match="class"):
        native_trees(bad_class, 6)
    short = CompiledTrees(**{**_fields(compiled), "leaves": compiled.leaves[:-1]})
    with pytest.raises(ValueError, match="sizes"):
        native_trees(short, 6)


def _fields(compiled: CompiledTrees) -> dict[str, Any]:
    return {name: getattr(compiled, name) for name in CompiledTrees.__slots__}


def test_a_booster_the_c_trees_refuse_is_scored_by_numpy_and_xgboost(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    base, _ = committed()

    def refuse(compiled: CompiledTrees, n_features: int) -> None:
        raise ValueError("split 3 uses feature 400 of 321")

    monkeypatch.setattr("pipeline.compiled_model.native_trees", refuse)
    with caplog.at_level(logging.WARNING):
        fast = load_fast(base, MODEL_DIR / "model.ubj", FEATURE_NAMES)
    assert isinstance(fast, FastBooster) and fast.native is None and "C trees refused" in caplog.text
    rows = real_rows()[:3]
    assert np.abs(fast.predict_proba(rows) - base.predict_proba(rows)).max() <= 1e-5


def test_an_unknown_model_format_is_a_model_error() -> None:
    model = _tiny_booster()
    model["learner"]["objective"]["name"] = "multi:softmax"
    with pytest.raises(ModelError, match="objective"):
        CompiledTrees.from_json(model)
    model = _tiny_booster()
    model["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"][0] = 1
    with pytest.raises(ModelError, match="categorical"):
        CompiledTrees.from_json(model)
    with pytest.raises(ModelError):
        CompiledTrees.from_json({"learner": {}})


def test_a_booster_that_cannot_be_compiled_keeps_xgboost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base, _ = committed()
    (tmp_path / "model.ubj").write_bytes(b"not a booster")
    with caplog.at_level(logging.WARNING):
        assert load_fast(base, tmp_path / "model.ubj", FEATURE_NAMES) is base
    assert "XGBoost only" in caplog.text


def test_load_model_serves_the_compiled_boosters() -> None:
    model = load_model()
    assert isinstance(model, RoutedModel) and model.version == committed()[0].version
    assert isinstance(model.full, FastBooster) and isinstance(model.lone, FastBooster)


def test_c_trees_whose_construction_failed_refuse_to_score() -> None:
    from pipeline import _ctrees

    compiled = CompiledTrees.from_json(_tiny_booster())
    nan = np.array(compiled.thresholds, dtype=np.float32)
    nan[0] = np.nan
    forest = _ctrees.Forest.__new__(_ctrees.Forest)
    with pytest.raises(ValueError, match="NaN threshold"):
        forest.__init__(  # type: ignore[misc]
            compiled.features.astype(np.int32), nan, compiled.default_left.astype(np.int32), compiled.leaves,
            np.argmax(compiled.classes, axis=1).astype(np.int32), compiled.intercept, compiled.depth, 6,
        )  # fmt: skip
    with pytest.raises(RuntimeError, match="not initialised"):
        forest.predict(np.zeros((1, 6), np.float32), np.empty((1, 3), np.float32))
