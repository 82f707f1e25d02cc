"""Sysmon ingestion on real recordings: the six .evtx samples and OTRF JSON Lines (../shared/datasets).

These files are not in the repository; CI has `../shared` beside the checkout. `RINGFENCE_SHARED`
overrides the location. A missing directory fails the tests (a skip would hide the gap).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_data import shared_datasets

from agents.sysmon import FileStats, load_events, load_many
from schemas.events import BehaviorEvent, ProcessAccess, ProcessStart


def _shared() -> Path:
    return shared_datasets()


def _evtx(prefix: str) -> Path:
    (match,) = sorted((_shared() / "evtx-samples").glob(f"{prefix}*.evtx"))
    return match


def _otrf(relative: str) -> Path:
    return _shared() / "otrf" / relative


def _load(path: Path) -> tuple[list[BehaviorEvent], FileStats]:
    stats = FileStats()
    return list(load_events(path, stats=stats)), stats


def _starts(events: list[BehaviorEvent]) -> dict[str, BehaviorEvent]:
    return {event.process_key: event for event in events if isinstance(event.payload, ProcessStart)}


def _image_name(event: BehaviorEvent) -> str:
    assert isinstance(event.payload, ProcessStart)
    return event.payload.image.rsplit("\\", 1)[-1].lower()


def _tree_edges(events: list[BehaviorEvent]) -> set[tuple[str, str]]:
    """(parent image, child image) for every process start whose parent start is in the same data."""
    starts = _starts(events)
    return {
        (_image_name(starts[event.parent_process_key]), _image_name(event))
        for event in starts.values()
        if event.parent_process_key in starts
    }


EVTX_EXPECTED = {
    "TA0002": ({"process_start": 1}, {}),
    "TA0003": ({"process_start": 2},
               {"unknown_event_id:security:4656": 3, "unknown_event_id:security:4720": 1}),
    "TA0005": ({"process_start": 2}, {}),
    "TA0006": ({"process_start": 2, "image_load": 1, "file_create": 1, "process_access": 1},
               {"unknown_event_id:sysmon:18": 9}),
    "TA0007": ({"process_start": 2}, {"unknown_event_id:security:1102": 1}),
    "TA0040": ({"process_start": 3}, {"unknown_event_id:security:1102": 1}),
}


@pytest.mark.parametrize("prefix", sorted(EVTX_EXPECTED))
def test_evtx_samples_counts_per_kind(prefix: str) -> None:
    events, stats = _load(_evtx(prefix))
    kinds, skips = EVTX_EXPECTED[prefix]
    assert stats.format == "evtx"
    assert dict(stats.by_kind) == kinds
    assert {reason: stats.skipped[reason] for reason in skips} == skips
    assert stats.read == stats.emitted + stats.skipped_total
    assert [event.seq for event in events] == list(range(len(events)))  # one device per file here


def test_evtx_lsass_dump_tree_and_access() -> None:
    events, _ = _load(_evtx("TA0006"))
    assert ("powershell.exe", "rundll32.exe") in _tree_edges(events)
    rundll32 = next(event for event in _starts(events).values() if _image_name(event) == "rundll32.exe")
    (access,) = (event for event in events if isinstance(event.payload, ProcessAccess))
    assert isinstance(access.payload, ProcessAccess)
    assert access.process_key == rundll32.process_key  # ProcessGuid links the access to its process
    assert access.payload.target_image.lower().endswith("lsass.exe")
    assert access.payload.granted_access == 0x1FFFFF
    assert access.device_id == "fs03.offsec.lan"


def test_evtx_4688_tree_is_linked_through_pids() -> None:
    events, _ = _load(_evtx("TA0003"))
    assert _tree_edges(events) == {("net.exe", "net1.exe")}
    net1 = next(event for event in events if _image_name(event) == "net1.exe")
    assert isinstance(net1.payload, ProcessStart)
    assert (net1.payload.pid, net1.payload.ppid) == (0xF30, 0xDE4)


def test_all_evtx_samples_share_one_sequence_per_device() -> None:
    stats: list[FileStats] = []
    events = list(load_many(sorted((_shared() / "evtx-samples").glob("*.evtx")), stats=stats))
    assert len(stats) == 6
    per_device: dict[str, list[int]] = {}
    for event in events:
        per_device.setdefault(event.device_id, []).append(event.seq)
    assert per_device["fs03.offsec.lan"] == list(range(len(per_device["fs03.offsec.lan"])))
    assert set(per_device) == {"fs02.offsec.lan", "fs03.offsec.lan", "win10-02.offsec.lan"}


def test_otrf_sysmon_and_4688_trees() -> None:
    events, stats = _load(_otrf("defense_evasion/cmd_mshta_vbscript_execute_psh.jsonl.gz"))
    assert stats.read == 1127
    assert stats.by_kind["process_start"] == 6  # 3 from Sysmon 1, 3 from Security 4688
    edges = _tree_edges(events)
    assert {("mshta.exe", "powershell.exe"), ("powershell.exe", "conhost.exe")} <= edges
    sysmon_children = [event for event in _starts(events).values()
                       if _image_name(event) == "powershell.exe" and "-" in event.process_key]
    assert sysmon_children and all(event.parent_process_key for event in sysmon_children)


@pytest.mark.parametrize(("relative", "kinds"), [
    ("defense_evasion/covenant_lolbin_wuauclt_createremotethread.jsonl.gz",
     {"process_start", "process_end", "network_connect", "image_load", "remote_thread", "process_access",
      "file_create", "file_delete", "registry_set", "dns_query"}),
    ("defense_evasion/reg_disable_eventlog_service_startuptype_modification_via_registry.jsonl.gz",
     {"process_start", "process_end", "image_load", "process_access", "file_create", "file_delete",
      "registry_set", "dns_query", "network_connect"}),
    ("defense_evasion/empire_enable_rdp.jsonl.gz",  # winlogbeat 6: fields nested in `event_data`
     {"process_start", "image_load", "process_access", "registry_set", "network_connect", "file_create"}),
])
def test_otrf_counts_per_kind(relative: str, kinds: set[str]) -> None:
    events, stats = _load(_otrf(relative))
    assert {kind for kind, count in stats.by_kind.items() if count > 0} >= kinds
    assert stats.read == stats.emitted + stats.skipped_total
    assert not [reason for reason in stats.skipped if reason.startswith(("malformed", "invalid_field"))]
    assert len({event.event_id for event in events}) == len(events)  # ids are unique
    for device in {event.device_id for event in events}:
        seqs = [event.seq for event in events if event.device_id == device]
        assert seqs == list(range(len(seqs)))  # per-device seq in read order, no gaps


def test_otrf_remote_thread_names_its_source() -> None:
    events, _ = _load(_otrf("defense_evasion/covenant_lolbin_wuauclt_createremotethread.jsonl.gz"))
    assert ("wuauclt.exe", "notepad.exe") in _tree_edges(events)
    (thread,) = (event for event in events if event.payload.kind == "remote_thread")
    assert (thread.image or "").lower().endswith("wuauclt.exe")


def test_reingesting_gives_the_same_ids(tmp_path: Path) -> None:
    source = _otrf("defense_evasion/cmd_mshta_vbscript_execute_psh.jsonl.gz")
    first, second = _load(source)[0], _load(source)[0]
    assert [event.event_id for event in first] == [event.event_id for event in second]
    output = tmp_path / "events.jsonl"
    output.write_bytes(b"".join(event.model_dump_json().encode() + b"\n" for event in first))
    reread, stats = _load(output)  # our own output format is detected and read back as recorded
    assert stats.format == "behavior_events"
    assert reread == first
