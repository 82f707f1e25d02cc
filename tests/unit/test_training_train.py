"""Training is deterministic, thresholds meet the benign budget, the committed model fits the pipeline."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pipeline.features import FEATURE_NAMES, FEATURE_VERSION
from pipeline.scoring import CLASSES, MODEL_DIR, load_model
from pipeline.training.dataset import DataConfig, Dataset, build_dataset
from pipeline.training.simulate import SimConfig
from pipeline.training.train import (
    TrainConfig,
    allowed_false_alerts,
    average_boosters,
    balanced_weights,
    calibrate,
    calibrate_routed,
    class_index,
    false_alert_trees,
    fit,
    predict,
)

TINY = TrainConfig(rounds=6, early_stopping_rounds=3, max_depth=3)


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    sim = SimConfig(seed=3, attacks_per_technique=1, benign_trees=120, lone_view_attacks_per_technique=1,
                    lone_view_benign_trees=40)
    return build_dataset(DataConfig(otrf_root=None, captures=None, sim=sim))


def test_two_trainings_on_the_same_data_give_identical_predictions(tiny: Dataset) -> None:
    first, second = fit(tiny, TINY), fit(tiny, TINY)
    p1, p2 = predict(first.booster, tiny.matrix), predict(second.booster, tiny.matrix)
    assert np.array_equal(p1, p2)
    assert first.thresholds == second.thresholds
    assert p1.shape == (len(tiny.matrix), len(CLASSES))


def test_calibrated_thresholds_keep_benign_trees_within_the_budget() -> None:
    rng = np.random.default_rng(0)
    rows = 6000
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), size=rows).astype(np.float32)
    labels = np.array(["Benign"] * rows)
    trees = np.array([f"t{i // 3}" for i in range(rows)])
    config = TrainConfig(fp_per_1000=1.0)
    thresholds = calibrate(probabilities, labels, trees, config)
    tree_rows = [np.arange(i, i + 3) for i in range(0, rows, 3)]
    assert false_alert_trees(probabilities, tree_rows, thresholds) <= 2
    assert set(CLASSES[1:]) <= set(thresholds) and {"generic", "malicious"} <= set(thresholds)


def _benign_and_attack_trees(
    benign_top: list[float], benign_trees: int, attack_scores: list[float], column: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibration rows, one row per tree: `benign_trees` benign trees (the first ones scoring
    `benign_top` for `column`, the rest almost certainly benign) and one attack tree per score."""
    rows = benign_trees + len(attack_scores)
    probabilities = np.zeros((rows, len(CLASSES)), dtype=np.float32)
    probabilities[:, 0] = 0.99
    probabilities[:, 1] = 0.01
    for i, score in enumerate(benign_top + attack_scores):
        row = i if i < len(benign_top) else benign_trees + i - len(benign_top)
        probabilities[row] = 0.0
        probabilities[row, column], probabilities[row, 0] = score, 1.0 - score
    labels = np.array(["Benign"] * benign_trees + [CLASSES[column]] * len(attack_scores))
    return probabilities, labels, np.array([f"t{i}" for i in range(rows)])


def test_the_budget_is_spent_past_benign_trees_that_crowd_the_top() -> None:
    """Many calibration trees crowd a class's top: lowering past its highest benign tree alone catches no
    attack, past its two highest catches ten. With the budget for two, both are let through; with none,
    the threshold stays above them and the attacks are missed."""
    column = CLASSES.index("Execution")
    attacks = [0.70 + 0.02 * i for i in range(10)]
    probabilities, labels, trees = _benign_and_attack_trees([0.95, 0.949], 10_000, attacks, column)
    thresholds = calibrate(probabilities, labels, trees, TrainConfig())  # budget 5, one class bound
    assert thresholds["Execution"] <= 0.70
    benign_rows = [np.array([i]) for i in range(10_000)]
    assert false_alert_trees(probabilities, benign_rows, thresholds) == 2
    few, few_labels, few_trees = _benign_and_attack_trees([0.95, 0.949], 4_000, attacks, column)
    strict = calibrate(few, few_labels, few_trees, TrainConfig())  # budget 1, spent on the bound class
    assert strict["Execution"] > 0.95
    assert false_alert_trees(few, [np.array([i]) for i in range(4_000)], strict) == 0


