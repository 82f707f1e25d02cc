"""Simulated trees: every tactic on both platforms, reproducible, labels on real processes only."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.scoring import TACTICS
from pipeline.training.simulate import (
    SimConfig,
    benign_workloads,
    lone_view_corpus,
    lone_view_workloads,
    simulate_attack,
    simulate_benign,
    simulate_corpus,
    techniques,
    threshold_corpus,
)
from schemas.events import Platform, ProcessStart

CONFIG = SimConfig(seed=11)


def test_every_tactic_has_generators_on_windows_and_linux_with_attack_ids() -> None:
    have = Counter((t.tactic, t.platform) for t in techniques())
    missing = [(tactic, p) for tactic in TACTICS for p in Platform if have[(tactic, p)] == 0]
    assert missing == []
    assert all(t.attack_id.startswith("T1") for t in techniques())
    assert have[("CommandAndControl", Platform.WINDOWS)] >= 4 and have[("Impact", Platform.LINUX)] >= 4


def test_a_tree_is_reproducible_and_the_next_index_differs() -> None:
    tech = next(t for t in techniques() if t.generate.__name__ == "lsass_dump")
    first, again, other = (simulate_attack(tech, i, CONFIG) for i in (3, 3, 4))
    assert [e.model_dump() for e in first.events] == [e.model_dump() for e in again.events]
    assert first.node_labels == again.node_labels
    lines = {e.payload.command_line for e in first.events if isinstance(e.payload, ProcessStart)}
    other_lines = {e.payload.command_line for e in other.events if isinstance(e.payload, ProcessStart)}
    assert lines != other_lines


def test_attack_labels_name_processes_of_the_tree_and_benign_trees_have_none() -> None:
    for tech in techniques()[::7]:
        tree = simulate_attack(tech, 0, CONFIG)
        keys = {e.process_key for e in tree.events} | {e.parent_process_key for e in tree.events}
        assert tree.node_labels, tech.attack_id
        assert set(tree.node_labels.values()) <= {tech.tactic, "Discovery"}
        assert any(k in keys for k in tree.node_labels), tech.attack_id
        assert [e.seq for e in tree.events] == list(range(len(tree.events)))
    for platform in Platform:
        for name, _, fn in benign_workloads(platform):
            assert simulate_benign(platform, name, fn, 0, CONFIG).node_labels == {}


def test_names_paths_and_devices_vary_across_trees_of_one_technique() -> None:
    tech = next(t for t in techniques() if t.generate.__name__ == "ransomware_encrypt")
    trees = [simulate_attack(tech, i, CONFIG) for i in range(12)]
    assert len({t.events[0].device_id for t in trees}) == 12
    images = {e.payload.image for t in trees for e in t.events if isinstance(e.payload, ProcessStart)}
    assert len(images) >= 12


def test_script_ransomware_is_one_launcher_with_per_file_encrypt_children_under_varied_names() -> None:
    tech = next(t for t in techniques() if t.generate.__name__ == "linux_script_ransomware")
    assert (tech.tactic, tech.platform, tech.attack_id) == ("Impact", Platform.LINUX, "T1486")
    launchers, interesting = set(), 0
    for i in range(30):
        tree = simulate_attack(tech, i, SimConfig(seed=11, fragment_share=0.0, noise_max=0))
        by_key = {e.process_key: e.payload for e in tree.events if isinstance(e.payload, ProcessStart)}
        crypto = ("openssl", "gpg", "ccrypt", "7z", "zip", "age")
        parents = Counter(e.parent_process_key for e in tree.events if isinstance(e.payload, ProcessStart)
                          and e.payload.image.rsplit("/", 1)[-1] in crypto)
        if not parents:
            continue
        launcher, encryptions = parents.most_common(1)[0]
        assert encryptions >= 3 and tree.node_labels[str(launcher)] == "Impact"
        launchers.add(by_key[str(launcher)].image if launcher in by_key else "?")
        interesting += 1
    assert interesting >= 20
    assert len(launchers) >= 15  # dropped binaries and renamed interpreter copies, not one name
    assert any(not image.startswith(("/bin/", "/usr/bin/")) for image in launchers)


def test_benign_linux_workloads_include_encrypted_backups_and_shredding() -> None:
    names = {name for name, _, _ in benign_workloads(Platform.LINUX)}
    assert {"encrypted_backup", "secure_cleanup"} <= names
    backup = next(fn for name, _, fn in benign_workloads(Platform.LINUX) if name == "encrypted_backup")
    lines = [e.payload.command_line for i in range(10)
             for e in simulate_benign(Platform.LINUX, "encrypted_backup", backup, i, CONFIG).events
             if isinstance(e.payload, ProcessStart)]
    assert any(line.startswith(("gpg", "openssl", "7z")) for line in lines)


def test_threshold_only_trees_are_benign_new_trees_of_every_benign_workload() -> None:
    """`threshold_corpus`: `threshold_multiple` times the corpus's benign trees, from the same workloads,
    none of them a tree of the split corpus (so none is a dev tree), the look-alikes flagged; none at 0."""
    small = SimConfig(
        seed=11,
        attacks_per_technique=1,
        benign_trees=60,
        lone_benign_trees=20,
        lone_view_attacks_per_technique=1,
        lone_view_benign_trees=30,
        threshold_multiple=2,
    )
    corpus = [t for t in (*simulate_corpus(small), *lone_view_corpus(small)) if t.label == "Benign"]
    extra = list(threshold_corpus(small))
    assert abs(len(extra) - 2 * len(corpus)) <= len(corpus) // 5  # rounded per workload
    assert not {t.tree_id for t in corpus} & {t.tree_id for t, _ in extra}
    assert {t.label for t, _ in extra} == {"Benign"} and all(not t.node_labels for t, _ in extra)
    look_alikes = {name for name, _, _ in lone_view_workloads()}
    assert all(flag == (t.tree_id.split(":")[3] in look_alikes) for t, flag in extra)
    assert any(flag for _, flag in extra) and not all(flag for _, flag in extra)
    again = [t.tree_id for t, _ in threshold_corpus(small)]
    assert again == [t.tree_id for t, _ in extra]
    assert list(threshold_corpus(SimConfig(threshold_multiple=0))) == []


def test_threshold_only_trees_refuse_a_corpus_whose_numbers_would_reach_theirs() -> None:
    """Numbered from `THRESHOLD_FIRST_INDEX`: a corpus with that many trees of one kind would share ids,
    and so trees, with them; refused rather than calibrating on training and dev trees."""
    from pipeline.training.simulate import THRESHOLD_FIRST_INDEX

    too_many = SimConfig(lone_benign_trees=THRESHOLD_FIRST_INDEX)
    with pytest.raises(ValueError, match="would repeat the corpus"):
        next(threshold_corpus(too_many))
