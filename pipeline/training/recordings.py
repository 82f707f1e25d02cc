"""Recording-level evaluation: hunt whole files with the detector and compare with their labels.

Held-out lab recordings are labelled by `pipeline.training.labels` (so an alert can be checked
against the attack tree); the `.evtx` samples carry only their tactic (from the `TA00xx` prefix
of the file name), so for them only detection and tactic are measured, not false alerts.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agents.sysmon import load_events
from pipeline.hunt import FileSummary, hunt_file
from pipeline.scoring import BENIGN, Model
from pipeline.training.evaluate import RecordingOutcome
from pipeline.training.labels import extract_clues, label_events, load_catalog, raw_hosts, raw_pid_keys
from pipeline.training.split import DEV, recording_splits

if TYPE_CHECKING:
    from pipeline.training.probes import Probe

log = logging.getLogger(__name__)
TACTIC_IDS = {
    "TA0001": "InitialAccess",
    "TA0002": "Execution",
    "TA0003": "Persistence",
    "TA0004": "PrivilegeEscalation",
    "TA0005": "DefenseEvasion",
    "TA0006": "CredentialAccess",
    "TA0007": "Discovery",
    "TA0008": "LateralMovement",
    "TA0009": "Collection",
    "TA0011": "CommandAndControl",
    "TA0010": "Exfiltration",
    "TA0040": "Impact",
}
_TA = re.compile(r"\b(TA00\d\d)\b|^(TA00\d\d)")


def otrf_dev_outcomes(root: Path, model: Model, split: str = DEV) -> Iterator[RecordingOutcome]:
    """Hunt every labelled recording of `split` and score its alerts against its attack tree."""
    catalog = load_catalog(root)
    hosts: dict[str, set[str]] = {}
    for rec in catalog:
        with gzip.open(rec.path, "rb") as handle:
            hosts[rec.rel] = raw_hosts(handle)
    splits = recording_splits(hosts)
    for rec in catalog:
        if splits[rec.rel] != split:
            continue
        events = list(load_events(rec.path))
        clues = extract_clues(rec.adversary_view)
        with gzip.open(rec.path, "rb") as handle:
            labelled = label_events(events, rec, raw_pid_keys(handle, clues.pids))
        if not labelled.found:
            continue
        yield _outcome(
            rec.path,
            rec.rel,
            rec.tactic,
            model,
            set(labelled.node_labels),
            any(e.payload.kind == "process_start" for e in events),
        )


def evtx_outcomes(directory: Path, model: Model) -> Iterator[RecordingOutcome]:
    """Hunt each `.evtx` sample; its tactic comes from the TA00xx id in its name."""
    for path in sorted(directory.glob("*.evtx")):
        match = _TA.search(path.name)
        tactic = TACTIC_IDS.get((match.group(1) or match.group(2)) if match else "", BENIGN)
        has_start = any(e.payload.kind == "process_start" for e in load_events(path))
        yield _outcome(path, path.name, tactic, model, None, has_start)


def _outcome(
    path: Path, name: str, tactic: str, model: Model, attack: set[str] | None, has_start: bool
) -> RecordingOutcome:
    summary = FileSummary(str(path))
    outcome = RecordingOutcome(name, tactic, has_start)
    attack_trees: set[str] = set()
    false_trees: set[str] = set()
    for found in hunt_file(path, model, summary):
        alert = found.alert
        keys = {n.process_key for n in alert.process_tree.nodes}
        hit = True if attack is None else bool(keys & attack)
        (attack_trees if hit else false_trees).add(found.tree)
        outcome.alerts.append((str(alert.tactic), float(alert.score), hit))
    # a tree counts once however many of its processes alert, and a tree holding attack processes
    # is never a false alert (an unlabelled helper beside a labelled one is the attack's own)
    outcome.false_alert_trees = len(false_trees - attack_trees)
    outcome.benign_trees = 0 if attack is None else max(0, summary.trees - max(len(attack_trees), 1))
    log.info("hunted %s (%s): %d alerts", name, tactic, len(outcome.alerts))
    return outcome


def probe_outcomes(
    model: Model, tail_s: int = 0, probes: Sequence[Probe] | None = None
) -> Iterator[RecordingOutcome]:
    """Hunt each hand-written lone-command probe (`pipeline.training.probes`; `probes`, when given, else
    the first set, attack and benign) as its own file: an attack probe counts like an attack recording; a
    benign probe is one benign tree (alerted or not). `tail_s`: each file goes on that long after its
    commands (`probe_events`)."""
    from pipeline.training.probes import ATTACK_PROBES, BENIGN_PROBES, temp_probe_files

    holder, files = temp_probe_files(ATTACK_PROBES + BENIGN_PROBES if probes is None else probes, tail_s)
    with holder:
        for probe, path in files:
            benign = probe.tactic == BENIGN
            outcome = RecordingOutcome(probe.name, probe.tactic, True, benign_trees=int(benign))
            for found in hunt_file(path, model, FileSummary(str(path))):
                outcome.alerts.append((str(found.alert.tactic), float(found.alert.score), not benign))
            outcome.false_alert_trees = int(benign and bool(outcome.alerts))
            yield outcome