def test_both_boosters_share_one_budget_spent_where_it_catches_most() -> None:
    """Two routes under one budget of benign trees. Full-booster rows: 10,000 benign trees, three scoring
    0.948-0.95 for Execution, and ten attack trees at 0.70-0.88 behind them. Lone-booster rows: 4,004
    benign trees, four of them scoring 0.90-0.93 for Discovery, and twenty attack trees at 0.60-0.79.
    Calibrated apart, the lone booster's 4,004 trees vouch for one false alert, spent on the class its top
    benign tree binds: none of its twenty attacks is caught. Together, the 14,004 trees vouch for eight,
    five once the three classes a benign tree binds are paid for (the full booster's Execution, the lone
    booster's Discovery and its `generic`, floored at 0.8): the lone route's four benign trees are let
    through for its twenty attacks (five a tree), the full route's three are not (ten attacks, three and
    a third a tree, and only one tree left), and no more benign trees alert in all than the budget."""
    execution, discovery = CLASSES.index("Execution"), CLASSES.index("Discovery")
    attacks = [0.70 + 0.02 * i for i in range(10)]
    full_p, full_labels, full_trees = _benign_and_attack_trees(
        [0.95, 0.949, 0.948], 10_000, attacks, execution
    )
    lone_attacks = [0.60 + 0.01 * i for i in range(20)]
    lone_p, lone_labels, lone_trees = _benign_and_attack_trees(
        [0.93, 0.92, 0.91, 0.90], 4_004, lone_attacks, discovery
    )
    lone_trees = np.array([f"lone-{t}" for t in lone_trees.tolist()])
    probabilities = np.concatenate([full_p, lone_p])
    labels, trees = np.concatenate([full_labels, lone_labels]), np.concatenate([full_trees, lone_trees])
    route = np.r_[np.zeros(len(full_p), dtype=bool), np.ones(len(lone_p), dtype=bool)]
    config = TrainConfig()
    apart = calibrate(
        lone_p, lone_labels, lone_trees, replace(config, min_threshold=config.lone_min_threshold)
    )
    assert apart["Discovery"] > 0.93  # its one false alert is the bound class's: no attack caught
    full, lone = calibrate_routed(probabilities, labels, trees, route, config)
    assert lone["Discovery"] <= 0.60 and full["Execution"] > 0.95
    benign = [np.array([i]) for i in range(10_000)]
    alerting = false_alert_trees(full_p, benign, full) + false_alert_trees(
        lone_p, [np.array([i]) for i in range(4_004)], lone
    )
    assert alerting == 4 <= allowed_false_alerts(14_004, 1.0, 0.9) - 3
    assert full["malicious"] == min(v for k, v in full.items() if k != "malicious")
    # one route only: the same thresholds as calibrating that route alone
    alone, unused = calibrate_routed(
        full_p, full_labels, full_trees, np.zeros(len(full_p), dtype=bool), config
    )
    assert alone == calibrate(full_p, full_labels, full_trees, config)
    assert unused["Discovery"] == config.lone_min_threshold and unused["generic"] == config.lone_min_generic




@pytest.fixture(scope="module")
def with_and_without_threshold_trees() -> tuple[Dataset, Dataset]:
    """The same small corpus without and with threshold-only trees (twice its benign workloads)."""
    sim = SimConfig(seed=3, attacks_per_technique=1, benign_trees=120, lone_view_attacks_per_technique=1,
                    lone_view_benign_trees=40, threshold_multiple=0)
    without = build_dataset(DataConfig(otrf_root=None, captures=None, sim=sim))
    wider = replace(sim, threshold_multiple=2)
    return without, build_dataset(DataConfig(otrf_root=None, captures=None, sim=wider))


