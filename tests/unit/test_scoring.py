"""Micro-batched scoring: one predict per flush, classification, the provisional model, model loading."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detect import Detector, DetectorConfig
from pipeline.errors import FeatureMismatch, ModelError
from pipeline.eventkit import EventKit
from pipeline.features import FEATURE_NAMES, FEATURE_VERSION, N_FEATURES, feature_index
from pipeline.model.provisional import ProvisionalRules
from pipeline.scoring import (
    BENIGN,
    CLASSES,
    Matrix,
    MicroBatcher,
    Model,
    Scorer,
    classify,
    is_provisional,
    load_model,
    top_features,
    top_features_of_rows,
)


class CountingModel:
    """A fake model counting predict calls; a row is malicious when 'self_shadow_copy_delete' is set."""

    version = "fake-1"
    feature_version = FEATURE_VERSION
    classes = CLASSES
    thresholds: Mapping[str, float] = {"malicious": 0.5}

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.explained: list[int] = []

    def predict_proba(self, matrix: Matrix) -> Matrix:
        self.calls.append(len(matrix))
        out = np.zeros((len(matrix), len(CLASSES)), dtype=np.float32)
        bad = matrix[:, feature_index("self_shadow_copy_delete")] > 0
        out[:, 0] = np.where(bad, 0.05, 0.95)
        out[:, CLASSES.index("Impact")] = 1 - out[:, 0]
        return out

    def contributions(self, matrix: Matrix) -> Matrix:
        self.explained.append(len(matrix))
        out = np.zeros((len(matrix), len(CLASSES), N_FEATURES + 1), dtype=np.float32)
        out[:, :, feature_index("self_shadow_copy_delete")] = 3.0
        return out


def test_counting_model_conforms_to_protocol() -> None:
    model: Model = CountingModel()
    assert model.classes[0] == BENIGN


def probs(*rows: list[float]) -> Matrix:
    return np.array(rows, dtype=np.float32)


def test_classify_benign_named_tactic_and_generic() -> None:
    p = np.zeros((3, len(CLASSES)), dtype=np.float32)
    p[0, 0] = 0.9
    p[0, 1] = 0.1  # benign
    p[1, 0], p[1, CLASSES.index("Impact")], p[1, 1] = 0.1, 0.8, 0.1  # Impact dominates
    p[2, 0] = 0.1
    p[2, 1:] = 0.9 / 12  # malicious, no tactic dominates
    scores = classify(p, {"malicious": 0.5})
    assert [scores.row(i).tactic for i in range(3)] == [BENIGN, "Impact", "Generic"]
    assert scores.flagged_rows() == [1, 2]
    assert scores.row(1).band == "high" and scores.row(1).is_malicious


def test_rows_read_at_once_are_each_rows_own_score() -> None:
    rng = np.random.default_rng(3)
    raw = rng.random((40, len(CLASSES))).astype(np.float32)
    raw[20:, 0] = 40.0  # benign rows
    raw[:5, 3] = 30.0  # rows of one clear tactic
    probabilities = raw / raw.sum(axis=1, keepdims=True)
    thresholds = {"malicious": 0.5, "generic": 0.7, CLASSES[3]: 0.2}
    scores = classify(probabilities, thresholds)
    picked = [0, 7, 3, 39, 3, *scores.flagged_rows()]
    assert scores.rows(picked) == [scores.row(i) for i in picked]
    assert {s.tactic for s in scores.rows(range(40))} >= {"Benign", "Generic", CLASSES[3]}
    assert scores.rows([]) == []
    assert any(s.is_malicious for s in scores.rows(picked))


def test_per_class_threshold_turns_a_weak_tactic_into_generic() -> None:
    p = np.zeros((1, len(CLASSES)), dtype=np.float32)
    p[0, 0], p[0, CLASSES.index("Discovery")], p[0, CLASSES.index("Impact")] = 0.2, 0.7, 0.1
    assert classify(p, {"malicious": 0.5}).row(0).tactic == "Discovery"
    assert classify(p, {"malicious": 0.5, "Discovery": 0.9}).row(0).tactic == "Generic"
    assert classify(p, {"malicious": 0.9}).row(0).tactic == BENIGN


def test_micro_batcher_flushes_on_rows_or_delay() -> None:
    batcher: MicroBatcher[str] = MicroBatcher(max_rows=3, max_delay_ms=100)
    assert not batcher.due(0)
    batcher.add(["a", "b"], now_ms=1_000)
    assert not batcher.due(1_050)
    assert batcher.due(1_100)
    batcher.add(["b", "c"], now_ms=1_060)
    assert len(batcher) == 3 and batcher.due(1_061)
    assert batcher.drain() == ["a", "b", "c"]
    assert len(batcher) == 0 and not batcher.due(10_000)
    with pytest.raises(ValueError):
        MicroBatcher(max_rows=0)


def test_scorer_makes_one_predict_call_per_batch() -> None:
    model = CountingModel()
    scorer = Scorer(model)
    matrix = np.zeros((7, N_FEATURES), dtype=np.float32)
    matrix[3, feature_index("self_shadow_copy_delete")] = 1
    scores = scorer.score(matrix)
    assert model.calls == [7]
    assert scores.flagged_rows() == [3]
    reasons = scorer.explain(matrix, [3], [scores.row(3).class_index], FEATURE_NAMES)
    assert list(reasons) == [3] and reasons[3][0][0] == "self_shadow_copy_delete"
    assert scorer.explain(matrix, [], [], FEATURE_NAMES) == {}
    assert scorer.stats.predict_calls == 1 and scorer.stats.contribution_calls == 1


def test_detector_scores_many_changed_trees_with_one_predict_per_flush() -> None:
    model = CountingModel()
    detector = Detector(model, config=DetectorConfig(max_rows=10_000, max_delay_ms=1_000))
    kits = [EventKit(f"dev-{i}") for i in range(20)]
    events = []
    for kit in kits:
        events += [kit.start("a", r"C:\Program Files\App\app.exe", "app.exe"),
                   kit.start("b", r"C:\Windows\System32\cmd.exe", "cmd /c ver", parent="a"),
                   kit.write("b", r"C:\Temp\x.txt")]  # fmt: skip
    assert detector.process(events[:30], now_ms=0) == []  # not due yet: nothing scored
    assert model.calls == []
    detector.process(events[30:], now_ms=500)
    assert model.calls == []
    detector.tick(now_ms=1_000)  # the oldest change has waited max_delay_ms
    assert len(model.calls) == 1 and model.calls[0] == 40  # 2 scorable processes x 20 devices
    assert detector.scorer.stats.predict_calls == detector.stats.flushes == 1


def test_detector_flushes_when_enough_rows_are_pending() -> None:
    model = CountingModel()
    detector = Detector(model, config=DetectorConfig(max_rows=5, max_delay_ms=60_000))
    kit = EventKit()
    for i in range(12):
        detector.process([kit.start(f"p{i}", r"C:\Program Files\App\app.exe")], now_ms=0)
    assert model.calls == [5, 5]


def test_contributions_are_computed_only_for_new_alerts() -> None:
    model = CountingModel()
    detector = Detector(model, config=DetectorConfig(max_rows=10_000, max_delay_ms=0))
    kit = EventKit()
    vss = r"C:\Windows\System32\vssadmin.exe"
    detector.process([kit.start("a", vss, "vssadmin delete shadows /all"),
                      kit.start("b", vss, "vssadmin delete shadows /all")], now_ms=kit.now_ms)  # fmt: skip
    assert model.explained == [2]  # two separate trees, one row each
    detector.process([kit.write("a", r"C:\Temp\x.log")], now_ms=kit.now_ms)
    assert len(model.calls) == 2 and model.explained == [2]  # flagged again, already alerted
    assert detector.stats.realerts_skipped == 1


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 6),
    width=st.integers(1, 12),
    k=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_top_features_of_many_rows_equal_each_rows_own(rows: int, width: int, k: int, seed: int,
                                                       dtype: type) -> None:  # fmt: skip
    # ties, zeros, negatives and signed zeros: the batched sort must keep each row's stable order
    rng = np.random.default_rng(seed)
    pool: Matrix = np.array([-1.5, -0.0, 0.0, 0.25, 0.25, 1.0, 3.0, 1e-30, np.nan], dtype=dtype)
    contributions: Matrix = rng.choice(pool, size=(rows, width + 1)).astype(dtype)
    values: Matrix = rng.choice(pool, size=(rows, width)).astype(dtype)
    names = tuple(f"f{i}" for i in range(width))
    expected = [top_features(contributions[r], values[r], names, k) for r in range(rows)]
    got = top_features_of_rows(contributions, values, names, k)
    assert repr(got) == repr(expected)  # repr: NaN values compare equal, float types are the same


def test_top_features_are_positive_and_ordered() -> None:
    contributions = np.array([0.5, -2.0, 3.0, 0.0, 9.9], dtype=np.float32)  # last = bias
    values = np.array([1, 1, 2, 0], dtype=np.float32)
    assert top_features(contributions, values, ("a", "b", "c", "d"), k=3) == [
        ("c", 2.0, 3.0),
        ("a", 1.0, 0.5),
    ]


def test_provisional_model_is_labelled_and_well_formed() -> None:
    model = ProvisionalRules()
    assert is_provisional(model) and model.version == "provisional-rules-0"
    matrix = np.zeros((2, N_FEATURES), dtype=np.float32)
    matrix[1, feature_index("self_shadow_copy_delete")] = 1
    p = model.predict_proba(matrix)
    assert p.shape == (2, len(CLASSES)) and np.allclose(p.sum(axis=1), 1)
    scores = classify(p, model.thresholds)
    assert scores.row(0).tactic == BENIGN and scores.row(1).tactic == "Impact"
    contrib = model.contributions(matrix)
    assert contrib.shape == (2, len(CLASSES), N_FEATURES + 1)
    assert contrib[1, CLASSES.index("Impact"), feature_index("self_shadow_copy_delete")] > 0


def test_load_model_falls_back_to_provisional_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        model = load_model(tmp_path)
    assert is_provisional(model)
    assert "PROVISIONAL" in caplog.text


def write_booster(directory: Path, feature_names: tuple[str, ...] = FEATURE_NAMES) -> None:
    import xgboost

    rng = np.random.default_rng(0)
    x = rng.random((len(CLASSES) * 4, N_FEATURES), dtype=np.float32)
    y = np.repeat(np.arange(len(CLASSES)), 4)
    booster = xgboost.train({"objective": "multi:softprob", "num_class": len(CLASSES), "max_depth": 2},
                            xgboost.DMatrix(x, label=y), num_boost_round=2)  # fmt: skip
    booster.save_model(str(directory / "model.ubj"))
    meta = {"version": "test-xgb-1", "feature_version": FEATURE_VERSION, "feature_names": list(feature_names),
            "classes": list(CLASSES), "thresholds": {"malicious": 0.6}}  # fmt: skip
    (directory / "model.json").write_text(json.dumps(meta), encoding="utf-8")


def test_load_model_serves_a_trained_booster(tmp_path: Path) -> None:
    write_booster(tmp_path)
    model = load_model(tmp_path)
    assert model.version == "test-xgb-1" and not is_provisional(model)
    matrix = np.zeros((3, N_FEATURES), dtype=np.float32)
    assert model.predict_proba(matrix).shape == (3, len(CLASSES))
    assert model.contributions(matrix).shape == (3, len(CLASSES), N_FEATURES + 1)
    assert model.thresholds["malicious"] == 0.6


def test_a_model_for_another_feature_list_is_refused(tmp_path: Path) -> None:
    write_booster(tmp_path, feature_names=("x", *FEATURE_NAMES[1:]))
    with pytest.raises(FeatureMismatch):
        load_model(tmp_path)


def test_unreadable_model_metadata_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "model.ubj").write_bytes(b"junk")
    (tmp_path / "model.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError):
        load_model(tmp_path)
