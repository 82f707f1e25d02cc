"""`ringfence hunt`: the detector over real .evtx, BehaviorEvent files, bad files; table and --json output."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from shared_data import shared_datasets

from pipeline.cli import main
from pipeline.eventkit import EventKit
from pipeline.hunt import FileSummary, chunks, hunt_file
from pipeline.scoring import load_model
from pipeline.training.probes import ATTACK_PROBES, TAIL_S, write_probes
from pipeline.training.simulate import SimConfig, simulate_attack, techniques
from pipeline.tree import ts_ms
from schemas.alerts import Alert
from schemas.events import BehaviorEvent, ProcessStart


def _evtx(prefix: str) -> Path:
    (path,) = sorted(shared_datasets("evtx-samples").glob(f"{prefix}*.evtx"))
    return path


LSASS = "TA0006-Credential_Access__T1003"


def test_hunt_over_an_evtx_sample_prints_a_behavior_alert(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hunt", "--quiet", str(_evtx(LSASS))]) == 0
    out, err = capsys.readouterr()
    rows = [line for line in out.splitlines()[1:] if line.strip()]
    assert rows and all("Behavior:Win32/" in row and "!ml" in row for row in rows)
    assert "events read 14" in err and "alerts:" in err


def test_json_lines_parse_and_carry_the_input_path(capsys: pytest.CaptureFixture[str]) -> None:
    path = _evtx(LSASS)
    assert main(["hunt", "--quiet", "--json", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines
    for line in lines:
        record = json.loads(line)
        assert record["path"] == str(path)
        alert = Alert.model_validate(record["alert"])
        assert alert.detection_name.startswith("Behavior:Win32/") and alert.top_features


def test_an_alert_from_a_command_line_alone_carries_that_process_start_as_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Process creation only (Security 4688): the lone-command view's alert shows the analyst the line
    that made it, though the line shows none of feature version 1.0's indicators (a debugger set for
    the accessibility tool the logon screen starts)."""
    from pipeline.indicators import indicator_mask, lone_mask
    from pipeline.training.probes import ATTACK_PROBES, write_probes

    probe = next(p for p in ATTACK_PROBES if p.name == "sticky keys debugger")
    [line] = [text for _, text in probe.commands if lone_mask(text) and not indicator_mask(text)]
    [(_, path)] = list(write_probes([probe], tmp_path))
    assert main(["hunt", "--quiet", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    alerts = [Alert.model_validate(json.loads(row)["alert"]) for row in out.splitlines()]
    assert alerts
    for alert in alerts:
        evidence = alert.process_tree.evidence
        lines = [e.payload.command_line for e in evidence if e.payload.kind == "process_start"]
        assert line in lines, alert.process_tree.evidence


_ECS_HEADER = {"EventID": "winlog.event_id", "Channel": "winlog.channel", "Hostname": "winlog.computer_name",
               "SourceName": "winlog.provider_name", "EventRecordID": "winlog.record_id"}


def test_a_recording_exported_as_dotted_ecs_keys_raises_the_alerts_of_its_flattened_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another lab's export of the same events (winlogbeat's ECS document flattened with dotted keys:
    `winlog.event_id`, `winlog.event_data.Image`, ...) is hunted as the flattened recording is."""
    name = "cmd_wevtutil_modify_security_eventlog_path.jsonl.gz"
    source = shared_datasets("otrf") / "defense_evasion" / name
    ecs = tmp_path / "ecs.jsonl.gz"
    with gzip.open(source, "rt") as lines, gzip.open(ecs, "wt") as out:
        for line in lines:
            record = json.loads(line)
            dotted = {"@timestamp": record.pop("@timestamp", None)}
            for key, value in record.items():
                if not key.startswith("_"):
                    dotted[_ECS_HEADER.get(key, f"winlog.event_data.{key}")] = value
            out.write(json.dumps(dotted) + "\n")

    def alerts(path: Path) -> list[tuple[str, float, str]]:
        assert main(["hunt", "--quiet", "--json", str(path)]) == 0
        found = [json.loads(line)["alert"] for line in capsys.readouterr().out.splitlines()]
        roots = [a["process_tree"]["nodes"][0]["image"] for a in found]
        return sorted((a["detection_name"], a["score"], root) for a, root in zip(found, roots, strict=True))

    expected = alerts(source)
    assert expected and alerts(ecs) == expected


def _splunk(record: dict[str, object]) -> dict[str, object]:
    """Splunk's export of an XmlWinEventLog event: `EventCode`, the channel in `source`, `_time`."""
    out = {key: value for key, value in record.items() if key not in ("EventID", "Channel", "@timestamp")}
    return {**out, "EventCode": str(record["EventID"]), "source": f"XmlWinEventLog:{record['Channel']}",
            "sourcetype": "XmlWinEventLog", "_time": record.get("@timestamp")}


def _nxlog(record: dict[str, object]) -> dict[str, object]:
    """nxlog's: the log's time only as `EventTime` (naive; this host's zone is UTC)."""
    out = {key: value for key, value in record.items() if key not in ("TimeCreated", "@timestamp")}
    created = str(record["TimeCreated"])
    return {**out, "EventTime": created.replace("T", " ").removesuffix("Z")}


def _fields_only(record: dict[str, object]) -> dict[str, object]:
    """An export that kept the event's own fields and its id: no channel, provider or host name."""
    dropped = ("Channel", "SourceName", "ProviderGuid", "Hostname", "@timestamp")
    return {key: value for key, value in record.items() if key not in dropped}


@pytest.mark.parametrize("export", [_splunk, _nxlog, _fields_only], ids=["splunk", "nxlog", "fields-only"])
def test_a_recording_exported_by_other_shippers_raises_the_alerts_of_its_flattened_form(
    export: Callable[[dict[str, object]], dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Other labs' exports of the same events are hunted as the flattened recording is, none skipped
    whole: Splunk's (the event id as `EventCode`, the channel behind `source`'s `XmlWinEventLog:`, the
    time in `_time`), nxlog's (dated only by its local `EventTime`), and one that kept neither channel,
    provider nor host (Sysmon and Security events told apart by their own fields; one unnamed device)."""
    name = "cmd_wevtutil_modify_security_eventlog_path.jsonl.gz"
    source = shared_datasets("otrf") / "defense_evasion" / name
    exported = tmp_path / "exported.jsonl"
    with gzip.open(source, "rt") as lines, exported.open("w") as out:
        for line in lines:
            record = {key: value for key, value in json.loads(line).items() if not key.startswith("_")}
            out.write(json.dumps(export(record)) + "\n")

    def hunted(path: Path) -> tuple[list[tuple[str, float, str]], int]:
        assert main(["hunt", "--quiet", "--json", str(path)]) == 0
        printed = capsys.readouterr()
        found = [json.loads(line)["alert"] for line in printed.out.splitlines()]
        roots = [a["process_tree"]["nodes"][0]["image"] for a in found]
        named = sorted((a["detection_name"], a["score"], root) for a, root in zip(found, roots, strict=True))
        mapped = re.search(r"events read \d+, mapped (\d+),", printed.err)  # the file's summary line
        assert mapped is not None, printed.err
        return named, int(mapped.group(1))

    expected, mapped = hunted(source)
    assert expected and mapped > 100
    assert hunted(exported) == (expected, mapped)


def test_malformed_and_missing_files_are_reported_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.jsonl"
    bad.write_bytes(b'{"EventID": 1, "Image": \n\x00\xff not json at all\n[1, 2, 3]\n')
    assert main(["hunt", "--quiet", str(bad), str(tmp_path / "absent.evtx"), str(_evtx(LSASS))]) == 0
    out, err = capsys.readouterr()
    assert "broken.jsonl" in err and "malformed" in err
    assert "absent.evtx: SKIPPED FILE" in err
    assert any("Behavior:Win32/" in line for line in out.splitlines())


def test_behavior_event_json_lines_of_a_linux_attack_raise_a_linux_alert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tech = next(t for t in techniques() if t.generate.__name__ == "linux_ransomware")
    tree = simulate_attack(
        tech, 0, SimConfig(seed=5, fragment_share=0.0, process_only_share=0.0, light_share=0.0)
    )
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(event.model_dump_json() + "\n" for event in tree.events)
    assert main(["hunt", "--quiet", "--json", str(path)]) == 0
    alerts = [
        Alert.model_validate(json.loads(line)["alert"]) for line in capsys.readouterr().out.splitlines()
    ]
    assert any(a.detection_name.startswith("Behavior:Linux/") for a in alerts)


def test_a_path_that_does_not_exist_alone_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hunt", str(tmp_path / "nothing-here")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def _sysmon_fields(n: int) -> dict[str, object]:
    return {
        "ProcessGuid": f"{{11111111-2222-3333-4444-00000000000{n}}}",
        "ParentProcessGuid": "{11111111-2222-3333-4444-000000000009}",
        "ProcessId": 4000 + n,
        "Image": "C:\\Windows\\System32\\rundll32.exe",
        "CommandLine": "rundll32.exe comsvcs.dll, MiniDump 624 C:\\Windows\\Temp\\x.dmp full",
        "ParentImage": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "ParentCommandLine": "powershell.exe -nop -w hidden",
        "User": "CORP\\alice",
        "IntegrityLevel": "High",
    }


def test_both_flattened_sysmon_json_styles_are_hunted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    winlogbeat = {
        "EventID": 1,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Hostname": "ws1.corp.local",
        "TimeCreated": "2024-03-01T10:00:00.000Z",
        **_sysmon_fields(1),
    }
    evtx_dump = {
        "System": {
            "EventID": {"#text": 1},
            "Channel": "Microsoft-Windows-Sysmon/Operational",
            "Computer": "ws2",
            "TimeCreated": {"#attributes": {"SystemTime": "2024-03-01T10:00:01.000000Z"}},
        },
        "EventData": _sysmon_fields(2),
    }
    for name, record in (("beat.jsonl", winlogbeat), ("dump.jsonl", evtx_dump)):
        (tmp_path / name).write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert main(["hunt", "--quiet", "--json", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    paths = {json.loads(line)["path"] for line in out.splitlines()}
    assert paths == {str(tmp_path / "beat.jsonl"), str(tmp_path / "dump.jsonl")}
    assert err.count("mapped 1") == 2


def test_stderr_holds_the_summaries_not_a_log_line_per_alert() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "hunt", "--quiet", str(_evtx(LSASS))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Behavior:Win32/CredentialAccess" in done.stdout
    assert "alerts: CredentialAccess=1" in done.stderr
    assert "INFO pipeline.detect" not in done.stderr  # the alert is on stdout already


_T0 = 1_700_000_000_000


def _at(ms: int) -> BehaviorEvent:
    whoami = ProcessStart(image=r"C:\Windows\System32\whoami.exe")
    return EventKit("h").event(f"p{ms}", whoami, at_ms=_T0 + ms)


def test_a_scoring_pass_spans_at_most_a_second_of_event_time_and_256_events() -> None:
    """`chunks` cuts where the next event would stretch a pass beyond `span_ms`, and every `size` events."""
    times = [0, 400, 1_000, 1_001, 5_000, 5_000, 4_500, 3_999]
    assert [[ts_ms(e) - _T0 for e in c] for c in chunks([_at(t) for t in times], 256, 1_000)] == [
        [0, 400, 1_000], [1_001], [5_000, 5_000, 4_500], [3_999]]  # fmt: skip
    assert [len(c) for c in chunks([_at(t) for t in times], 3, None)] == [3, 3, 2]
    assert [len(c) for c in chunks([_at(0)] * 600)] == [256, 256, 88]


def test_what_a_probe_raises_does_not_depend_on_how_long_its_log_goes_on(tmp_path: Path) -> None:
    """A 4688 log reports no exits: hunted in one pass with a service start 10 minutes later, a command
    looked as if it ran until then, its score moved, and 5 of the 33 probes that alert went silent. Each
    pass now spans at most a second, as the stream scores: the same probes alert, naming the same tactics."""
    model = load_model()

    def alerts(tail_s: int) -> dict[str, set[str]]:
        found = {}
        for probe, path in write_probes(ATTACK_PROBES, tmp_path / str(tail_s), tail_s):
            found[probe.name] = {str(f.alert.tactic) for f in hunt_file(path, model, FileSummary(str(path)))}
        return found

    (tmp_path / "0").mkdir()
    (tmp_path / str(TAIL_S)).mkdir()
    prompt = alerts(0)
    assert sum(bool(t) for t in prompt.values()) >= len(ATTACK_PROBES) // 2  # the check has something to hold
    assert alerts(TAIL_S) == prompt
