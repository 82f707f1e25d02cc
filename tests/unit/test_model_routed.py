"""Two boosters, one per sensor view: process-only rows with a lone-command indicator go to the lone
booster, with its thresholds, in training, in the stream and when an artifact is written and loaded
again; every other row to the full booster."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost

from pipeline.errors import ModelError
from pipeline.features import FEATURE_NAMES, N_BASE_FEATURES
from pipeline.model.provisional import ProvisionalRules
from pipeline.model.routed import LONE_FEATURES, TELEMETRY_FEATURES, RoutedModel, lone_rows, process_only
from pipeline.scoring import (
    BENIGN,
    CLASSES,
    LONE_BOOSTER,
    Matrix,
    Scorer,
    classify,
    load_model,
    malicious_threshold,
    model_classify,
    route_of,
)
from pipeline.training.artifact import model_version, write_model
from pipeline.training.dataset import DataConfig, Dataset, build_dataset
from pipeline.training.simulate import SimConfig
from pipeline.training.train import (
    TrainConfig,
    calibrate,
    calibrate_views,
    fit,
    fit_views,
    full_view_rows,
    kept_full,
    predict,
)

COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
TINY = TrainConfig(rounds=6, early_stopping_rounds=3, max_depth=3)


def row(**values: float) -> Matrix:
    out = np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32)
    for name, value in values.items():
        out[0, COLUMN[name]] = value
    return out


def test_a_row_is_process_only_until_a_telemetry_feature_is_set() -> None:
    rows = np.vstack(
        [
            row(img_shell=1, self_account_create=1, own_child_spawn=3, sub_child_shell=2, cmd_len_log=4),
            row(img_shell=1, own_file_write=1),
            row(sub_dns_query=2),
            row(sub_distinct_dst_ip=1),
            row(own_lsass_read=1),
        ]
    )
    assert process_only(rows).tolist() == [True, False, False, False, False]
    assert not any("_child_" in name for name in TELEMETRY_FEATURES)
    assert {"own_file_write", "sub_reg_run", "own_load_unsigned", "sub_script"} <= set(TELEMETRY_FEATURES)
    assert process_only(np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)).shape == (0,)


def test_the_lone_booster_takes_only_process_only_rows_that_show_a_lone_command_indicator() -> None:
    rows = np.vstack(
        [
            row(img_shell=1, lone_service_tamper=1),
            row(img_shell=1, lone_anc_session_hijack=1),
            row(img_shell=1, self_account_create=1),  # process-only, but no lone-command indicator
            row(img_shell=1, lone_service_tamper=1, own_reg_write=1),  # telemetry: the full view
        ]
    )
    assert lone_rows(rows).tolist() == [True, True, False, False]
    assert process_only(rows).tolist() == [True, True, True, False]
    assert set(LONE_FEATURES) == {n for n in FEATURE_NAMES if n.startswith("lone_")} and LONE_FEATURES
    assert lone_rows(np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)).shape == (0,)


class Constant:
    """A model that gives every row the same probabilities, and says which rows it was asked about."""

    def __init__(self, top: int, p: float, thresholds: dict[str, float], started: bool = False) -> None:
        self.probabilities = np.full(len(CLASSES), (1 - p) / (len(CLASSES) - 1), dtype=np.float32)
        self.probabilities[top] = p
        self.thresholds = thresholds
        self.version, self.feature_version, self.classes = "v", "1.0", CLASSES
        self.seen: list[int] = []
        self.started = started

    def predict_proba(self, matrix: Matrix) -> Matrix:
        self.seen.append(len(matrix))
        return np.tile(self.probabilities, (len(matrix), 1))

    def contributions(self, matrix: Matrix) -> Matrix:
        out = np.zeros((len(matrix), len(CLASSES), len(FEATURE_NAMES) + 1), dtype=np.float32)
        out[:, :, -1] = self.probabilities[0]
        return out

    def predict_start(self, matrix: Matrix) -> Any:
        if not self.started:
            return None
        probabilities = self.predict_proba(matrix)

        class Done:
            def done(self) -> bool:
                return True

            def wait(self) -> Matrix:
                return probabilities

        return Done()


EXECUTION = CLASSES.index("Execution")
PERSISTENCE = CLASSES.index("Persistence")
STRICT = {"malicious": 0.95, "generic": 0.99, **dict.fromkeys(CLASSES[1:], 0.95)}
LENIENT = {"malicious": 0.6, "generic": 0.98, **dict.fromkeys(CLASSES[1:], 0.6)}


def mixed() -> Matrix:
    """Rows 0 and 2 carry telemetry, rows 1 and 3 process creation only and a lone-command indicator."""
    return np.vstack([
        row(own_file_write=1, lone_service_tamper=1), row(img_shell=1, lone_service_tamper=1),
        row(sub_net_connect=1), row(img_lolbin=1, lone_anc_net_capture=1),
    ])


def routed(started: bool = False) -> RoutedModel:
    return RoutedModel(
        Constant(EXECUTION, 0.8, STRICT, started), Constant(PERSISTENCE, 0.9, LENIENT, started), "two-view"
    )


def test_each_row_is_scored_by_the_booster_of_its_view_in_its_own_place() -> None:
    model = routed()
    probabilities = model.predict_proba(mixed())
    assert probabilities[:, 1:].argmax(axis=1).tolist() == [EXECUTION - 1, PERSISTENCE - 1] * 2
    assert model.full.seen == [2] and model.lone.seen == [2]  # one call per booster per batch
    only_full = model.predict_proba(np.vstack([row(own_file_write=1)] * 3))
    assert only_full.shape == (3, len(CLASSES)) and model.lone.seen == [2]


def test_process_only_rows_are_flagged_by_the_lone_thresholds_and_the_rest_by_the_full_ones() -> None:
    model = routed()
    matrix = mixed()
    scores = model_classify(model, matrix, model.predict_proba(matrix))
    tactics = [s.tactic for s in scores.rows(range(4))]
    # Execution at 0.8 is under the full booster's 0.95; Persistence at 0.9 passes the lone 0.6.
    assert tactics == [BENIGN, "Persistence", BENIGN, "Persistence"]
    assert malicious_threshold(model, matrix[1]) == 0.6 and malicious_threshold(model, matrix[0]) == 0.95


@pytest.mark.parametrize("started", [False, True])
def test_a_started_score_of_a_mixed_batch_is_the_synchronous_score(started: bool) -> None:
    model = routed(started)
    matrix = mixed()
    job = Scorer(model).start(matrix)
    expected = Scorer(routed()).score(matrix)
    got = job.result()
    assert np.array_equal(got.probabilities, expected.probabilities)
    assert np.array_equal(got.flagged, expected.flagged) and got.flagged.tolist() == [False, True] * 2


def test_contributions_come_from_the_booster_that_scored_the_row() -> None:
    model = routed()
    matrix = mixed()
    bias = model.class_contributions(matrix, EXECUTION)[:, -1]
    assert bias.tolist() == pytest.approx([0.2 / 12, 0.1 / 12] * 2)
    assert model.contributions(matrix).shape == (4, len(CLASSES), len(FEATURE_NAMES) + 1)


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    sim = SimConfig(seed=3, attacks_per_technique=1, benign_trees=120, lone_view_attacks_per_technique=2,
                    lone_view_benign_trees=60)
    return build_dataset(DataConfig(otrf_root=None, captures=None, sim=sim))


def test_the_lone_booster_learns_from_its_rows_alone(tiny: Dataset) -> None:
    only = lone_rows(tiny.matrix)
    assert 0 < only.sum() < len(only)  # the simulated views give both kinds of rows
    views = fit_views(tiny, TINY)
    full = fit(tiny, TINY, full_view_rows(tiny, only), columns=N_BASE_FEATURES)
    assert np.array_equal(predict(views.full.booster, tiny.matrix), predict(full.booster, tiny.matrix))
    lone_only = fit(tiny, replace(TINY, min_threshold=TINY.lone_min_threshold), only)  # its rows, its floor
    assert np.array_equal(
        predict(views.lone.booster, tiny.matrix), predict(lone_only.booster, tiny.matrix)
    )
    # the thresholds: both boosters' calibrated together, as the stream routes the calibration rows
    thresholds = calibrate_views(tiny, TINY, views.full.booster, views.lone.booster, only)
    assert (views.full.thresholds, views.lone.thresholds) == thresholds
    assert views.lone.thresholds["generic"] >= TINY.lone_min_generic
    assert not np.array_equal(predict(views.lone.booster, tiny.matrix), predict(full.booster, tiny.matrix))


def test_a_two_view_artifact_loads_routed_and_scores_as_its_boosters(tmp_path: Path, tiny: Dataset) -> None:
    views = fit_views(tiny, TINY)
    version = write_model(tmp_path, views.full, TINY, tiny, lone=views.lone)
    meta = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    lone_bytes = (tmp_path / LONE_BOOSTER).read_bytes()
    assert meta["lone"]["thresholds"] == views.lone.thresholds
    assert version == meta["version"] == model_version(
        (tmp_path / "model.ubj").read_bytes(), views.full.thresholds, (lone_bytes, views.lone.thresholds)
    )
    assert version != model_version((tmp_path / "model.ubj").read_bytes(), views.full.thresholds)
    model = load_model(tmp_path)
    assert isinstance(model, RoutedModel) and model.version == version
    only = lone_rows(tiny.matrix)
    expected = np.where(
        only[:, None], predict(views.lone.booster, tiny.matrix), predict(views.full.booster, tiny.matrix)
    )
    assert np.allclose(model.predict_proba(tiny.matrix), expected, atol=1e-6)
    assert model.lone_thresholds == views.lone.thresholds and model.thresholds == views.full.thresholds


def test_rewriting_with_one_booster_removes_the_stale_second(tmp_path: Path, tiny: Dataset) -> None:
    views = fit_views(tiny, TINY)
    write_model(tmp_path, views.full, TINY, tiny, lone=views.lone)
    write_model(tmp_path, views.full, TINY, tiny)
    assert not (tmp_path / LONE_BOOSTER).exists()
    assert not isinstance(load_model(tmp_path), RoutedModel)


def test_a_named_but_missing_or_malformed_second_booster_is_refused(tmp_path: Path, tiny: Dataset) -> None:
    views = fit_views(tiny, TINY)
    write_model(tmp_path, views.full, TINY, tiny, lone=views.lone)
    (tmp_path / LONE_BOOSTER).unlink()
    with pytest.raises(ModelError, match="second booster"):
        load_model(tmp_path)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["lone"] = {"thresholds": "high"}
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelError, match="'lone' must be an object"):
        load_model(tmp_path)


@pytest.mark.parametrize("two_view", [False, True])
def test_ringfence_train_fits_the_second_booster_only_when_asked(tmp_path: Path, two_view: bool) -> None:
    from pipeline.training.run import RunConfig, run_train

    sim = SimConfig(seed=3, attacks_per_technique=1, benign_trees=120, lone_view_attacks_per_technique=2,
                    lone_view_benign_trees=60)
    config = RunConfig(
        out=tmp_path,
        data=DataConfig(otrf_root=None, captures=None, sim=sim),
        train=TINY,
        evtx_dir=None,
        recordings=False,
        two_view=two_view,
    )
    results = run_train(config)
    card = (tmp_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert (tmp_path / LONE_BOOSTER).exists() is two_view
    assert isinstance(load_model(tmp_path), RoutedModel) is two_view
    assert ("Two sensor views, two boosters" in card) is two_view
    assert results.version in card and (results.lone is not None) is two_view


def test_train_full_from_keeps_a_models_full_booster_bit_for_bit_and_refits_the_lone_one(
    tmp_path: Path, tiny: Dataset
) -> None:
    from pipeline.training.run import RunConfig, run_train

    source = tmp_path / "source"
    views = fit_views(tiny, TINY)
    source_version = write_model(source, views.full, TINY, tiny, lone=views.lone)
    other = replace(TINY, seed=11, subsample=0.6)  # a full booster fitted with it would differ
    kept_bytes = (source / "model.ubj").read_bytes()
    kept, version = kept_full(source)
    assert version == source_version and kept.thresholds == views.full.thresholds
    assert np.array_equal(predict(kept.booster, tiny.matrix), predict(views.full.booster, tiny.matrix))
    refit = fit_views(tiny, other, kept)
    assert refit.full.booster is kept.booster  # kept; its thresholds calibrated with the new lone booster's
    assert (refit.full.thresholds, refit.lone.thresholds) == calibrate_views(
        tiny, other, kept.booster, refit.lone.booster, lone_rows(tiny.matrix))
    assert not np.array_equal(predict(fit_views(tiny, other).full.booster, tiny.matrix),
                              predict(kept.booster, tiny.matrix))
    # the whole command: in its own folder too, as the committed model rebuilds from itself
    sim = SimConfig(seed=3, attacks_per_technique=1, benign_trees=120, lone_view_attacks_per_technique=2,
                    lone_view_benign_trees=60)
    config = RunConfig(out=source, data=DataConfig(otrf_root=None, captures=None, sim=sim), train=other,
                       evtx_dir=None, recordings=False, full_from=source)
    results = run_train(config)
    meta = json.loads((source / "model.json").read_text(encoding="utf-8"))
    assert meta["booster_sha256"] == hashlib.sha256(kept_bytes).hexdigest()  # the kept booster, bit for bit
    assert meta["thresholds"] == results.thresholds and meta["full_from"] == source_version
    assert results.full_from == source_version and results.version != source_version
    model = load_model(source)
    assert isinstance(model, RoutedModel)
    full_rows = ~lone_rows(tiny.matrix)
    assert np.allclose(model.predict_proba(tiny.matrix)[full_rows],
                       predict(views.full.booster, tiny.matrix)[full_rows], atol=1e-6)
    card = (source / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"`{source_version}`'s, bit for bit" in card and "--full-from pipeline/model" in card
    again = run_train(config)  # kept from a model that kept it: still named after the model that fitted it
    assert again.version == results.version and again.full_from == source_version


def test_train_full_from_refuses_what_it_cannot_keep(tmp_path: Path, tiny: Dataset) -> None:
    views = fit_views(tiny, TINY)
    with pytest.raises(ValueError, match="no model to keep"):
        kept_full(tmp_path / "absent")
    one_view = tmp_path / "one"
    write_model(one_view, views.full, TINY, tiny)
    with pytest.raises(ValueError, match="not a two-view model"):
        kept_full(one_view)
    two = tmp_path / "two"
    write_model(two, views.full, TINY, tiny, lone=views.lone)
    (two / "model.ubj").write_bytes((two / LONE_BOOSTER).read_bytes())  # another booster under its name
    with pytest.raises(ValueError, match=re.escape("not the booster its model.json names")):
        kept_full(two)
    wide = tmp_path / "wide"  # a "full" booster whose tree reads a lone-command column cannot be kept
    model = json.loads(bytes(views.full.booster.save_raw("json")))
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    inner = tree["left_children"].index(next(c for c in tree["left_children"] if c != -1))
    tree["split_indices"][inner] = N_BASE_FEATURES  # the first lone column
    reads_lone = xgboost.Booster()
    reads_lone.load_model(bytearray(json.dumps(model).encode()))
    write_model(wide, replace(views.full, booster=reads_lone), TINY, tiny, lone=views.lone)
    with pytest.raises(ValueError, match=re.escape(f"splits on column {N_BASE_FEATURES}, beyond 1.0's")):
        kept_full(wide)
    meta_path = two / "model.json"
    write_model(two, views.full, TINY, tiny, lone=views.lone)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["feature_names"] = list(reversed(meta["feature_names"]))
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape("not 1.0's")):
        kept_full(two)
    write_model(two, views.full, TINY, tiny, lone=views.lone)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["thresholds"]  # a hand-edited model.json: refused with the folder named, not a KeyError
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match="cannot be read"):
        kept_full(two)


def test_the_lone_booster_is_calibrated_with_its_own_floor_and_the_full_one_ignores_it(tiny: Dataset) -> None:
    # Each view is calibrated on its own rows (no view floors the other, since 1.1); the lone booster's
    # floor is `lone_min_threshold`, the full booster's `min_threshold`.
    views = fit_views(tiny, TINY)
    assert TINY.lone_min_threshold < TINY.min_threshold
    assert min(views.lone.thresholds.values()) == TINY.lone_min_threshold  # its floor, not the full one's
    assert min(views.full.thresholds.values()) >= TINY.min_threshold
    strict = fit_views(tiny, replace(TINY, lone_min_threshold=0.95))
    assert strict.full.thresholds == views.full.thresholds  # the full booster never reads the lone floor
    assert min(strict.lone.thresholds.values()) >= 0.95
    assert strict.lone.thresholds != views.lone.thresholds


def test_calibration_keeps_every_threshold_at_or_above_the_floors_it_is_given() -> None:
    rng = np.random.default_rng(1)
    rows = 900
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), size=rows).astype(np.float32)
    labels = np.array([BENIGN] * 600 + ["Execution"] * 300)
    trees = np.array([f"t{i // 3}" for i in range(rows)])
    config = TrainConfig()
    floors = {name: 0.9 for name in (*CLASSES[1:], "generic")}
    free = calibrate(probabilities, labels, trees, config)
    held = calibrate(probabilities, labels, trees, config, floors)
    assert all(held[k] >= 0.9 for k in floors) and held["malicious"] == min(held[k] for k in floors)
    assert any(free[k] < 0.9 for k in floors)  # the floors changed something
    no_benign = calibrate(probabilities[600:], labels[600:], trees[600:], config, floors)
    assert no_benign == {**floors, "generic": config.min_generic, "malicious": 0.9}  # 0.98 is the higher


def test_a_booster_that_cannot_start_scores_its_rows_once_and_the_other_still_starts() -> None:
    model = RoutedModel(
        Constant(EXECUTION, 0.8, STRICT, started=True), Constant(PERSISTENCE, 0.9, LENIENT), "two-view"
    )
    matrix = mixed()
    got = Scorer(model).start(matrix).result()
    assert model.full.seen == [2] and model.lone.seen == [2]  # no row predicted twice
    assert np.array_equal(got.probabilities, Scorer(routed()).score(matrix).probabilities)


def _every_row_alone(matrix: Matrix) -> list[bool]:
    """The route of each row computed by itself: what the batch answer must equal."""
    return [bool(lone_rows(matrix[i : i + 1])[0]) for i in range(len(matrix))]


@pytest.mark.parametrize("seed", range(8))
def test_a_batch_routes_each_row_as_that_row_alone_routes(seed: int) -> None:
    # The telemetry columns are read only on the rows that show an indicator: a mix of every kind of row
    # (none, an indicator on a quiet row, an indicator beside telemetry, telemetry alone) in any order.
    rng = np.random.default_rng(seed)
    kinds = [row(), row(**{LONE_FEATURES[0]: 1}), row(**{LONE_FEATURES[-1]: 1, TELEMETRY_FEATURES[3]: 2}),
             row(**{TELEMETRY_FEATURES[-1]: 1}), row(cmd_len_log=3, **{LONE_FEATURES[5]: 1})]  # fmt: skip
    matrix = np.vstack([kinds[k] for k in rng.integers(0, len(kinds), size=int(rng.integers(1, 60)))])
    assert lone_rows(matrix).tolist() == _every_row_alone(matrix)


def test_a_flush_is_routed_once_for_its_predict_and_its_classification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.model import routed

    model = load_model()
    assert isinstance(model, RoutedModel)
    quiet, loud = row(img_shell=1, cmd_len_log=3), row(img_shell=1, **{LONE_FEATURES[0]: 1})
    matrix = np.vstack([quiet, loud, quiet, row(own_file_write=2, **{LONE_FEATURES[1]: 1})])
    expected = Scorer(model).score(matrix)  # the synchronous path routes as before
    calls: list[int] = []
    real = routed.lone_rows
    monkeypatch.setattr(routed, "lone_rows", lambda m: calls.append(len(m)) or real(m))
    got = Scorer(model).start(matrix).result()
    assert calls == [len(matrix)]  # one route, shared by the predict and by the thresholds
    assert np.array_equal(got.flagged, expected.flagged) and np.array_equal(got.named, expected.named)
    assert np.array_equal(got.probabilities, expected.probabilities)
    assert route_of(model, matrix).tolist() == [False, True, False, False]
    assert route_of(model, matrix[:0]) is None and route_of(ProvisionalRules(), matrix) is None


def test_the_flush_keeps_its_route_for_the_explanations_and_thresholds_of_its_alerts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.model import routed

    model = load_model()
    assert isinstance(model, RoutedModel)
    quiet, loud = row(img_shell=1, cmd_len_log=3), row(img_shell=1, **{LONE_FEATURES[0]: 1})
    matrix = np.vstack([quiet, loud, quiet, row(own_file_write=2, **{LONE_FEATURES[1]: 1}), loud])
    scores = Scorer(model).score(matrix)
    assert scores.lone is not None and scores.lone.tolist() == route_of(model, matrix).tolist()
    every = list(range(len(matrix)))
    assert [s.lone for s in scores.rows(every)] == [scores.row(i).lone for i in every] == scores.lone.tolist()
    assert scores.lone.tolist() == [False, True, False, False, True]
    for i in every:  # the route known or worked out again: the same threshold
        known = scores.row(i).lone
        assert malicious_threshold(model, matrix[i], known) == malicious_threshold(model, matrix[i])
    classes = [3, 5, 3, 5, 3]
    expected = Scorer(model).explain(matrix, every, classes, FEATURE_NAMES)
    calls: list[int] = []
    real = routed.lone_rows
    monkeypatch.setattr(routed, "lone_rows", lambda m: calls.append(len(m)) or real(m))
    lone = [bool(v) for v in scores.lone]
    assert repr(Scorer(model).explain(matrix, every, classes, FEATURE_NAMES, lone=lone)) == repr(expected)
    assert calls == []  # not routed again, per class
    assert Scorer(model).explain(matrix, every, classes, FEATURE_NAMES) == expected
    assert calls  # no route given: worked out
    picks, picked_classes = [4, 1, 3], [3, 5, 5]  # out of order and partial: positions are not row numbers
    assert [s.lone for s in scores.rows(picks)] == [scores.lone[i] for i in picks] == [True, True, False]
    worked_out = Scorer(model).explain(matrix, picks, picked_classes, FEATURE_NAMES)
    given = Scorer(model).explain(matrix, picks, picked_classes, FEATURE_NAMES, lone=[True, True, False])
    assert repr(given) == repr(worked_out) and list(given) == picks


def test_scores_made_without_a_model_leave_the_route_to_be_worked_out() -> None:
    model = routed()
    matrix = mixed()
    scores = classify(model.predict_proba(matrix), model.thresholds)
    assert scores.lone is None and {s.lone for s in scores.rows(range(4))} == {None}
    assert model_classify(ProvisionalRules(), matrix, model.predict_proba(matrix)).lone is None


def test_a_route_handed_to_a_model_of_one_view_is_ignored() -> None:
    model = load_model()
    assert isinstance(model, RoutedModel)
    matrix = np.vstack([row(img_shell=1, cmd_len_log=3), row(own_file_write=2)])
    expected = Scorer(model.full).explain(matrix, [0, 1], [3, 5], FEATURE_NAMES)
    assert Scorer(model.full).explain(matrix, [0, 1], [3, 5], FEATURE_NAMES, lone=[False, False]) == expected