def test_threshold_only_trees_set_thresholds_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch, with_and_without_threshold_trees: tuple[Dataset, Dataset]
) -> None:
    """The threshold-only benign trees (split `thresholds`) reach calibration but neither the booster's
    training nor its early stopping: the booster is the one fitted without them, bit for bit, and its
    early stopping watched the calibration rows alone. With `rows`, only those of them are calibrated on."""
    import xgboost

    import pipeline.training.train as train_module
    from pipeline.training.split import CALIB, THRESHOLDS

    without, with_them = with_and_without_threshold_trees
    extra = with_them.split_mask(THRESHOLDS)
    assert not without.split_mask(THRESHOLDS).any() and extra.sum() > 0
    assert set(with_them.labels[extra].tolist()) == {"Benign"}
    seen: list[set[str]] = []
    watched: list[int] = []

    def calibrate_and_record(probabilities: Any, labels: Any, trees: Any, *rest: Any) -> dict[str, float]:
        seen.append(set(trees.tolist()))
        return calibrate(probabilities, labels, trees, *rest)

    original_train = xgboost.train

    def train_and_record(params: Any, dtrain: Any, *args: Any, **kwargs: Any) -> Any:
        watched.append(kwargs["evals"][0][0].num_row())
        return original_train(params, dtrain, *args, **kwargs)

    monkeypatch.setattr(train_module, "calibrate", calibrate_and_record)
    monkeypatch.setattr(xgboost, "train", train_and_record)
    plain, wider = fit(without, TINY), fit(with_them, TINY)
    assert bytes(plain.booster.save_raw("ubj")) == bytes(wider.booster.save_raw("ubj"))
    assert watched == [int(without.split_mask(CALIB).sum()), int(with_them.split_mask(CALIB).sum())]
    bench = with_them.split_mask(CALIB) | extra
    assert seen[0] == set(without.trees[without.split_mask(CALIB)].tolist())
    assert seen[1] == set(with_them.trees[bench].tolist()) > seen[0]
    scores = predict(wider.booster, with_them.matrix[bench])
    assert wider.thresholds == calibrate(scores, with_them.labels[bench], with_them.trees[bench], TINY)
    half = np.zeros(len(with_them.labels), dtype=bool)
    half[::2] = True
    fit(with_them, TINY, half)
    assert seen[2] == set(with_them.trees[bench & half].tolist())


def test_threshold_only_trees_are_built_for_training_only_and_look_alikes_keep_their_origin(
    with_and_without_threshold_trees: tuple[Dataset, Dataset],
) -> None:
    """`ringfence evaluate` builds the dev split alone: no threshold-only tree. The threshold-only
    look-alikes are `LONE_VIEW` sources, like the lone-command simulations' (`full_view_rows` reads it)."""
    from pipeline.training.dataset import LONE_VIEW
    from pipeline.training.simulate import lone_view_workloads
    from pipeline.training.split import DEV, THRESHOLDS

    _, with_them = with_and_without_threshold_trees
    sim = SimConfig(seed=3, attacks_per_technique=1, benign_trees=120, lone_view_attacks_per_technique=1,
                    lone_view_benign_trees=40, threshold_multiple=2)
    dev = build_dataset(DataConfig(otrf_root=None, captures=None, sim=sim, only_split=DEV))
    assert {s.split for s in dev.sources} == {DEV}
    look_alikes = {name for name, _, _ in lone_view_workloads()}
    extra = [s for s in with_them.sources if s.split == THRESHOLDS]
    assert extra and {s.origin for s in extra} == {LONE_VIEW, "sim"}
    assert all((s.origin == LONE_VIEW) == (s.source.split(":")[3] in look_alikes) for s in extra)


def test_the_committed_model_loads_with_our_feature_list_and_classes() -> None:
    meta = json.loads((MODEL_DIR / "model.json").read_text(encoding="utf-8"))
    assert meta["feature_version"] == FEATURE_VERSION
    assert tuple(meta["feature_names"]) == FEATURE_NAMES
    assert tuple(meta["classes"]) == CLASSES
    model = load_model(MODEL_DIR)
    assert "provisional" not in model.version and model.version == meta["version"]
    assert (MODEL_DIR / "model.ubj").stat().st_size + (
        MODEL_DIR / "model.json"
    ).stat().st_size < 5 * 1024 * 1024
    out = model.predict_proba(np.zeros((2, len(FEATURE_NAMES)), dtype=np.float32))
    assert out.shape == (2, len(CLASSES)) and np.allclose(out.sum(axis=1), 1.0, atol=1e-4)


def test_the_false_alert_budget_is_what_the_calibration_trees_can_vouch_for() -> None:
    from pipeline.training.train import allowed_false_alerts

    # 6,000 trees at 1 per 1,000: two false alerts keep the 90 % upper bound (5.32) under six, three do not
    assert allowed_false_alerts(6000, 1.0, 0.9) == 2
    assert allowed_false_alerts(2000, 1.0, 0.9) == 0  # too few trees to vouch for any
    assert allowed_false_alerts(6000, 1.0, 0.99) < allowed_false_alerts(6000, 1.0, 0.5)
    budgets = [allowed_false_alerts(n, 1.0, 0.9) for n in range(0, 50_000, 2500)]
    assert budgets == sorted(budgets) and budgets[-1] < 50


def _margins(booster: Any, matrix: np.ndarray) -> np.ndarray:
    import xgboost

    dmatrix = xgboost.DMatrix(matrix, feature_names=list(FEATURE_NAMES))
    return np.asarray(booster.predict(dmatrix, output_margin=True))


