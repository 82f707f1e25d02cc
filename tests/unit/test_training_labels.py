"""Labelling lab recordings: the adversary view leads to the attack tree, the rest stays benign."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

from shared_data import shared_datasets

from agents.sysmon import load_events
from pipeline.training.labels import (
    Recording,
    extract_clues,
    label_events,
    load_catalog,
    raw_pid_keys,
)
from pipeline.training.rows import replay_rows
from schemas.events import ProcessStart


def _otrf() -> Path:
    return shared_datasets("otrf")


@functools.cache
def _catalog() -> tuple[Recording, ...]:
    return tuple(load_catalog(_otrf()))


def _recording(rel: str) -> Recording:
    (rec,) = [r for r in _catalog() if r.rel == rel]
    return rec


def _label(rec: Recording) -> tuple[dict[str, str], dict[str, ProcessStart]]:
    events = list(load_events(rec.path))
    with gzip.open(rec.path, "rb") as handle:
        pid_keys = raw_pid_keys(handle, extract_clues(rec.adversary_view).pids)
    labelled = label_events(events, rec, pid_keys)
    starts = {e.process_key: e.payload for e in events if isinstance(e.payload, ProcessStart)}
    return labelled.node_labels, starts


def test_comsvcs_minidump_recording_labels_the_dump_and_leaves_background_benign() -> None:
    rec = _recording("credential_access/psh_lsass_memory_dump_comsvcs.jsonl.gz")
    labels, starts = _label(rec)
    attack = [starts[k] for k in labels if k in starts]
    assert any(
        "comsvcs.dll" in s.command_line.lower() and "minidump" in s.command_line.lower() for s in attack
    )
    assert set(labels.values()) == {"CredentialAccess"}
    background = [s for k, s in starts.items() if k not in labels]
    assert all("minidump" not in s.command_line.lower() for s in background)


def test_meterpreter_pids_and_prompts_reach_the_attack_shell_and_its_commands() -> None:
    rec = _recording("defense_evasion/cmd_stop_event_logging_controlset_minint_key.jsonl.gz")
    labels, starts = _label(rec)
    lines = [starts[k].command_line.lower() for k in labels if k in starts]
    assert any("reg" in line and "minint" in line for line in lines)
    assert any(starts[k].image.lower().endswith("cmd.exe") for k in labels if k in starts)


def test_attack_rows_carry_the_tactic_and_background_rows_are_benign() -> None:
    rec = _recording("defense_evasion/cmd_bitsadmin_download_psh_script.jsonl.gz")
    events = list(load_events(rec.path))
    labelled = label_events(events, rec)
    block = replay_rows(events, labelled.node_labels, rec.rel)
    assert "DefenseEvasion" in block.labels
    assert "Benign" in block.labels
    assert len(block.matrix) == len(block.labels) == len(block.trees)


def test_clues_from_prompts_meterpreter_execute_empire_table_and_tool_scripts() -> None:
    view = "\n".join(
        [
            'C:\\Users\\bob>ntdsutil "ac i ntds" "ifm" "create full C:\\Windows\\Temp\\x" q q',
            "meterpreter > execute -f auditpol.exe -H -a '/clear /y'",
            "Process 4392 created.",
            "WE8XYD3K ps 172.18.39.5  WS5  *CORP\\bob  powershell  5972   5/0.0    2020-09-22",
            "(Empire: WE8XYD3K) > shell reg save HKLM\\sam sam",
            'TOOL> powershell_execute "C:\\Windows\\System32\\rundll32.exe comsvcs.dll, MiniDump 1 x full"',
        ]
    )
    clues = extract_clues(view)
    executables = {c.executable for c in clues.commands}
    assert {"ntdsutil", "auditpol", "reg", "rundll32"} <= executables
    assert {4392, 5972} <= clues.pids


def test_a_view_that_matches_nothing_leaves_the_recording_unlabelled() -> None:
    rec = _recording("credential_access/psh_lsass_memory_dump_comsvcs.jsonl.gz")
    events = list(load_events(rec.path))
    unrelated = Recording(
        rec.path,
        rec.rel,
        rec.dataset_id,
        rec.tactic,
        rec.techniques,
        rec.title,
        "C:\\Users\\x>definitelynotatool.exe --frobnicate widgets",
    )
    labelled = label_events(events, unrelated)
    assert not labelled.found
    assert labelled.node_labels == {}


def test_a_bare_command_or_reused_pid_outside_the_attack_lineage_stays_benign() -> None:
    # The operator typed `systeminfo` and `whoami` into a Meterpreter shell; later the lab host's own
    # `netsh trace stop` ran gatherNetworkInfo.vbs, which also runs `systeminfo` (and `cmd`s that
    # reuse a printed pid). Only the shell's `systeminfo` is the attack.
    rec = _recording("compound_LSASS_campaign_01/metasploit_logonpasswords_lsass_memory_dump.jsonl.gz")
    labels, starts = _label(rec)
    attack = [starts[k].command_line.lower() for k in labels if k in starts]
    background = [s.command_line.lower() for k, s in starts.items() if k not in labels]
    assert any(line.strip() == "systeminfo" for line in attack)
    assert any(line.strip() == "systeminfo" for line in background)
    assert not any("gathernetworkinfo" in line or "config\\" in line for line in attack)
    assert any("whoami" in line for line in attack) and any("tasklist" in line for line in attack)
