"""Hand-written lone-command probes: valid 4688-style files, hunted one by one, counted like recordings."""

from __future__ import annotations

from pathlib import Path

from agents.sysmon import load_events
from pipeline.model.provisional import ProvisionalRules
from pipeline.scoring import BENIGN
from pipeline.training.evaluate import summarise
from pipeline.training.probes import ATTACK_PROBES, BENIGN_PROBES, SECOND_PROBES, probe_events, write_probes
from pipeline.training.recordings import probe_outcomes
from schemas.alerts import Tactic
from schemas.events import ProcessStart


def test_probes_name_real_tactics_and_every_windows_tactic_a_4688_collection_shows() -> None:
    tactics = {p.tactic for p in ATTACK_PROBES}
    assert tactics <= {t.value for t in Tactic}
    assert tactics >= {"Execution", "Persistence", "PrivilegeEscalation", "DefenseEvasion",
                       "CredentialAccess", "Discovery", "LateralMovement", "CommandAndControl", "Impact"}
    assert all(p.tactic == BENIGN for p in BENIGN_PROBES) and len(BENIGN_PROBES) >= 25
    assert len({p.name for p in ATTACK_PROBES + BENIGN_PROBES}) == len(ATTACK_PROBES + BENIGN_PROBES)


def test_a_probe_is_process_starts_under_a_parent_that_never_starts(tmp_path: Path) -> None:
    probe = next(p for p in ATTACK_PROBES if len(p.commands) == 2)
    events = probe_events(probe)
    assert [e.payload.command_line for e in events if isinstance(e.payload, ProcessStart)] == [
        line for _, line in probe.commands]
    started = {e.process_key for e in events}
    assert all(e.parent_process_key not in started for e in events)
    [(_, path)] = list(write_probes([probe], tmp_path))
    # hunt reads back exactly what was written
    assert [e.payload for e in load_events(path)] == [e.payload for e in events]


def test_probe_outcomes_count_attack_probes_as_recordings_and_benign_probes_as_trees() -> None:
    outcomes = list(probe_outcomes(ProvisionalRules()))  # the rule scorer: any model works here
    assert [o.name for o in outcomes] == [p.name for p in ATTACK_PROBES + BENIGN_PROBES]
    report = summarise(outcomes)
    assert report.attack_recordings == len(ATTACK_PROBES)
    assert report.benign_trees == len(BENIGN_PROBES)
    alerted_benign = sum(bool(o.alerts) for o in outcomes if o.tactic == BENIGN)
    assert report.false_alert_trees == alerted_benign
    assert all(hit for o in outcomes if o.tactic != BENIGN for _, _, hit in o.alerts)
    assert report.rate("detected") > 0  # the rules catch the LSASS dump and the shadow-copy deletion at least


def test_the_second_probe_set_is_attacks_of_its_own_reported_apart() -> None:
    """`SECOND_PROBES`: attack probes only, real tactics, names and command lines of their own (no line
    that the first set calls benign), hunted on their own when asked."""
    assert {p.tactic for p in SECOND_PROBES} <= {t.value for t in Tactic} and len(SECOND_PROBES) >= 40
    names = [p.name for p in (*ATTACK_PROBES, *BENIGN_PROBES, *SECOND_PROBES)]
    assert len(set(names)) == len(names)
    benign_lines = {line.lower() for p in BENIGN_PROBES for _, line in p.commands}
    assert not benign_lines & {line.lower() for p in SECOND_PROBES for _, line in p.commands}
    outcomes = list(probe_outcomes(ProvisionalRules(), probes=SECOND_PROBES))
    assert [o.name for o in outcomes] == [p.name for p in SECOND_PROBES]
    report = summarise(outcomes)
    assert report.attack_recordings == len(SECOND_PROBES) and report.benign_trees == 0
