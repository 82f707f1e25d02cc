"""Policy: modes per group and device, exclusions with scope and expiry, decisions and their ids."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pipeline.detect import _view
from pipeline.errors import PolicyError
from pipeline.incident import Incident, NodeView, alert_id_for, alert_record, blockable, utc
from pipeline.lexicon import image_class
from pipeline.node import ProcessNode
from pipeline.policy import Exclusion, ExclusionKind, Policy, PolicyConfig
from schemas.alerts import DETECTION_NAME, Alert
from schemas.commands import Command, CommandAction
from schemas.common import Mode
from schemas.verdicts import Disposition, Verdict

NOW = 1_714_564_800_000
DROPPER = r"C:\Users\ann\AppData\Local\Temp\upd.exe"
SHA = "ab" * 32


def view(key: str, image: str, parent: str | None = None, sha256: str | None = None, **kw: Any) -> NodeView:
    fields: dict[str, Any] = dict(command_line="", user=None, pid=100, start_ms=NOW - 5_000, end_ms=None,
                                  last_ms=NOW - 1_000, signer=None)  # fmt: skip
    fields.update(kw)
    return NodeView(key, parent, image, sha256=sha256, image_cls=image_class(image), **fields)


def incident(device: str = "dev-1", platform: str = "windows", **overrides: Any) -> Incident:
    root = view("w", r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE")
    ps = view("p", r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe", "w", "cd" * 32)
    drop = view("d", DROPPER, "p", SHA, signer="Evil Corp")
    base: dict[str, Any] = dict(
        device_id=device, platform=platform, root=root, scored=ps, nodes=(root, ps, drop), evidence=(),
        tactic="Execution", score=0.93, threshold=0.7, tactic_scores={"Execution": 0.8, "Impact": 0.1},
        top_features=(("self_encoded_command", 1.0, 4.0), ("pair_office_tool", 1.0, 2.0)),
        techniques=("T1059.001",), model_version="provisional-rules-0", feature_version="1.0",
    )  # fmt: skip
    base.update(overrides)
    return Incident(**base)


def kinds(decisions: list[Any]) -> list[str]:
    return [type(d).__name__ for d in decisions]


def test_modes_default_group_and_device_override() -> None:
    config = PolicyConfig(default_mode=Mode.AUDIT, group_modes={"servers": Mode.BLOCK},
                          device_modes={"srv-9": Mode.AUDIT, "lap-1": Mode.BLOCK},
                          device_groups={"srv-1": "servers", "srv-9": "servers"})  # fmt: skip
    assert config.mode_for("unknown") is Mode.AUDIT
    assert config.mode_for("srv-1") is Mode.BLOCK
    assert config.mode_for("srv-9") is Mode.AUDIT  # device override beats the group
    assert config.mode_for("lap-1") is Mode.BLOCK


def test_audit_emits_the_alert_only_with_actions_marked_audited() -> None:
    decisions = Policy(PolicyConfig(default_mode=Mode.AUDIT)).decide(incident(), NOW)
    assert kinds(decisions) == ["Alert"]
    alert = decisions[0]
    assert isinstance(alert, Alert) and alert.mode is Mode.AUDIT
    assert alert.actions and all(a.audited and a.command_id is None for a in alert.actions)
    assert {a.action.value for a in alert.actions} == {
        "kill_process_tree",
        "quarantine_file",
        "publish_verdict",
    }


def test_block_kills_the_root_quarantines_and_blocks_the_dropped_file() -> None:
    decisions = Policy(PolicyConfig(default_mode=Mode.BLOCK)).decide(incident(), NOW)
    assert kinds(decisions) == ["Alert", "Command", "Command", "Verdict"]
    alert, kill, quarantine, verdict = decisions
    assert (
        isinstance(kill, Command)
        and kill.action is CommandAction.KILL_PROCESS_TREE
        and kill.process_key == "w"
    )
    assert isinstance(quarantine, Command) and quarantine.path == DROPPER and quarantine.sha256 == SHA
    assert (
        isinstance(verdict, Verdict)
        and verdict.artifact_id == SHA
        and verdict.disposition is Disposition.MALICIOUS
    )
    assert isinstance(alert, Alert) and alert.mode is Mode.BLOCK
    assert {a.command_id for a in alert.actions if a.command_id} == {kill.command_id, quarantine.command_id}
    assert kill.alert_id == verdict.alert_id == alert.alert_id
    assert kill.signature is None  # the stream shell signs


def test_operating_system_tools_are_never_blocked_fleet_wide() -> None:
    only_tools = incident(nodes=incident().nodes[:2])  # Word and PowerShell, no dropped file
    decisions = Policy(PolicyConfig(default_mode=Mode.BLOCK)).decide(only_tools, NOW)
    assert kinds(decisions) == ["Alert", "Command"]
    system_copy = view("x", r"C:\Windows\System32\conhost.exe", "p", "ef" * 32)
    decisions = Policy(PolicyConfig(default_mode=Mode.BLOCK)).decide(
        incident(nodes=(*only_tools.nodes, system_copy)), NOW
    )
    assert kinds(decisions) == ["Alert", "Command"]


def test_names_follow_the_convention_per_platform() -> None:
    win = Policy().decide(incident(), NOW)[0]
    linux = Policy().decide(incident(platform="linux", tactic="Persistence"), NOW)[0]
    assert isinstance(win, Alert) and isinstance(linux, Alert)
    assert win.detection_name == "Behavior:Win32/Execution.EncodedCommand!ml"
    assert linux.detection_name.startswith("Behavior:Linux/Persistence.")
    assert DETECTION_NAME.match(linux.detection_name)
    assert "PROVISIONAL" in (win.summary or "") and win.model_version == "provisional-rules-0"


def test_decisions_are_idempotent() -> None:
    policy = Policy(PolicyConfig(default_mode=Mode.BLOCK))
    first, again = policy.decide(incident(), NOW), policy.decide(incident(), NOW + 5_000)
    ids = [
        (getattr(d, "alert_id", None), getattr(d, "command_id", None), getattr(d, "nonce", None))
        for d in first
    ]
    assert ids == [(getattr(d, "alert_id", None), getattr(d, "command_id", None), getattr(d, "nonce", None))
                   for d in again]  # fmt: skip
    other_tactic = policy.decide(incident(tactic="Impact"), NOW)[0]
    assert isinstance(other_tactic, Alert) and other_tactic.alert_id != first[0].alert_id


@pytest.mark.parametrize(
    "exclusion",
    [
        Exclusion("by-hash", ExclusionKind.HASH, SHA.upper()),
        Exclusion("by-path", ExclusionKind.PATH, r"c:\users\*\appdata\local\temp\upd.exe"),
        Exclusion("by-signer", ExclusionKind.SIGNER, "evil corp"),
        Exclusion("by-root", ExclusionKind.PATH, r"C:\Program Files\Microsoft Office\*"),
    ],
)
def test_exclusions_suppress_and_are_counted(exclusion: Exclusion) -> None:
    policy = Policy(PolicyConfig(default_mode=Mode.BLOCK, exclusions=(exclusion,)))
    assert policy.decide(incident(), NOW) == []
    assert policy.decide(incident(), NOW) == []
    assert policy.suppressed == {exclusion.exclusion_id: 2}


def test_exclusion_scope_and_expiry() -> None:
    config = PolicyConfig(
        device_groups={"dev-1": "lab", "dev-2": "prod"},
        exclusions=(
            Exclusion("lab-only", ExclusionKind.HASH, SHA, scope="group:lab"),
            Exclusion("dev-3-only", ExclusionKind.HASH, SHA, scope="device:dev-3"),
            Exclusion("expired", ExclusionKind.HASH, SHA, expires_ms=NOW - 1),
            Exclusion("until-later", ExclusionKind.HASH, SHA, scope="device:dev-4", expires_ms=NOW + 10),
        ),
    )
    policy = Policy(config)
    assert policy.decide(incident("dev-1"), NOW) == []
    assert kinds(policy.decide(incident("dev-2"), NOW)) == ["Alert"]  # other group; expired one ignored
    assert policy.decide(incident("dev-3"), NOW) == []
    assert policy.decide(incident("dev-4"), NOW) == []
    assert kinds(policy.decide(incident("dev-4"), NOW + 10)) == ["Alert"]  # expired now
    assert dict(policy.suppressed) == {"lab-only": 1, "dev-3-only": 1, "until-later": 1}


def test_policy_update_switches_a_group_to_block_and_keeps_counters() -> None:
    only_dev_9 = Exclusion("x", ExclusionKind.HASH, SHA, scope="device:dev-9")
    policy = Policy(PolicyConfig(device_groups={"dev-1": "lab"}, exclusions=(only_dev_9,)))
    assert kinds(policy.decide(incident(), NOW)) == ["Alert"]
    policy.decide(incident("dev-9"), NOW)
    policy.update(PolicyConfig(group_modes={"lab": Mode.BLOCK}, device_groups={"dev-1": "lab"}))
    assert kinds(policy.decide(incident(), NOW)) == ["Alert", "Command", "Command", "Verdict"]
    assert policy.suppressed == {"x": 1}


def test_provisional_model_can_be_kept_from_enforcing() -> None:
    config = PolicyConfig(default_mode=Mode.BLOCK, enforce_provisional=False)
    decisions = Policy(config).decide(incident(), NOW)
    assert kinds(decisions) == ["Alert"]
    trained = Policy(config).decide(incident(model_version="xgb-2024.05"), NOW)
    assert kinds(trained) == ["Alert", "Command", "Command", "Verdict"]


def test_policy_document_is_parsed_and_errors_are_named() -> None:
    config = PolicyConfig.from_dict({
        "default_mode": "audit", "group_modes": {"servers": "block"}, "device_groups": {"s1": "servers"},
        "exclusions": [{"id": "x1", "kind": "path", "pattern": "/opt/scanner/*", "scope": "group:servers",
                        "expires_ms": NOW}],
    })  # fmt: skip
    assert config.mode_for("s1") is Mode.BLOCK and config.exclusions[0].expires_ms == NOW
    with pytest.raises(PolicyError, match="invalid policy"):
        PolicyConfig.from_dict({"default_mode": "enforce"})
    with pytest.raises(PolicyError):
        PolicyConfig.from_dict(
            {"exclusions": [{"id": "x", "kind": "path", "pattern": "a", "scope": "planet"}]}
        )
    with pytest.raises(PolicyError):
        Exclusion("", ExclusionKind.HASH, SHA)


def test_linux_paths_match_case_sensitively() -> None:
    exclusion = Exclusion("opt", ExclusionKind.PATH, "/opt/Scanner/*")
    node = view("s", "/opt/scanner/bin/scan")
    assert not exclusion.matches(node.subject)
    assert exclusion.matches(dataclasses.replace(node, image="/opt/Scanner/bin/scan").subject)


@pytest.mark.parametrize(
    ("image", "sha256"),
    [(DROPPER, SHA), (DROPPER, None), (r"C:\Windows\System32\conhost.exe", SHA), ("/tmp/.x/locker", SHA),
     ("/usr/bin/shred", SHA), (r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe", SHA), ("", SHA)],
)  # fmt: skip
def test_a_forest_node_is_blockable_exactly_when_its_copy_is(image: str, sha256: str | None) -> None:
    # the detector asks the live node while it looks for an incident's root, before copying anything
    node = ProcessNode("k", sha256=sha256)
    node.set_image(image)
    assert blockable(node) == blockable(_view(node))
    assert blockable(node) == ((image == DROPPER and sha256 is not None) or image == "/tmp/.x/locker")


def test_the_artifact_is_looked_up_once_and_stays_the_same() -> None:
    inc = incident()
    first = inc.artifact
    assert first is not None and first.key == "d" and inc.artifact is first
    only_tools = incident(nodes=(incident().root, incident().scored))
    assert only_tools.artifact is None and only_tools.artifact is None
    assert dataclasses.replace(inc, nodes=(inc.root, inc.scored)).artifact is None  # not carried over


@pytest.mark.parametrize(
    "case",
    ["artifact", "no artifact", "upper-case sha256", "artifact is the root", "provisional in block mode"],
)
def test_an_audit_alert_lists_exactly_what_block_mode_would_do(case: str) -> None:
    # audit builds no Command or Verdict: its alert must still equal the one made from block mode's
    tools = incident(nodes=(incident().root, incident().scored))
    dropper = view("d", DROPPER, None, SHA.upper(), signer="Evil Corp")
    inc = {
        "artifact": incident(), "no artifact": tools,
        "upper-case sha256": incident(nodes=(incident().root, incident().scored, dropper)),
        "artifact is the root": incident(root=dropper, scored=dropper, nodes=(dropper,)),
        "provisional in block mode": incident(),
    }[case]  # fmt: skip
    block = Policy(PolicyConfig(default_mode=Mode.BLOCK)).decide(inc, NOW)
    commands = [d for d in block if isinstance(d, Command)]
    verdicts = [d for d in block if isinstance(d, Verdict)]
    if case == "provisional in block mode":
        policy = Policy(PolicyConfig(default_mode=Mode.BLOCK, enforce_provisional=False))
        mode = Mode.BLOCK
    else:
        policy, mode = Policy(PolicyConfig(default_mode=Mode.AUDIT)), Mode.AUDIT
    audited = policy.decide(inc, NOW)
    assert len(audited) == 1 and isinstance(audited[0], Alert)
    expected = alert_record(inc, alert_id_for(inc), mode, commands, verdicts, False, utc(NOW))
    assert audited[0] == expected and audited[0].model_dump_json() == expected.model_dump_json()
    every = ["kill_process_tree", "quarantine_file", "publish_verdict"]
    assert [a.action.value for a in audited[0].actions] == (every[:1] if case == "no artifact" else every)


def test_audit_is_refused_only_by_the_alerts_own_contract() -> None:
    # a command window that cannot be (ttl 0) fails block mode, where the command would be sent; the
    # audit alert, which sends none, is still made
    with pytest.raises(ValueError):
        Policy(PolicyConfig(default_mode=Mode.BLOCK, command_ttl_ms=0)).decide(incident(), NOW)
    audit = Policy(PolicyConfig(default_mode=Mode.AUDIT, command_ttl_ms=0))
    assert kinds(audit.decide(incident(), NOW)) == ["Alert"]
    with pytest.raises(ValueError):  # a process key the contract refuses still fails the audit alert
        Policy(PolicyConfig(default_mode=Mode.AUDIT)).decide(incident(root=view("p q", DROPPER)), NOW)