def test_an_ensemble_is_one_booster_whose_margins_are_its_members_mean(tiny: Dataset) -> None:
    import xgboost

    members = []
    dtrain = xgboost.DMatrix(tiny.matrix, label=class_index(tiny.labels), feature_names=list(FEATURE_NAMES))
    for seed in (7, 8, 9):
        params = {**TINY.params(), "seed": seed, "subsample": 0.6, "colsample_bytree": 0.5}
        members.append(xgboost.train(params, dtrain, num_boost_round=3 + seed % 3))
    averaged = average_boosters(members)
    expected = np.mean([_margins(m, tiny.matrix) for m in members], axis=0)
    assert not np.allclose(_margins(members[0], tiny.matrix), _margins(members[1], tiny.matrix))
    assert np.allclose(_margins(averaged, tiny.matrix), expected, atol=1e-5)
    assert averaged.num_boosted_rounds() == sum(m.num_boosted_rounds() for m in members)
    assert average_boosters(members[:1]) is members[0]


def test_boosters_of_other_models_are_not_averaged_and_none_is_refused(tiny: Dataset) -> None:
    import xgboost

    labels = class_index(tiny.labels)
    first = xgboost.train(TINY.params(), xgboost.DMatrix(tiny.matrix, label=labels), num_boost_round=2)
    fewer = xgboost.DMatrix(tiny.matrix[:, :5], label=labels)  # other features: another model's trees
    other = xgboost.train(TINY.params(), fewer, num_boost_round=2)
    with pytest.raises(ValueError, match="must share their classes, features and intercepts"):
        average_boosters([first, other])
    with pytest.raises(ValueError, match="no booster to average"):
        average_boosters([])


def test_one_booster_per_view_is_the_plain_early_stopped_fit(tiny: Dataset) -> None:
    """`ensemble=1` (the committed recipe) trains exactly what one `xgboost.train` call did before."""
    import xgboost

    from pipeline.training.split import CALIB, TRAIN

    train, calib = tiny.split_mask(TRAIN), tiny.split_mask(CALIB)
    y = class_index(tiny.labels)
    cap, share = TINY.max_class_weight, TINY.benign_share
    weights, _ = balanced_weights(y[train], tiny.weights[train], cap, share)
    calib_weights, _ = balanced_weights(y[calib], tiny.weights[calib], cap, share)
    names = list(FEATURE_NAMES)
    plain = xgboost.train(
        TINY.params(),
        xgboost.DMatrix(tiny.matrix[train], label=y[train], weight=weights, feature_names=names, nthread=2),
        num_boost_round=TINY.rounds,
        evals=[(xgboost.DMatrix(tiny.matrix[calib], label=y[calib], weight=calib_weights, feature_names=names,
                                nthread=2), "calib")],
        early_stopping_rounds=TINY.early_stopping_rounds,
        verbose_eval=False,
    )
    plain = plain[: plain.best_iteration + 1]
    assert bytes(fit(tiny, TINY).booster.save_raw("ubj")) == bytes(plain.save_raw("ubj"))


def test_an_ensemble_fit_is_deterministic_and_calibrated_on_the_average(tiny: Dataset) -> None:
    from pipeline.training.split import CALIB, THRESHOLDS

    config = replace(TINY, ensemble=2)
    first, second = fit(tiny, config), fit(tiny, config)
    single = fit(tiny, TINY)
    assert np.array_equal(predict(first.booster, tiny.matrix), predict(second.booster, tiny.matrix))
    assert first.booster.num_boosted_rounds() > single.booster.num_boosted_rounds()
    assert not np.array_equal(predict(first.booster, tiny.matrix), predict(single.booster, tiny.matrix))
    bench = tiny.split_mask(CALIB) | tiny.split_mask(THRESHOLDS)
    averaged = predict(first.booster, tiny.matrix[bench])
    assert first.thresholds == calibrate(averaged, tiny.labels[bench], tiny.trees[bench], config)


def test_zero_boosters_per_view_is_refused() -> None:
    with pytest.raises(ValueError, match="ensemble must be at least 1"):
        TrainConfig(ensemble=0)


def _spend(benign: list[list[float]], attack: list[tuple[int, float]], allowed: int) -> np.ndarray:
    """`_spend_budget` over two classes (columns 0 and 1 of three; the last is `generic`), floors 0.6:
    `benign` trees' scores per class, `attack` trees as (class column, score)."""
    from pipeline.training.train import _spend_budget

    width = 3
    scores = np.zeros((len(benign), width), dtype=np.float32)
    scores[:, :2] = benign
    attacks = np.zeros((len(attack), width), dtype=np.float32)
    for row, (column, score) in enumerate(attack):
        attacks[row, column] = score
    truth = np.array([column for column, _ in attack], dtype=np.int64)
    return _spend_budget(scores, attacks, truth, allowed, np.array([0.6, 0.6, 0.98]))


