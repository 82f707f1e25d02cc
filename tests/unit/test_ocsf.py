"""Alert -> OCSF Detection Finding: the fields OCSF requires are present and carry our values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from schemas_strategies import alerts

from schemas.alerts import (
    ActionTaken,
    Alert,
    AlertAction,
    ProcessTreeSnapshot,
    Tactic,
    TreeNode,
    detection_name,
)
from schemas.common import Mode
from schemas.events import BehaviorEvent, NetworkConnect, Platform
from schemas.ocsf import alert_to_ocsf, severity_of

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REQUIRED = {
    "activity_id",
    "category_uid",
    "class_uid",
    "finding_info",
    "metadata",
    "severity_id",
    "time",
    "type_uid",
}


def _alert(
    tactic: Tactic = Tactic.CREDENTIAL_ACCESS,
    techniques: tuple[str, ...] = ("T1003.001",),
    mode: Mode = Mode.BLOCK,
) -> Alert:
    event = BehaviorEvent(
        event_id="e1",
        device_id="dev-1",
        seq=1,
        ts=NOW,
        platform=Platform.WINDOWS,
        process_key="{M}",
        image="C:\\Users\\bob\\m.exe",
        payload=NetworkConnect(dst_ip="203.0.113.9", dst_port=443),
    )
    return Alert(
        alert_id="al-1",
        device_id="dev-1",
        hostname="ws-042",
        platform=Platform.WINDOWS,
        detection_name=detection_name(Platform.WINDOWS, tactic, "A"),
        tactic=tactic,
        techniques=techniques,
        score=0.993,
        model_version="xgb-2024.05",
        feature_version="f3",
        process_tree=ProcessTreeSnapshot(
            root_process_key="{M}",
            nodes=(
                TreeNode(
                    process_key="{M}",
                    image="C:\\Users\\bob\\m.exe",
                    sha256="ab" * 32,
                    pid=77,
                    command_line="m.exe -dump",
                    scored=True,
                ),
            ),
            evidence=(event,),
        ),
        mode=mode,
        actions=(ActionTaken(action=AlertAction.KILL_PROCESS_TREE, target="{M}", command_id="c1"),),
        first_seen=NOW - timedelta(minutes=2),
        last_seen=NOW,
        created_at=NOW,
    )


def test_required_detection_finding_fields_are_present() -> None:
    finding = alert_to_ocsf(_alert(), product_version="1.2.3")
    assert REQUIRED <= set(finding)
    assert (finding["class_uid"], finding["category_uid"], finding["activity_id"], finding["type_uid"]) == (
        2004,
        2,
        1,
        200401,
    )
    assert finding["time"] == int(NOW.timestamp() * 1000)
    assert finding["metadata"]["product"] == {
        "name": "ringfence",
        "vendor_name": "ringfence",
        "version": "1.2.3",
    }
    assert finding["metadata"]["version"].startswith("1.")
    info = finding["finding_info"]
    assert (info["uid"], info["title"]) == ("al-1", "Behavior:Win32/CredentialAccess.A!ml")
    assert info["analytic"]["type_id"] == 4 and info["analytic"]["version"] == "xgb-2024.05"


def test_attacks_carry_tactic_and_technique() -> None:
    attacks = alert_to_ocsf(_alert())["finding_info"]["attacks"]
    assert attacks == [
        {"tactic": {"uid": "TA0006", "name": "Credential Access"}, "technique": {"uid": "T1003.001"}}
    ]
    assert alert_to_ocsf(_alert(techniques=()))["finding_info"]["attacks"] == [
        {"tactic": {"uid": "TA0006", "name": "Credential Access"}}
    ]
    assert alert_to_ocsf(_alert(Tactic.GENERIC, techniques=()))["finding_info"]["attacks"] == []


def test_device_evidence_severity_and_action() -> None:
    finding = alert_to_ocsf(_alert())
    assert finding["device"] == {
        "uid": "dev-1",
        "hostname": "ws-042",
        "type_id": 0,
        "os": {"name": "Windows", "type_id": 100},
    }
    process = finding["evidences"][0]["process"]
    assert (process["pid"], process["file"]["hashes"][0]["value"]) == (77, "ab" * 32)
    assert finding["evidences"][1]["dst_endpoint"] == {"ip": "203.0.113.9", "port": 443}
    assert (finding["severity_id"], finding["status_id"], finding["action_id"]) == (5, 1, 2)
    assert alert_to_ocsf(_alert(mode=Mode.AUDIT))["action_id"] == 1


@pytest.mark.parametrize(("score", "severity_id"), [(0.5, 2), (0.7, 3), (0.95, 4), (0.99, 5)])
def test_severity_follows_the_score(score: float, severity_id: int) -> None:
    assert severity_of(score)[0] == severity_id


@settings(max_examples=40, deadline=None)
@given(alert=alerts())
def test_every_alert_maps_to_json_with_the_required_fields(alert: Alert) -> None:
    finding = orjson.loads(orjson.dumps(alert_to_ocsf(alert, product_version="t")))
    assert REQUIRED <= set(finding)
    assert finding["finding_info"]["uid"] and finding["finding_info"]["title"] == alert.detection_name
