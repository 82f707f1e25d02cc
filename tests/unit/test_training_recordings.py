"""Recording-level measurement: false alerts are counted per benign tree, and every training
recording also trains through its process-creation-only view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from shared_data import shared_datasets

from pipeline.detect import Detector
from pipeline.hunt import tree_of
from pipeline.model.provisional import ProvisionalRules
from pipeline.training.dataset import PROCESS_VIEW, _recording
from pipeline.training.evaluate import RecordingOutcome, RecordingReport
from pipeline.training.labels import load_catalog
from schemas.alerts import Alert
from schemas.events import BehaviorEvent, Platform, ProcessStart


def _start(key: str, parent: str, image: str, second: int) -> BehaviorEvent:
    return BehaviorEvent(
        event_id=f"e-{key}",
        device_id="ws1",
        platform=Platform.WINDOWS,
        ts=datetime(2024, 3, 1, 10, tzinfo=UTC) + timedelta(seconds=second),
        seq=second,
        process_key=key,
        parent_process_key=parent,
        image=image,
        payload=ProcessStart(image=image, command_line=image.rsplit("\\", 1)[-1]),
    )


def _alert_on(key: str) -> Alert:
    """Just what `tree_of` reads of an alert: its device and the root of its snapshot."""
    return cast(Alert, SimpleNamespace(device_id="ws1", process_tree=SimpleNamespace(root_process_key=key)))


def test_an_alert_belongs_to_the_tree_below_the_unknown_parent_or_anchor() -> None:
    sys32 = "C:\\Windows\\System32\\"
    detector = Detector(model=ProvisionalRules())
    events = [
        _start("script", "unknown-shell", sys32 + "cscript.exe", 0),
        _start("wrapper", "script", sys32 + "cmd.exe", 1),
        _start("export", "wrapper", sys32 + "reg.exe", 2),
        _start("services", "wininit", sys32 + "services.exe", 3),
        _start("svc", "services", sys32 + "svchost.exe", 4),
        _start("child", "svc", sys32 + "reg.exe", 5),
    ]
    detector.process(events, 6_000)
    assert tree_of(detector, _alert_on("export")) == "script"
    assert tree_of(detector, _alert_on("wrapper")) == "script"
    assert tree_of(detector, _alert_on("child")) == "child"  # svchost and services are anchors
    assert tree_of(detector, _alert_on("never-seen")) == "never-seen"


def test_two_alerts_on_one_benign_tree_count_as_one_false_alert() -> None:
    noisy = RecordingOutcome("a", "CredentialAccess", True, benign_trees=300, false_alert_trees=1)
    noisy.alerts += [("CredentialAccess", 0.99, True), ("CredentialAccess", 0.75, False)]
    noisy.alerts += [("CredentialAccess", 0.74, False)]
    quiet = RecordingOutcome("b", "DefenseEvasion", True, benign_trees=200)
    quiet.alerts.append(("DefenseEvasion", 0.9, True))
    report = RecordingReport([noisy, quiet])
    assert noisy.false_alerts == 2 and report.false_alert_trees == 1
    assert report.false_alerts_per_1000 == pytest.approx(2.0)  # 1 of 500 trees, not 2 alerts


def _otrf() -> Path:
    return shared_datasets("otrf")


def test_a_training_recording_also_trains_through_its_process_creation_view() -> None:
    from agents.sysmon import load_events

    rel = "credential_access/psh_lsass_memory_dump_comsvcs.jsonl.gz"
    (rec,) = [r for r in load_catalog(_otrf()) if r.rel == rel]
    events = list(load_events(rec.path))
    assert any(e.payload.kind != "process_start" for e in events)
    blocks, report = _recording(rec, events, "train", "lab", process_view=True)
    (full_info, full), (view_info, view) = blocks
    assert (full_info.origin, view_info.origin) == ("otrf", PROCESS_VIEW)
    assert view_info.split == "train" and view_info.label == full_info.label == "CredentialAccess"
    assert "CredentialAccess" in view.labels and set(view.keys) <= set(full.keys)
    assert report.attack_processes > 0
    alone, _ = _recording(rec, events, "dev", "lab", process_view=False)
    assert [info.origin for info, _ in alone] == ["otrf"]