def test_a_spend_step_stays_within_the_budget_left_and_above_the_floor() -> None:
    """Lowering class 0 past its two benign trees would catch five attacks: with one tree of budget it
    is not done at all; with two it is, down to the floor and no further (the attack under 0.6 stays
    missed), and the next benign tree under the threshold stays under it."""
    benign = [[0.95, 0.0], [0.94, 0.0], [0.5, 0.0]]
    attack = [(0, 0.7), (0, 0.75), (0, 0.8), (0, 0.85), (0, 0.9), (0, 0.55)]
    one, two = _spend(benign, attack, 1), _spend(benign, attack, 2)
    assert one[0] > 0.95
    assert two[0] == 0.6 and two[0] > 0.5
    three = _spend([[0.95, 0.0], [0.94, 0.0], [0.65, 0.0]], attack, 2)
    assert 0.65 < three[0] <= 0.7  # just above the benign tree still under it


def test_a_tree_another_class_lets_through_costs_nothing_again() -> None:
    """Tree 0 tops both classes. Once class 0 lets it through, class 1 pays only for tree 1: with a
    budget of two, both classes reach their attacks."""
    benign = [[0.95, 0.95], [0.0, 0.94], [0.0, 0.0]]
    attack = [(0, 0.8), (0, 0.85), (1, 0.7), (1, 0.75)]
    thresholds = _spend(benign, attack, 2)
    assert thresholds[0] <= 0.8 and thresholds[1] <= 0.7


def test_the_budget_goes_first_where_a_benign_tree_buys_the_most_attacks() -> None:
    """Class 0 catches three attacks for one benign tree; class 1 six for three. With three trees of
    budget, class 0 is lowered (three per tree) and the two trees left cannot buy class 1's step."""
    benign = [[0.95, 0.0], [0.0, 0.96], [0.0, 0.955], [0.0, 0.95], [0.0, 0.0]]
    attack = [(0, 0.7), (0, 0.75), (0, 0.8)] + [(1, 0.7 + 0.02 * i) for i in range(6)]
    thresholds = _spend(benign, attack, 3)
    assert thresholds[0] <= 0.7 and thresholds[1] > 0.96


def test_a_spend_lets_no_more_benign_trees_through_than_its_budget() -> None:
    """Random small calibrations: whatever the steps, the benign trees at or above a threshold it sets
    (in any class) never outnumber the budget, and no threshold falls under its floor."""
    from pipeline.training.train import _spend_budget

    rng = np.random.default_rng(5)
    floors = np.array([0.6, 0.6, 0.6, 0.98])
    for _ in range(300):
        benign = rng.choice([0.0, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95], size=(12, 4)).astype(np.float32)
        attack = rng.uniform(0.5, 1.0, size=(15, 4)).astype(np.float32)
        truth = rng.integers(0, 3, size=15)
        allowed = int(rng.integers(0, 5))
        thresholds = _spend_budget(benign, attack, truth, allowed, floors)
        through = (benign.astype(np.float64) >= thresholds).any(axis=1)
        assert int(through.sum()) <= allowed
        assert (thresholds >= floors).all()


def test_the_card_counts_threshold_only_trees_apart_from_the_training_trees(
    with_and_without_threshold_trees: tuple[Dataset, Dataset],
) -> None:
    """MODEL_CARD.md's data line counts the trees trained on; the threshold-only trees are stated apart,
    as what the thresholds alone saw."""
    from pipeline.training.card import Results, render_card, tree_counts
    from pipeline.training.split import THRESHOLDS, TRAIN

    _, with_them = with_and_without_threshold_trees
    counts = tree_counts(with_them)
    trained = sum(sum(c.values()) for group, c in counts.items() if group.endswith(f"/{TRAIN}"))
    extra = sum(sum(c.values()) for group, c in counts.items() if group.endswith(f"/{THRESHOLDS}"))
    assert trained and extra
    results = Results("v", 1, 0, {"malicious": 0.6}, {}, {}, 1.0)
    card = render_card(results, with_them, TINY, SimConfig(threshold_multiple=2))
    assert f"## Data\n{trained} training trees" in card
    assert f"({extra} simulated benign trees in all" in card
    assert f"**threshold-only** ({extra} simulated benign trees beyond the corpus)" in card
