"""Lone commands, part 2 (`win_lone2`) and their benign look-alikes (`win_benign_lone2`): every generator
and workload gives a small tree (one to six process starts, conhost aside), labelled with its tactic
(attacks) or not at all (benign), whose command lines change with the seed."""

from __future__ import annotations

import pytest

from pipeline.training.probes import ATTACK_PROBES, BENIGN_PROBES, SECOND_PROBES
from pipeline.training.sim import win_benign, win_benign_lone, win_benign_lone2, win_lone, win_lone2
from pipeline.training.sim.catalog import Technique
from pipeline.training.simulate import SimConfig, simulate_attack, simulate_benign, techniques
from schemas.events import BehaviorEvent, Platform, ProcessStart

WHOLE = SimConfig(seed=11, fragment_share=0.0, noise_max=0, process_only_share=0.0, light_share=0.0)
SEEDS = range(6)
TACTICS = frozenset({"Persistence", "PrivilegeEscalation", "DefenseEvasion", "CredentialAccess", "Discovery",
                     "LateralMovement", "CommandAndControl", "Execution"})
LONE2 = tuple(win_lone2.REG.items)
WORKLOADS = tuple(win_benign_lone2.LONE2_WORKLOADS)
PROBE_LINES = frozenset(
    line.lower() for p in (*ATTACK_PROBES, *BENIGN_PROBES, *SECOND_PROBES) for _, line in p.commands
)


def _start_events(events: tuple[BehaviorEvent, ...]) -> list[BehaviorEvent]:
    """Process starts, conhost aside (Session.run adds it at random; it is not a command)."""
    return [e for e in events if isinstance(e.payload, ProcessStart)
            and not e.payload.image.lower().endswith("conhost.exe")]


def _starts(events: tuple[BehaviorEvent, ...]) -> list[ProcessStart]:
    return [e.payload for e in _start_events(events) if isinstance(e.payload, ProcessStart)]


def _lines(events: tuple[BehaviorEvent, ...]) -> tuple[str, ...]:
    return tuple(p.command_line for p in _starts(events))


def _attack_lines(tech: Technique, index: int) -> tuple[str, ...]:
    return _lines(simulate_attack(tech, index, WHOLE).events)


def _benign_lines(workload: tuple[str, float, win_benign_lone2.Workload], index: int) -> tuple[str, ...]:
    name, _, fn = workload
    return _lines(simulate_benign(Platform.WINDOWS, name, fn, index, WHOLE).events)


def test_the_registry_covers_every_family_with_documented_ids_and_distinct_tree_ids() -> None:
    assert all(t.platform is Platform.WINDOWS and t.entry is win_lone.lone_entry for t in LONE2)
    assert {t.tactic for t in LONE2} == TACTICS
    assert {t.tactic for t in win_lone.REG.items} <= TACTICS  # the same Tactic spellings as win_lone
    assert all(t.attack_id.startswith("T1") and (t.generate.__doc__ or "").strip() for t in LONE2)
    names = [t.generate.__name__ for t in (*techniques(), *LONE2)]
    assert len(names) == len(set(names))  # tree ids (technique id + generator name) never collide
    assert any(t.weight == 2 for t in LONE2)


def test_workload_names_are_their_own_and_documented() -> None:
    names = [name for name, _, _ in WORKLOADS]
    others = {name for name, _, _ in (*win_benign.WORKLOADS, *win_benign_lone.LONE_WORKLOADS)}
    assert len(names) == len(set(names)) and others.isdisjoint(names)
    assert all(weight > 0 and (fn.__doc__ or "").strip() for _, weight, fn in WORKLOADS)


@pytest.mark.parametrize("tech", LONE2, ids=lambda t: t.generate.__name__)
def test_a_lone_attack_is_a_few_starts_under_an_unseen_parent_with_its_tactic(tech: Technique) -> None:
    seen = set()
    for index in SEEDS:
        tree = simulate_attack(tech, index, WHOLE)
        starts = _start_events(tree.events)
        assert 1 <= len(starts) <= win_lone2.MAX_STARTS, _lines(tree.events)
        assert set(tree.node_labels.values()) == {tech.tactic}
        assert all(e.process_key in tree.node_labels for e in starts)
        started = {e.process_key for e in starts}
        roots = [e for e in starts if e.parent_process_key not in started]
        assert roots and all(e.parent_process_key is not None for e in roots)  # parent predates the log
        seen.add(_lines(tree.events))
    assert len(seen) >= len(SEEDS) - 1  # randomised: different seeds, different command lines


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w[0])
def test_a_benign_look_alike_is_a_few_starts_with_no_attack_label(
        workload: tuple[str, float, win_benign_lone2.Workload]) -> None:
    name, _, fn = workload
    seen = set()
    for index in SEEDS:
        tree = simulate_benign(Platform.WINDOWS, name, fn, index, WHOLE)
        assert 1 <= len(_starts(tree.events)) <= win_lone2.MAX_STARTS, _lines(tree.events)
        assert tree.node_labels == {}
        seen.add(_lines(tree.events))
    assert len(seen) >= 2


def test_benign_look_alikes_use_the_attacks_tools() -> None:
    def tools(starts: list[ProcessStart]) -> set[str]:
        return {p.image.rsplit("\\", 1)[-1].lower() for p in starts}
    attack = tools([p for t in LONE2 for i in range(4) for p in _starts(simulate_attack(t, i, WHOLE).events)])
    benign = tools([p for name, _, fn in WORKLOADS for i in range(6)
                    for p in _starts(simulate_benign(Platform.WINDOWS, name, fn, i, WHOLE).events)])
    shared = {"sc.exe", "reg.exe", "schtasks.exe", "netsh.exe", "auditpol.exe", "wevtutil.exe", "setspn.exe",
              "net.exe", "fsutil.exe", "bcdedit.exe", "dnscmd.exe", "tscon.exe", "cmdkey.exe", "findstr.exe",
              "powershell.exe", "rundll32.exe", "regsvr32.exe", "pktmon.exe", "wmic.exe", "ssh.exe"}
    assert shared <= attack & benign, shared - (attack & benign)


def test_generated_lines_rarely_spell_a_probe_exactly() -> None:
    """The probes are the hand-written measurement set and were not copied. Benign workloads never
    produce a probe's line; an attack generator may hit a probe's canonical spelling (e.g. `net share`,
    `wevtutil cl Security`) only by drawing every default at once: argument-free discovery commands
    sometimes, anything else in under 3% of its command lines (case ignored)."""
    for workload in WORKLOADS:
        for index in range(40):
            benign = {line.lower() for line in _benign_lines(workload, index)}
            assert not benign & PROBE_LINES, (workload[0], benign & PROBE_LINES)
    for tech in LONE2:
        lines = [line.lower() for index in range(60) for line in _attack_lines(tech, index)]
        copied = [line for line in lines if line in PROBE_LINES]
        assert tech.tactic == "Discovery" or len(copied) < 0.03 * len(lines), (tech.generate.__name__, copied)
