"""`ringfence train`'s options reach the simulation they name, and bad counts are refused up front."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.cli import main
from pipeline.training import run
from pipeline.training.simulate import SimConfig


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every RunConfig `ringfence train` would train with; the training itself stops with a ValueError,
    which the command reports as its own one-line error."""
    seen: list[Any] = []

    def fake_run_train(config: Any) -> Any:
        seen.append(config)
        raise ValueError("stopped by the test before training")

    monkeypatch.setattr(run, "run_train", fake_run_train)
    return seen


def test_each_count_option_sets_its_own_simulation(
    captured: list[Any], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = ["--attacks-per-technique", "3", "--benign-trees", "40"]
    counts += ["--lone-attacks-per-technique", "5", "--lone-benign-trees", "0", "--threshold-multiple", "0"]
    argv = ["train", "--out", str(tmp_path), "--no-recordings", *counts]
    assert main(argv) != 0
    assert "stopped by the test before training" in capsys.readouterr().err
    sim = captured[0].data.sim
    assert (sim.attacks_per_technique, sim.benign_trees) == (3, 40)
    assert (sim.lone_view_attacks_per_technique, sim.lone_view_benign_trees) == (5, 0)
    assert sim.threshold_multiple == 0


def test_without_count_options_the_simulation_keeps_its_defaults(captured: list[Any], tmp_path: Any) -> None:
    assert main(["train", "--out", str(tmp_path), "--no-recordings", "--seed", "9"]) != 0
    assert captured[0].data.sim == SimConfig(seed=9)


COUNT_OPTIONS = ["--attacks-per-technique", "--benign-trees", "--lone-attacks-per-technique",
                 "--lone-benign-trees", "--threshold-multiple"]  # fmt: skip


@pytest.mark.parametrize("option", COUNT_OPTIONS)
def test_a_negative_count_is_refused_before_any_work(
    captured: list[Any], tmp_path: Any, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    assert main(["train", "--out", str(tmp_path), option, "-1"]) != 0
    assert f"{option} must be 0 or more, not -1" in capsys.readouterr().err
    assert captured == []


def test_the_help_states_the_simulations_real_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = SimConfig()
    for option, value in (
        ("--attacks-per-technique", defaults.attacks_per_technique),
        ("--benign-trees", defaults.benign_trees),
        ("--lone-attacks-per-technique", defaults.lone_view_attacks_per_technique),
        ("--lone-benign-trees", defaults.lone_view_benign_trees),
        ("--threshold-multiple", defaults.threshold_multiple),
    ):
        entry = f"{option} {option[2:].upper().replace('-', '_')}"
        described = text.rsplit(entry, 1)[1]  # the option's own entry, not the usage line
        assert f"default {value}" in described.split(" --", 1)[0], option


def test_the_ensemble_option_reaches_training_and_zero_is_refused(
    captured: list[Any], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--out", str(tmp_path), "--no-recordings"]) != 0
    assert captured[-1].train.ensemble == 1  # the committed recipe: one booster per view
    assert main(["train", "--out", str(tmp_path), "--no-recordings", "--ensemble", "3"]) != 0
    assert captured[-1].train.ensemble == 3
    count = len(captured)
    assert main(["train", "--out", str(tmp_path), "--ensemble", "0"]) != 0
    assert "--ensemble must be at least 1, not 0" in capsys.readouterr().err
    assert len(captured) == count


def test_the_full_from_option_reaches_training_and_is_refused_with_one_view(
    captured: list[Any], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--out", str(tmp_path), "--no-recordings"]) != 0
    assert captured[-1].full_from is None  # the full booster is fitted unless asked
    assert main(["train", "--out", str(tmp_path), "--no-recordings", "--full-from", str(tmp_path / "m")]) != 0
    assert captured[-1].full_from == tmp_path / "m"


def test_full_from_a_folder_without_a_model_fails_before_any_dataset_is_built(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_dataset(config: Any) -> Any:
        raise AssertionError("the dataset was built before the kept booster was read")

    monkeypatch.setattr(run, "dataset", no_dataset)
    args = ["train", "--out", str(tmp_path), "--no-recordings", "--full-from", str(tmp_path / "absent")]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "--full-from" in err and "no model to keep" in err
    assert main([*args[:-2], "--one-view", "--full-from", str(tmp_path)]) != 0
    assert "not with --one-view" in capsys.readouterr().err
