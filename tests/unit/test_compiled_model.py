"""The compiled booster scores and explains exactly as XGBoost does, on the committed model and real rows."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.compiled_model import COMPILED_MAX_ROWS, CompiledTrees, FastBooster, load_fast
from pipeline.detect import Detector
from pipeline.errors import ModelError
from pipeline.eventkit import EventKit
from pipeline.features import FEATURE_NAMES, feature_matrix, row_context
from pipeline.model.booster import BoosterModel
from pipeline.model.provisional import ProvisionalRules
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


def test_small_batches_use_the_compiled_trees_and_large_ones_xgboost() -> None:
    base, fast = committed()
    rows = real_rows()
    small, large = rows[:COMPILED_MAX_ROWS], rows[: COMPILED_MAX_ROWS * 3]
    assert np.array_equal(fast.predict_proba(small), fast.compiled.predict_proba(small))
    assert np.array_equal(fast.predict_proba(large), base.predict_proba(large))


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


def _tiny_booster(**params: Any) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    x = rng.random((60, 6), dtype=np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan  # learned default directions
    y = rng.integers(0, 3, 60)
    booster = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 4, **params},
                            xgboost.DMatrix(x, label=y), num_boost_round=5)  # fmt: skip
    model: dict[str, Any] = json.loads(bytes(booster.save_raw("json")))
    compiled = CompiledTrees.from_json(model)
    assert np.abs(compiled.predict_proba(x) - booster.inplace_predict(x)).max() <= 1e-5
    return model


def test_trees_of_uneven_depth_with_missing_values_compile() -> None:
    _tiny_booster()  # asserts equality with xgboost itself


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


def test_load_model_serves_the_compiled_booster() -> None:
    model = load_model()
    assert isinstance(model, FastBooster) and model.version == committed()[0].version
