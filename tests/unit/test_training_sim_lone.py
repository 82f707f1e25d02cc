"""Small simulated trees (`win_lone`, `win_benign_lone`): lone commands under an unseen parent, their
benign look-alikes, and a corpus in which adding them changed no earlier tree."""

from __future__ import annotations

import itertools
import re

from pipeline.indicators import indicator_mask, indicator_names
from pipeline.training.card import render_data
from pipeline.training.dataset import _assemble
from pipeline.training.sim import win_benign_lone, win_lone
from pipeline.training.simulate import (
    SimConfig,
    attack_tree_id,
    benign_workloads,
    simulate_attack,
    simulate_benign,
    simulate_corpus,
    techniques,
)
from schemas.events import BehaviorEvent, Platform, ProcessStart

WHOLE = SimConfig(seed=11, fragment_share=0.0, noise_max=0, process_only_share=0.0, light_share=0.0)
LONE = tuple(t for t in techniques() if t.generate.__module__ == win_lone.__name__)


def _starts(events: tuple[BehaviorEvent, ...]) -> list[BehaviorEvent]:
    return [e for e in events if isinstance(e.payload, ProcessStart)]


def _lines(events: tuple[BehaviorEvent, ...]) -> list[str]:
    return [e.payload.command_line for e in _starts(events) if isinstance(e.payload, ProcessStart)]


def _indicator(line: str, name: str) -> bool:
    return name in indicator_names(indicator_mask(line))


def test_lone_techniques_cover_the_small_tree_tactics_and_come_after_every_other_generator() -> None:
    assert {(t.attack_id, t.tactic) for t in LONE} == {
        ("T1136.001", "Persistence"), ("T1098", "Persistence"), ("T1047", "Execution"),
        ("T1033", "Discovery")}
    assert len({t.generate.__name__ for t in LONE}) == len(LONE)  # one name per technique: distinct tree ids
    assert all(t.platform is Platform.WINDOWS and t.entry is not None for t in LONE)
    order = [t.generate.__module__ for t in techniques()]
    assert order[-len(LONE):] == [win_lone.__name__] * len(LONE)  # earlier trees keep their indices


def test_a_lone_attack_is_at_most_a_few_commands_whose_parent_never_starts_in_the_recording() -> None:
    for tech in LONE:
        for index in range(25):
            tree = simulate_attack(tech, index, WHOLE)
            starts = _starts(tree.events)
            started = {e.process_key for e in starts}
            attack = [e for e in starts if e.process_key in tree.node_labels]
            assert 1 <= len(attack) <= 12, (tech.attack_id, _lines(tree.events))
            assert set(tree.node_labels.values()) == {tech.tactic}
            roots = [e for e in attack if e.parent_process_key not in started]
            assert roots and all(e.parent_process_key is not None for e in roots)


def test_lone_account_creation_adds_an_account_in_every_tree_with_varied_spelling() -> None:
    tech = next(t for t in LONE if t.generate.__name__ == "lone_account_create")
    lines = [line for i in range(40) for line in _lines(simulate_attack(tech, i, WHOLE).events)]
    assert sum(_indicator(line, "account_create") for line in lines) >= 40
    spellings = {line.split()[0] for line in lines if re.search(r"user\s.*/add", line, re.IGNORECASE)}
    assert len(spellings) >= 3  # net, NET, net.exe, net1, full path, cmd.exe /c ...


def test_lone_wmi_execution_runs_under_the_wmi_host_or_through_wmic_process_call_create() -> None:
    tech = next(t for t in LONE if t.generate.__name__ == "lone_wmi_exec")
    for index in range(30):
        tree = simulate_attack(tech, index, WHOLE)
        attack = [e for e in _starts(tree.events) if e.process_key in tree.node_labels]
        by_wmi = any(isinstance(e.payload, ProcessStart) and (e.payload.parent_image or "").lower().endswith(
            "wmiprvse.exe") for e in attack)
        typed = any(_indicator(line, "wmi_execution") for line in _lines(tree.events))
        assert by_wmi or typed, _lines(tree.events)


def test_benign_look_alikes_use_the_attacks_tools_label_nothing_and_stay_out_of_the_noise_pool() -> None:
    benign_tools: set[str] = set()
    for (name, _, fn), index in itertools.product(win_benign_lone.LONE_WORKLOADS, range(20)):
        tree = simulate_benign(Platform.WINDOWS, name, fn, index, WHOLE)
        assert tree.node_labels == {}
        benign_tools |= {(e.image or "").rsplit("\\", 1)[-1].lower() for e in _starts(tree.events)}
    attack_tools = {(e.image or "").rsplit("\\", 1)[-1].lower() for t in LONE for i in range(20)
                    for e in _starts(simulate_attack(t, i, WHOLE).events)}
    assert {"net.exe", "whoami.exe", "wmic.exe", "netsh.exe", "ipconfig.exe"} <= benign_tools & attack_tools
    noise_names = {name for name, _, _ in benign_workloads(Platform.WINDOWS)}
    assert noise_names.isdisjoint(name for name, _, _ in win_benign_lone.LONE_WORKLOADS)


def test_the_corpus_ends_with_the_small_benign_trees_after_all_attacks_and_workloads() -> None:
    config = SimConfig(seed=11, attacks_per_technique=1, benign_trees=40, lone_benign_trees=30)
    ids = [tree.tree_id for tree in simulate_corpus(config)]
    lone_names = tuple(f":benign:{name}:" for name, _, _ in win_benign_lone.LONE_WORKLOADS)
    lone = [i for i, tree_id in enumerate(ids) if any(n in tree_id for n in lone_names)]
    assert len(lone) >= 25 and lone == list(range(len(ids) - len(lone), len(ids)))  # rounded per workload
    assert attack_tree_id(LONE[-1], 0) in ids[: len(ids) - len(lone)]



def test_data_md_lists_the_small_benign_workloads_and_the_lone_generators_weights() -> None:
    text = render_data(_assemble([], []), SimConfig())
    small = next(line for line in text.splitlines() if line.startswith("- Windows, small trees"))
    assert all(name in small for name, _, _ in win_benign_lone.LONE_WORKLOADS)
    assert "lone_recon x3" in text and "lone_account_create x2" in text
