"""The Alert an incident becomes: validated whole, equal to one built sub-model by sub-model, and every
contract rule still applied to what came out of the forest (hostile text kept exact and escaped on
the wire, or refused as a ValueError the detector counts; never an unchecked record)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from test_policy import NOW, incident, view

from pipeline.incident import Incident, alert_id_for, alert_record, utc
from pipeline.policy import Policy
from schemas.alerts import (
    ActionTaken,
    Alert,
    AlertAction,
    FeatureContribution,
    ProcessTreeSnapshot,
    Tactic,
    TreeEdge,
    TreeNode,
)
from schemas.commands import Command
from schemas.common import MAX_TEXT_CHARS, Mode, Platform
from schemas.events import BehaviorEvent
from schemas.verdicts import Verdict

HOSTILE = (
    "<script>alert(\"x\")</script> & 'quotes' \\ back\\slash\n new line \r\t tab \x00 nul \x1b[31m ansi "
    "\u202e rtl override \U0001f600 emoji \u0000 \ufeff bom"
)


def _decisions(inc: Incident, mode: str = "block") -> tuple[Alert, list[Command], list[Verdict]]:
    from pipeline.policy import PolicyConfig

    decisions = Policy(PolicyConfig(default_mode=Mode(mode))).decide(inc, NOW)
    alert = decisions[0]
    assert isinstance(alert, Alert)
    return (
        alert,
        [d for d in decisions if isinstance(d, Command)],
        [d for d in decisions if isinstance(d, Verdict)],
    )


def _piecewise(inc: Incident, commands: list[Command], verdicts: list[Verdict]) -> Alert:
    """The alert built the explicit way: every sub-model constructed, then the Alert."""
    keys = {n.key for n in inc.nodes}
    nodes = tuple(
        TreeNode(process_key=n.key, parent_process_key=n.parent_key, image=n.image or None,
                 command_line=n.command_line or None, sha256=n.sha256, user=n.user, pid=n.pid,
                 started_at=None if n.start_ms is None else utc(n.start_ms),
                 ended_at=None if n.end_ms is None else utc(n.end_ms), scored=n.key == inc.scored.key)
        for n in inc.nodes
    )  # fmt: skip
    edges = tuple(TreeEdge(parent=n.parent_key, child=n.key) for n in inc.nodes if n.parent_key in keys)
    actions = tuple(
        ActionTaken(action=AlertAction(c.action.value), target=c.process_key or c.path or "",
                    command_id=c.command_id)
        for c in commands
    ) + tuple(ActionTaken(action=AlertAction.PUBLISH_VERDICT, target=v.artifact_id)
              for v in verdicts)  # fmt: skip
    return Alert(
        alert_id=alert_id_for(inc), device_id=inc.device_id, platform=Platform(inc.platform),
        detection_name=inc.name, tactic=Tactic(inc.tactic), techniques=inc.techniques, score=inc.score,
        tactic_scores={Tactic(k): v for k, v in inc.tactic_scores.items()}, threshold=inc.threshold,
        model_version=inc.model_version, feature_version=inc.feature_version,
        artifact_sha256=inc.scored.sha256, artifact_path=inc.scored.image,
        process_tree=ProcessTreeSnapshot(root_process_key=inc.root.key, nodes=nodes, edges=edges,
                                         evidence=inc.evidence),
        top_features=tuple(FeatureContribution(name=n, value=v, contribution=c)
                           for n, v, c in inc.top_features),
        mode=Mode.BLOCK, actions=actions,
        first_seen=utc(min(n.start_ms or n.last_ms for n in inc.nodes)),
        last_seen=utc(max(n.last_ms for n in inc.nodes)), created_at=utc(NOW),
        summary=alert_record(inc, alert_id_for(inc), Mode.BLOCK, commands, verdicts, True, utc(NOW)).summary,
    )  # fmt: skip


def _evidence() -> tuple[BehaviorEvent, ...]:
    return (
        BehaviorEvent.model_validate({
            "event_id": "e1", "device_id": "dev-1", "seq": 7, "ts": datetime(2024, 5, 1, tzinfo=UTC),
            "platform": "windows", "process_key": "p",
            "payload": {"kind": "file_write", "path": r"C:\Users\ann\AppData\Local\Temp\upd.exe"},
        }),
    )  # fmt: skip


def test_the_alert_validated_whole_equals_the_alert_built_piece_by_piece() -> None:
    inc = incident(evidence=_evidence())
    alert, commands, verdicts = _decisions(inc)
    assert commands and verdicts and alert.process_tree.evidence == inc.evidence
    assert alert == _piecewise(inc, commands, verdicts)
    assert alert.model_dump_json() == _piecewise(inc, commands, verdicts).model_dump_json()


def test_hostile_text_from_the_forest_is_kept_exactly_and_escaped_on_the_wire() -> None:
    ps = view("p", r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe", "w", "cd" * 32,
              command_line=HOSTILE * 100, user=HOSTILE)  # fmt: skip
    inc = incident(scored=ps, nodes=(incident().root, ps))
    alert, _, _ = _decisions(inc)
    node = next(n for n in alert.process_tree.nodes if n.process_key == "p")
    assert node.command_line == HOSTILE * 100 and node.user == HOSTILE
    wire = alert.model_dump_json().encode()
    assert b"<script>" in wire and b"\n" not in wire and b"\x00" not in wire and b"\x1b" not in wire
    assert Alert.model_validate_json(wire) == alert


CONTRACT_BREAKS: dict[str, dict[str, Any]] = {
    "a process key with a space": {"nodes": (view("p q", "C:\\a.exe"),)},
    "a command line over the text limit": {
        "nodes": (view("p", "C:\\a.exe", command_line="x" * (MAX_TEXT_CHARS + 1)),)
    },
    "a sha256 that is not hex": {"nodes": (view("p", "C:\\a.exe", sha256="zz" * 32),)},
    "a NaN feature value": {"top_features": (("self_encoded_command", float("nan"), 1.0),)},
    "an infinite contribution": {"top_features": (("self_encoded_command", 1.0, float("inf")),)},
    "an unknown tactic score": {"tactic_scores": {"Mischief": 0.5}},
    "an unknown tactic": {"tactic": "Mischief"},
    "a technique that is not an ATT&CK id": {"techniques": ("T12; DROP TABLE",)},
    "an empty feature name": {"top_features": (("", 1.0, 1.0),)},
    "a lone surrogate in a command line": {"nodes": (view("p", "C:\\a.exe", command_line="\ud83d"),)},
}


@pytest.mark.parametrize("case", sorted(CONTRACT_BREAKS))
def test_a_value_the_contract_refuses_is_a_value_error_not_an_alert(case: str) -> None:
    """The detector catches ValueError around policy.decide and counts it (decision_errors)."""
    with pytest.raises(ValueError):
        _decisions(incident(**CONTRACT_BREAKS[case]))


def test_audit_mode_lists_what_would_have_been_done_without_command_ids() -> None:
    alert, commands, verdicts = _decisions(incident(), mode="audit")
    assert not commands and not verdicts
    assert [a.action for a in alert.actions] == [AlertAction.KILL_PROCESS_TREE, AlertAction.QUARANTINE_FILE,
                                                 AlertAction.PUBLISH_VERDICT]  # fmt: skip
    assert all(a.audited and a.command_id is None for a in alert.actions)


def test_a_name_that_disagrees_is_refused_every_time_and_a_good_one_parses_the_same() -> None:
    """`parse_detection_name` is remembered: an error is not, and an answer does not change."""
    good = Policy().decide(incident(), NOW)[0]
    assert isinstance(good, Alert)
    body = good.model_dump(mode="json")
    for _ in range(3):
        with pytest.raises(ValueError, match="disagrees"):
            Alert.model_validate({**body, "tactic": "Impact"})
        with pytest.raises(ValueError, match="detection_name"):
            Alert.model_validate({**body, "detection_name": "Behavior:Win32/Execution.!ml"})
        assert Alert.model_validate(body) == good and good.variant == "EncodedCommand"
