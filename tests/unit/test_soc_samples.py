"""Inline alerts for the SOC tests (imported by the other test_soc_* modules), and checks that they are valid.

The attack: Word spawns a PowerShell with a hostile command line (HTML, an ANSI escape, a newline and
a bidi override), PowerShell drops and runs `m.exe`, which reads LSASS and calls out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.alerts import (
    ActionTaken,
    Alert,
    AlertAction,
    FeatureContribution,
    ProcessTreeSnapshot,
    Tactic,
    TreeNode,
    detection_name,
)
from schemas.common import Mode, Platform
from schemas.events import BehaviorEvent, FileWrite, NetworkConnect, ProcessAccess

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SHA_M = "ab" * 32
HOSTILE = "powershell -c \"<script>alert('pwned')</script>\" \x1b[2J\nFAKE ROW \u202eexe.txt"


def event(seq: int, process_key: str, payload: FileWrite | NetworkConnect | ProcessAccess) -> BehaviorEvent:
    return BehaviorEvent(event_id=f"e{seq}", device_id="dev-1", seq=seq, ts=NOW + timedelta(seconds=seq),
                         platform=Platform.WINDOWS, process_key=process_key, payload=payload)


def nodes() -> tuple[TreeNode, ...]:
    return (
        TreeNode(process_key="{W}", image="C:\\Program Files\\Office\\WINWORD.EXE", pid=100,
                 command_line="WINWORD.EXE /n invoice.docm", started_at=NOW - timedelta(minutes=3)),
        TreeNode(process_key="{P}", parent_process_key="{W}", pid=200, command_line=HOSTILE,
                 image="C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                 started_at=NOW - timedelta(minutes=2)),
        TreeNode(process_key="{M}", parent_process_key="{P}", image="C:\\Users\\bob\\m.exe", pid=300,
                 sha256=SHA_M, command_line="m.exe -dump", user="CORP\\bob", scored=True,
                 started_at=NOW - timedelta(minutes=1)),
        TreeNode(process_key="{C}", parent_process_key="{W}", image="C:\\Windows\\System32\\cmd.exe",
                 pid=400, command_line="cmd /c whoami", started_at=NOW - timedelta(seconds=30)),
    )


def alert(
    alert_id: str = "al-1", *, device_id: str = "dev-1", score: float = 0.97,
    tactic: Tactic = Tactic.CREDENTIAL_ACCESS, mode: Mode = Mode.BLOCK, hostname: str | None = "ws-042",
) -> Alert:
    evidence: tuple[BehaviorEvent, ...] = (
        event(1, "{P}", FileWrite(path="C:\\Users\\bob\\m.exe", sha256=SHA_M, bytes_written=4096)),
        event(2, "{M}", ProcessAccess(target_image="C:\\Windows\\System32\\lsass.exe",
                                      granted_access=0x1010)),
        event(3, "{M}", NetworkConnect(dst_ip="203.0.113.9", dst_port=443, dst_hostname="evil.example")),
    )
    evidence = tuple(e.model_copy(update={"device_id": device_id}) for e in evidence)
    return Alert(
        alert_id=alert_id, device_id=device_id, hostname=hostname, platform=Platform.WINDOWS,
        detection_name=detection_name(Platform.WINDOWS, tactic, "LsassAccess"), tactic=tactic,
        techniques=("T1003.001",), score=score, threshold=0.8, model_version="xgb-test",
        feature_version="f1", artifact_sha256=SHA_M, artifact_path="C:\\Users\\bob\\m.exe",
        process_tree=ProcessTreeSnapshot(root_process_key="{W}", nodes=nodes(), evidence=evidence),
        top_features=(FeatureContribution(name="lsass_access", value=1.0, contribution=2.31),
                      FeatureContribution(name="office_spawns_shell", value=1.0, contribution=1.2)),
        mode=mode,
        actions=(ActionTaken(action=AlertAction.KILL_PROCESS_TREE, target="{W}", command_id="c1",
                             audited=mode is Mode.AUDIT),
                 ActionTaken(action=AlertAction.QUARANTINE_FILE, target="C:\\Users\\bob\\m.exe",
                             command_id="c2", audited=mode is Mode.AUDIT),
                 ActionTaken(action=AlertAction.PUBLISH_VERDICT, target=SHA_M, audited=mode is Mode.AUDIT)),
        first_seen=NOW - timedelta(minutes=3), last_seen=NOW, created_at=NOW,
        summary="m.exe read LSASS memory",
    )


def test_samples_are_valid_contract_records() -> None:
    sample = alert()
    assert Alert.model_validate_json(sample.model_dump_json()) == sample
    assert HOSTILE in {node.command_line for node in sample.process_tree.nodes}
