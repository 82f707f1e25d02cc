"""Mapping of single Windows event records to BehaviorEvents (pure: inline records, no files)."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agents.sysmon.mapping import MappingConfig, Skip, SkipReason, map_record
from agents.sysmon.sequencing import PidLinker, Sequencer
from schemas.events import BehaviorEvent

SYSMON = "Microsoft-Windows-Sysmon/Operational"
HOST = "WKS01.Corp.Example"
DEVICE = "wks01.corp.example"
GUID = "{B669E388-4A98-5EE0-1704-000000000300}"
KEY = "b669e388-4a98-5ee0-1704-000000000300"
PARENT_GUID = "{b669e388-a0da-5edf-0b00-000000000300}"
TARGET_GUID = "7CF65FC7-6649-6165-0B00-000000001200"
SHA256 = "AA097FD0386A42779F2B6CA23BDAEBBCA99C589B477E0C7AC63C2678214D0F5B"
RUN_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Run"
HASHES = f"SHA1=C89B1460802DDA1C7F90526D52E37845E0C20873,MD5=49D503CA73BABD8FCCF522A611B539D1,SHA256={SHA256}"

# The event's own fields (Sysmon / Security spelling) for every mapped event ID.
FIELDS: dict[int, dict[str, Any]] = {
    1: {"ProcessGuid": GUID, "ProcessId": "2008", "Image": r"C:\Windows\System32\cmd.exe",
        "CommandLine": "cmd.exe /c whoami", "User": r"CORP\alice", "IntegrityLevel": "High", "Hashes": HASHES,
        "ParentProcessGuid": PARENT_GUID, "ParentProcessId": "696", "ParentImage": r"C:\Windows\explorer.exe",
        "ParentCommandLine": "explorer.exe", "CurrentDirectory": "C:\\"},
    3: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "Protocol": "tcp", "Initiated": "true",
        "SourceIp": "10.0.0.5", "SourcePort": "50000", "DestinationIp": "203.0.113.7",
        "DestinationPort": "443", "DestinationHostname": "c2.example"},
    5: {"ProcessGuid": GUID, "ProcessId": "2008", "Image": r"C:\x.exe"},
    7: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "ImageLoaded": r"C:\Windows\System32\perfos.dll",
        "Hashes": HASHES, "Signed": "true", "Signature": "Microsoft Windows"},
    8: {"SourceProcessGuid": GUID, "SourceImage": r"C:\evil.exe", "TargetProcessGuid": TARGET_GUID,
        "TargetImage": r"C:\Windows\System32\svchost.exe", "StartAddress": "0x000002BAA0700000"},
    10: {"SourceProcessGUID": GUID, "SourceImage": r"C:\Windows\System32\rundll32.exe",
         "TargetProcessGUID": TARGET_GUID, "TargetImage": r"C:\Windows\system32\lsass.exe",
         "GrantedAccess": "0x1fffff", "CallTrace": r"C:\Windows\SYSTEM32\ntdll.dll+909ba"},
    11: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "TargetFilename": r"C:\Temp\drop.dll"},
    12: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "EventType": "CreateKey",
         "TargetObject": RUN_KEY},
    13: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "EventType": "SetValue",
         "TargetObject": RUN_KEY + r"\evil", "Details": r"C:\evil.exe"},
    14: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "EventType": "RenameKey",
         "TargetObject": r"HKLM\SOFTWARE\Old", "NewName": r"HKLM\SOFTWARE\New"},
    22: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "QueryName": "arc.msn.com",
         "QueryResults": "type:  5 arc.msn.com.nsatc.net;::ffff:52.179.129.229;"},
    23: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "TargetFilename": r"C:\Temp\gone.txt", "Hashes": HASHES},
    26: {"ProcessGuid": GUID, "Image": r"C:\x.exe", "TargetFilename": r"C:\Temp\gone2.txt"},
    4688: {"NewProcessId": "0xde4", "NewProcessName": r"C:\Windows\System32\net.exe", "ProcessId": "0xb5c",
           "CommandLine": "net user x /add", "SubjectUserName": "admmig", "SubjectDomainName": "OFFSEC",
           "TargetUserName": "-", "MandatoryLabel": "S-1-16-12288",
           "ParentProcessName": r"C:\Windows\System32\cmd.exe"},
}
EXPECTED_KIND = {1: "process_start", 3: "network_connect", 5: "process_end", 7: "image_load",
                 8: "remote_thread", 10: "process_access", 11: "file_create", 12: "registry_set",
                 13: "registry_set", 14: "registry_set", 22: "dns_query", 23: "file_delete",
                 26: "file_delete", 4688: "process_start"}
UTC_TIME = "2021-04-26 15:03:05.976"
SYSTEM_TIME = "2021-04-26T15:03:05.9922302Z"


def _channel(event_id: int) -> str:
    return "Security" if event_id == 4688 else SYSMON


def flat(event_id: int, **overrides: Any) -> dict[str, Any]:
    """Winlogbeat/nxlog style: header and event fields side by side at the top level."""
    record: dict[str, Any] = {"EventID": event_id, "Channel": _channel(event_id), "Hostname": HOST,
                              "@timestamp": "2021-04-26T15:03:07.000Z", "RecordNumber": 4242,
                              **FIELDS[event_id]}
    if event_id != 4688:
        record["UtcTime"] = UTC_TIME
    record.update(overrides)
    return {key: value for key, value in record.items() if value is not None}


def nested(event_id: int, **data_overrides: Any) -> dict[str, Any]:
    """evtx-dump style, as the `evtx` package's records_json writes it."""
    data = {**FIELDS[event_id], **({"UtcTime": UTC_TIME} if event_id != 4688 else {}), **data_overrides}
    provider = "Microsoft-Windows-Security-Auditing" if event_id == 4688 else "Microsoft-Windows-Sysmon"
    return {"Event": {
        "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
        "System": {"Provider": {"#attributes": {"Name": provider}}, "EventID": event_id,
                   "TimeCreated": {"#attributes": {"SystemTime": SYSTEM_TIME}}, "EventRecordID": 4242,
                   "Channel": _channel(event_id), "Computer": HOST},
        "EventData": data,
    }}


def mapped(record: dict[str, Any], config: MappingConfig | None = None) -> BehaviorEvent:
    result = map_record(record, config or MappingConfig())
    assert isinstance(result, BehaviorEvent), f"expected an event, got {result}"
    return result


def skipped(record: dict[str, Any], config: MappingConfig | None = None) -> Skip:
    result = map_record(record, config or MappingConfig())
    assert isinstance(result, Skip), f"expected a skip, got {result}"
    return result


@pytest.mark.parametrize("style", [flat, nested], ids=["flattened", "evtx-dump"])
@pytest.mark.parametrize("event_id", sorted(FIELDS))
def test_every_listed_id_maps_in_both_styles(style: Any, event_id: int) -> None:
    event = mapped(style(event_id))
    assert event.payload.kind == EXPECTED_KIND[event_id]
    assert event.device_id == DEVICE
    assert event.platform == "windows"
    assert event.seq == 0  # the Sequencer stamps it later, in read order
    if event_id != 4688:
        assert event.process_key == KEY
        assert event.ts == datetime(2021, 4, 26, 15, 3, 5, 976000, tzinfo=UTC)  # Sysmon's UtcTime


def test_both_styles_of_one_record_give_the_same_event() -> None:
    for event_id in FIELDS:
        one, other = mapped(flat(event_id, TimeCreated=SYSTEM_TIME)), mapped(nested(event_id))
        assert one.payload == other.payload
        assert one.process_key == other.process_key
        assert one.event_id == other.event_id  # device + channel + record number


def test_process_create_fields() -> None:
    event = mapped(flat(1))
    payload = event.payload.model_dump()
    assert payload == {
        "kind": "process_start", "image": r"C:\Windows\System32\cmd.exe", "command_line": "cmd.exe /c whoami",
        "sha256": SHA256.lower(), "user": r"CORP\alice", "integrity_level": "High", "uid": None, "pid": 2008,
        "ppid": 696, "parent_image": r"C:\Windows\explorer.exe", "parent_command_line": "explorer.exe",
        "cwd": "C:\\",
    }
    assert event.parent_process_key == "b669e388-a0da-5edf-0b00-000000000300"
    assert event.image == r"C:\Windows\System32\cmd.exe"


def test_zero_parent_guid_means_unknown_parent() -> None:
    event = mapped(flat(1, ParentProcessGuid="{00000000-0000-0000-0000-000000000000}"))
    assert event.parent_process_key is None


def test_network_connect_fields_and_direction() -> None:
    payload = mapped(flat(3)).payload.model_dump()
    assert payload == {"kind": "network_connect", "dst_ip": "203.0.113.7", "dst_port": 443,
                       "src_ip": "10.0.0.5", "src_port": 50000, "protocol": "tcp", "outbound": True,
                       "dst_hostname": "c2.example"}
    inbound = mapped(flat(3, Initiated="false", Protocol="UDP", DestinationHostname="-")).payload.model_dump()
    assert (inbound["outbound"], inbound["protocol"], inbound["dst_hostname"]) == (False, "udp", None)


def test_process_access_decodes_hex_access_and_names_both_processes() -> None:
    event = mapped(flat(10))
    assert event.process_key == KEY  # `SourceProcessGUID` spelling (Sysmon 10) is accepted
    assert event.image == r"C:\Windows\System32\rundll32.exe"
    assert event.payload.model_dump() == {
        "kind": "process_access", "target_process_key": "7cf65fc7-6649-6165-0b00-000000001200",
        "target_image": r"C:\Windows\system32\lsass.exe", "granted_access": 0x1FFFFF,
        "call_trace": r"C:\Windows\SYSTEM32\ntdll.dll+909ba",
    }
    assert mapped(flat(10, GrantedAccess="1410")).payload.model_dump()["granted_access"] == 0x1410
    assert skipped(flat(10, GrantedAccess="full")).key == "missing_field:GrantedAccess"


def test_remote_thread_fields() -> None:
    event = mapped(nested(8))
    assert (event.process_key, event.image) == (KEY, r"C:\evil.exe")
    assert event.payload.model_dump() == {
        "kind": "remote_thread", "target_process_key": "7cf65fc7-6649-6165-0b00-000000001200",
        "target_image": r"C:\Windows\System32\svchost.exe", "start_address": "0x000002BAA0700000"}


def test_image_load_and_file_events() -> None:
    assert mapped(flat(7)).payload.model_dump() == {
        "kind": "image_load", "path": r"C:\Windows\System32\perfos.dll", "sha256": SHA256.lower(),
        "signed": True, "signer": "Microsoft Windows"}
    assert mapped(flat(11)).payload.model_dump() == {"kind": "file_create", "path": r"C:\Temp\drop.dll",
                                                     "sha256": None}
    assert mapped(flat(23)).payload.model_dump()["sha256"] == SHA256.lower()
    assert mapped(flat(26)).payload.model_dump() == {"kind": "file_delete", "path": r"C:\Temp\gone2.txt",
                                                     "sha256": None}


@pytest.mark.parametrize(("event_type", "operation"), [
    ("CreateKey", "create_key"), ("DeleteKey", "delete_key"), ("DeleteValue", "delete_value"),
])
def test_registry_12_operation_follows_event_type(event_type: str, operation: str) -> None:
    payload = mapped(flat(12, EventType=event_type)).payload.model_dump()
    assert payload["operation"] == operation
    if operation == "delete_value":
        assert (payload["key"], payload["value_name"]) == (RUN_KEY.rsplit("\\", 1)[0], "Run")
    else:
        assert (payload["key"], payload["value_name"]) == (RUN_KEY, None)


def test_registry_12_without_a_usable_event_type_is_skipped_not_guessed() -> None:
    assert skipped(flat(12, EventType="INFO")).key == "missing_field:EventType"
    assert skipped(flat(12, EventType=None)).key == "missing_field:EventType"


def test_registry_set_value_splits_the_value_name_and_rename_keeps_the_new_name() -> None:
    assert mapped(flat(13)).payload.model_dump() == {
        "kind": "registry_set", "key": RUN_KEY, "value_name": "evil", "data": r"C:\evil.exe",
        "operation": "set_value"}
    assert mapped(flat(14)).payload.model_dump() == {
        "kind": "registry_set", "key": r"HKLM\SOFTWARE\Old", "value_name": None, "data": r"HKLM\SOFTWARE\New",
        "operation": "rename_key"}


def test_dns_answers_are_plain_names_and_addresses() -> None:
    payload = mapped(flat(22)).payload.model_dump()
    assert payload == {"kind": "dns_query", "query": "arc.msn.com",
                       "answers": ("arc.msn.com.nsatc.net", "52.179.129.229")}


def test_security_4688_hex_ids_derived_key_and_no_parent_key() -> None:
    event = mapped(nested(4688))
    ts = datetime(2021, 4, 26, 15, 3, 5, 992230, tzinfo=UTC)
    assert event.ts == ts
    start_ns = int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000
    expected_key = hashlib.sha256(f"{DEVICE}:{0xDE4}:{start_ns}".encode()).hexdigest()[:32]
    assert event.process_key == expected_key
    assert event.parent_process_key is None  # not derivable from the record alone
    assert event.payload.model_dump() == {
        "kind": "process_start", "image": r"C:\Windows\System32\net.exe", "command_line": "net user x /add",
        "sha256": None, "user": r"OFFSEC\admmig", "integrity_level": "High", "uid": None, "pid": 0xDE4,
        "ppid": 0xB5C, "parent_image": r"C:\Windows\System32\cmd.exe", "parent_command_line": None,
        "cwd": None}
    assert skipped(flat(4688, NewProcessId="zzz")).key == "missing_field:NewProcessId"


def test_4688_time_comes_from_the_log_not_from_the_shipper() -> None:
    record = flat(4688, TimeCreated="2021-04-26T15:03:05.500Z")
    assert mapped(record).ts == datetime(2021, 4, 26, 15, 3, 5, 500000, tzinfo=UTC)
    assert mapped(flat(4688)).ts == datetime(2021, 4, 26, 15, 3, 7, tzinfo=UTC)  # only @timestamp left


@pytest.mark.parametrize("variant", [
    {"Hostname": None, "Computer": HOST},
    {"Hostname": None, "computer_name": HOST},
    {"Channel": "microsoft-windows-sysmon/operational"},
    {"Channel": "ForwardedEvents", "SourceName": "Microsoft-Windows-Sysmon"},
    {"EventID": "1"},
    {"EventID": {"#attributes": {"Qualifiers": 0}, "#text": 1}},
    {"EventId": 1, "EventID": None},
], ids=["Computer", "computer_name", "channel-case", "forwarded", "id-str", "id-nested", "id-case"])
def test_header_variants(variant: dict[str, Any]) -> None:
    event = mapped(flat(1, **variant))
    assert (event.payload.kind, event.device_id, event.process_key) == ("process_start", DEVICE, KEY)


def test_security_channel_in_lower_case_and_id_as_text() -> None:
    assert mapped(flat(4688, Channel="security", EventID="4688")).payload.kind == "process_start"


@pytest.mark.parametrize(("fields", "expected"), [
    ({"UtcTime": "2021-04-26 15:03:05.976", "TimeCreated": "2021-04-26T16:00:00Z"},
     "2021-04-26T15:03:05.976"),
    ({"UtcTime": None, "TimeCreated": "2021-04-26T16:00:00.25Z"}, "2021-04-26T16:00:00.25"),
    ({"UtcTime": None, "@timestamp": "2021-04-26T17:00:00.000Z"}, "2021-04-26T17:00:00"),
    ({"UtcTime": "not a time", "@timestamp": "2021-04-26T17:00:00.000Z"}, "2021-04-26T17:00:00"),
    ({"UtcTime": None, "TimeCreated": {"#attributes": {"SystemTime": "2021-04-26T18:00:00.1234567Z"}}},
     "2021-04-26T18:00:00.123456"),
    ({"UtcTime": None, "@timestamp": 1619449385250}, "2021-04-26T15:03:05.25"),  # Unix ms, as a number
    ({"UtcTime": None, "@timestamp": "1619449385"}, "2021-04-26T15:03:05"),  # Unix s, as digits
    ({"UtcTime": None, "@timestamp": 1619449385250000000}, "2021-04-26T15:03:05.25"),  # Unix ns
    ({"UtcTime": None, "TimeCreated": "/Date(1619449385250)/"}, "2021-04-26T15:03:05.25"),  # ConvertTo-Json
])
def test_time_field_precedence(fields: dict[str, Any], expected: str) -> None:
    event = mapped(flat(1, **fields))
    assert event.ts == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("event_id", [1, 10, 4688])
def test_splunk_exports_map_as_the_flattened_record(event_id: int) -> None:
    """Splunk's JSON export of an XmlWinEventLog event: `EventCode` (text), the channel behind the
    `source`'s `XmlWinEventLog:` (or a classic `WinEventLog:`), the time in `_time`."""
    expected = mapped(flat(event_id))
    for source in (f"XmlWinEventLog:{_channel(event_id)}", f"WinEventLog:{_channel(event_id)}"):
        when = {"@timestamp": None, "_time": "2021-04-26T15:03:07.000+00:00"}
        record = flat(event_id, EventID=None, Channel=None, EventCode=str(event_id), source=source,
                      sourcetype="XmlWinEventLog", **when)
        assert mapped(record) == expected
    prefixed = flat(event_id, Channel=f"XmlWinEventLog:{_channel(event_id)}")
    assert mapped(prefixed) == expected


def test_a_source_that_names_no_event_log_is_not_a_channel() -> None:
    record = flat(1, Channel=None, SourceName="nxlog", source=r"C:\logs\sysmon.log", sourcetype="json")
    assert skipped(record).key == "unsupported_channel:nxlog"


def test_nxlogs_local_event_time_dates_only_what_nothing_else_dates() -> None:
    """nxlog's `EventTime` (the host's local time, no zone) is read as UTC, and only when the record has
    no other time: a Sysmon event keeps its `UtcTime`, a 4688 with `TimeCreated` keeps that."""
    local = "2021-04-26 17:03:05"
    only_local = flat(4688, EventTime=local, **{"@timestamp": None})
    assert mapped(only_local).ts == datetime(2021, 4, 26, 17, 3, 5, tzinfo=UTC)
    assert mapped(flat(4688, EventTime=local, TimeCreated=SYSTEM_TIME)).ts.second == 5
    assert mapped(flat(4688, EventTime=local, TimeCreated=SYSTEM_TIME)).ts.hour == 15
    assert mapped(flat(1, EventTime=local, **{"@timestamp": None})).ts.hour == 15  # UtcTime first
    unreadable = flat(4688, EventTime="yesterday", **{"@timestamp": None})
    assert skipped(unreadable).key == "missing_field:UtcTime/TimeCreated"


@pytest.mark.parametrize("event_id", sorted(FIELDS))
def test_records_without_channel_or_provider_are_told_apart_by_their_own_fields(event_id: int) -> None:
    """An export that kept only the event's id and fields: every mapped Sysmon event carries `UtcTime`
    and a process GUID, Security's 4688 its `NewProcessName`; the event maps as with its channel (its id,
    a digest that names the channel, aside)."""
    without = mapped(flat(event_id, Channel=None)).model_dump(exclude={"event_id"})
    assert without == mapped(flat(event_id)).model_dump(exclude={"event_id"})


@pytest.mark.parametrize(("record", "key"), [
    (flat(1, Channel=None, UtcTime=None), "unsupported_channel:none"),  # no Sysmon signature
    (flat(1, Channel=None, ProcessGuid=None), "unsupported_channel:none"),
    (flat(4688, Channel=None, NewProcessName=None), "unsupported_channel:none"),
    ({**flat(1, Channel=None), "EventID": 4624}, "unsupported_channel:none"),
    (flat(1, Channel="Application"), "unsupported_channel:application"),  # a named channel is believed
], ids=["no-utctime", "no-guid", "4688-no-image", "other-id", "named-channel"])
def test_records_without_a_channel_and_without_either_signature_stay_unsupported(
    record: dict[str, Any], key: str
) -> None:
    assert skipped(record).key == key


def test_a_record_without_a_host_takes_the_fallback_device_only_when_it_names_none() -> None:
    fallback = MappingConfig(fallback_device_id="unnamed-host")
    assert mapped(flat(1, Hostname=None), fallback).device_id == "unnamed-host"
    assert mapped(flat(1), fallback).device_id == DEVICE
    configured = MappingConfig(device_id="lab-07", fallback_device_id="x")
    assert mapped(flat(1, Hostname=None), configured).device_id == "lab-07"


def test_winlogbeat6_event_data_nesting() -> None:
    record = {"event_id": 1, "log_name": SYSMON, "computer_name": HOST, "record_number": "3325219",
              "host": {"name": "WECserver"}, "@timestamp": "2019-03-19T17:15:16.131Z",
              "event_data": {**FIELDS[1], "UtcTime": UTC_TIME}}
    event = mapped(record)
    assert (event.device_id, event.process_key) == (DEVICE, KEY)  # the collector's name is not the device


def test_ecs_winlog_nesting() -> None:
    record = {"@timestamp": "2021-04-26T15:03:07Z", "host": {"name": "collector"},
              "winlog": {"event_id": "3", "channel": SYSMON, "computer_name": HOST, "record_id": 77,
                         "provider_name": "Microsoft-Windows-Sysmon", "event_data": {**FIELDS[3]}}}
    event = mapped(record)
    assert (event.payload.kind, event.device_id) == ("network_connect", DEVICE)
    assert event.ts == datetime(2021, 4, 26, 15, 3, 7, tzinfo=UTC)


def _dotted(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`record` flattened with dotted keys, as exporters of winlogbeat documents write them."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and key in ("winlog", "event_data"):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_ecs_and_winlogbeat6_records_flattened_with_dotted_keys_map_as_nested_ones() -> None:
    ecs = {"@timestamp": "2021-04-26T15:03:07Z", "host.name": "collector",
           "winlog": {"event_id": "3", "channel": SYSMON, "computer_name": HOST, "record_id": 77,
                      "provider_name": "Microsoft-Windows-Sysmon", "event_data": {**FIELDS[3]}}}
    beat6 = {"event_id": 1, "log_name": SYSMON, "computer_name": HOST, "record_number": "3325219",
             "@timestamp": "2019-03-19T17:15:16.131Z", "event_data": {**FIELDS[1], "UtcTime": UTC_TIME}}
    for record in (ecs, beat6):
        dotted = _dotted(record)
        assert "winlog" not in dotted and "event_data" not in dotted and len(dotted) > len(record)
        assert mapped(dotted) == mapped(record)
    assert mapped(_dotted(ecs)).payload.kind == "network_connect"


def test_dotted_and_whole_event_data_mixed_in_any_order_map_alike_and_leave_the_record_as_it_was() -> None:
    header = {"@timestamp": "2021-04-26T15:03:07Z", "winlog.event_id": "3", "winlog.channel": SYSMON,
              "winlog.computer_name": HOST, "winlog.record_id": 77}
    whole = {**FIELDS[3]}
    expected = mapped({**header, **{f"winlog.event_data.{k}": v for k, v in whole.items()}})
    extra = {"winlog.event_data.Image": "C:\\other.exe"}  # a dotted field the whole one overrides
    for given in (whole, json.dumps(whole)):
        first = {**header, **extra, "winlog.event_data": given}
        for record in (first, {**header, "winlog.event_data": given, **extra}):
            before = copy.deepcopy(record)
            assert mapped(record) == expected
            assert record == before


def test_records_with_a_flat_header_keep_their_shape_whatever_dotted_keys_they_carry() -> None:
    def read(record: dict[str, Any]) -> tuple[Any, ...]:
        event = mapped(record)
        return event.device_id, event.process_key, event.ts, event.payload

    flat_record = flat(1)
    assert read({**flat_record, "winlog.channel": SYSMON, "winlog.api": "wineventlog"}) == read(flat_record)
    beat6_flat = {"event_id": 1, "log_name": SYSMON, "computer_name": HOST, **FIELDS[1], "UtcTime": UTC_TIME}
    expected = read(beat6_flat)
    assert expected[3].kind == "process_start"
    assert read({**beat6_flat, "winlog.api": "x"}) == expected
    assert read({**beat6_flat, "event_data.Description": "x"}) == expected  # the top-level fields still read


def test_system_and_event_data_at_the_top_level() -> None:
    inner = nested(13)["Event"]
    event = mapped({"System": inner["System"], "EventData": inner["EventData"]})
    assert event.payload.kind == "registry_set"
    flat_dump = {**inner["System"], **inner["EventData"]}  # evtx-dump fields flattened, TimeCreated nested
    assert mapped(flat_dump).payload == event.payload


def test_evtx_data_list_and_azure_json_string_event_data() -> None:
    data_list = [{"#attributes": {"Name": name}, "#text": value} for name, value in FIELDS[11].items()]
    record = nested(11)
    record["Event"]["EventData"] = {"Data": data_list}
    assert mapped(record).payload.model_dump()["path"] == r"C:\Temp\drop.dll"
    azure = {"Provider": "Microsoft-Windows-Sysmon", "Channel": SYSMON, "Computer": "WORKSTATION5",
             "EventID": 12, "TimeGenerated": "2022-05-13T08:54:06.46Z",
             "EventData": '{"UtcTime":"2022-05-13T08:54:06.4580000Z","EventType":"CreateKey",'
                          '"ProcessGuid":"{f3329a35-9475-627d-4300-000000000600}","Image":"C:\\\\svchost.exe",'
                          '"TargetObject":"HKU\\\\.DEFAULT\\\\Software"}'}
    event = mapped(azure)
    assert (event.device_id, event.payload.model_dump()["operation"]) == ("workstation5", "create_key")


def test_device_id_is_normalised_host_name_or_configured() -> None:
    assert mapped(flat(1, Hostname=" _Weird Host/Name.local ")).device_id == "weird-host-name.local"
    assert mapped(flat(1), MappingConfig(device_id="lab-07")).device_id == "lab-07"
    assert mapped(flat(1, Hostname=None), MappingConfig(device_id="lab-07")).device_id == "lab-07"
    assert skipped(flat(1, Hostname=None)).reason is SkipReason.NO_DEVICE


@pytest.mark.parametrize(("record", "key"), [
    (flat(1, EventID=18), "unknown_event_id:sysmon:18"),
    (flat(1, EventID=4624, Channel="Security"), "unknown_event_id:security:4624"),
    (flat(1, Channel="Windows PowerShell"), "unsupported_channel:windows powershell"),
    (flat(1, EventID=None), "not_an_event"),
    ({"message": "hello"}, "not_an_event"),
    (flat(1, Image=None), "missing_field:Image"),
    (flat(1, Image=["C:\\x.exe"]), "missing_field:Image"),
    (flat(1, ProcessGuid=None), "missing_field:ProcessGuid"),
    (flat(3, DestinationPort="https"), "missing_field:DestinationPort"),
    (flat(3, DestinationPort="70000"), "invalid_field:payload.network_connect.dst_port"),
    (flat(3, Protocol="icmp"), "invalid_field:payload.network_connect.protocol"),
    (flat(1, UtcTime=None, **{"@timestamp": None}), "missing_field:UtcTime/TimeCreated"),
    (flat(1, UtcTime="1980-01-01 00:00:00.000"), "invalid_field:ts"),
    (flat(1, UtcTime=None, **{"@timestamp": "12"}), "invalid_field:ts"),  # 1970, out of the contract's range
    (flat(1, UtcTime=None, **{"@timestamp": True}), "missing_field:UtcTime/TimeCreated"),
    (flat(1, UtcTime=None, **{"@timestamp": -5}), "missing_field:UtcTime/TimeCreated"),
    (flat(1, UtcTime=None, **{"@timestamp": "\u00b2"}), "missing_field:UtcTime/TimeCreated"),  # not ASCII
    (flat(1, UtcTime=None, **{"@timestamp": 10**400}), "missing_field:UtcTime/TimeCreated"),  # beyond a float
    (flat(1, UtcTime=None, **{"@timestamp": "9" * 5000}), "missing_field:UtcTime/TimeCreated"),
    (flat(1, ProcessGuid="{has spaces in it}"), "invalid_field:process_key"),
    (flat(22, QueryName={"nested": "object"}), "missing_field:QueryName"),
])
def test_unmappable_records_become_typed_skips(record: dict[str, Any], key: str) -> None:
    assert skipped(record).key == key


def test_nul_characters_in_free_text_are_kept() -> None:
    event = mapped(flat(1, CommandLine="cmd\x00.exe /c"))
    assert event.payload.model_dump()["command_line"] == "cmd\x00.exe /c"


def test_event_ids_are_deterministic_and_distinct() -> None:
    assert mapped(flat(1)).event_id == mapped(flat(1)).event_id
    assert mapped(flat(1)).event_id != mapped(flat(1, RecordNumber=4243)).event_id
    assert mapped(flat(1)).event_id != mapped(flat(1), MappingConfig(device_id="other")).event_id
    no_number = flat(1, RecordNumber=None)
    by_line = [map_record(no_number, fallback_id=f"abc:{line}") for line in (1, 2)]
    assert isinstance(by_line[0], BehaviorEvent) and isinstance(by_line[1], BehaviorEvent)
    assert by_line[0].event_id != by_line[1].event_id
    assert mapped(no_number).event_id == mapped(dict(reversed(list(no_number.items())))).event_id  # content


def test_sequencer_numbers_each_device_in_read_order() -> None:
    sequencer = Sequencer()
    hosts = ["a", "b", "a", "a", "b"]
    events = [mapped(flat(11, Hostname=host, RecordNumber=n)) for n, host in enumerate(hosts)]
    stamped = [sequencer.stamp(event) for event in events]
    assert [(event.device_id, event.seq) for event in stamped] == [
        ("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1)]
    assert sequencer.next_seq() == {"a": 3, "b": 2}
    resumed = Sequencer(next_seq={"a": 3})
    assert resumed.stamp(events[0]).seq == 3


def _start_4688(pid: int, ppid: int, when: str, host: str = HOST) -> BehaviorEvent:
    return mapped(flat(4688, NewProcessId=hex(pid), ProcessId=hex(ppid), TimeCreated=when, Hostname=host,
                       RecordNumber=pid))


def test_4688_parent_is_linked_when_its_start_was_read_earlier() -> None:
    sequencer = Sequencer()
    parent = sequencer.stamp(_start_4688(0xB5C, 0x4, "2021-01-01T00:00:00Z"))
    child = sequencer.stamp(_start_4688(0xDE4, 0xB5C, "2021-01-01T00:00:01Z"))
    orphan = sequencer.stamp(_start_4688(0xF00, 0x999, "2021-01-01T00:00:02Z"))
    elsewhere = sequencer.stamp(_start_4688(0xF01, 0xB5C, "2021-01-01T00:00:03Z", host="other-host"))
    assert parent.parent_process_key is None
    assert child.parent_process_key == parent.process_key
    assert orphan.parent_process_key is None
    assert elsewhere.parent_process_key is None  # pids are per device


def test_4688_reused_pid_links_to_the_newest_process() -> None:
    sequencer = Sequencer()
    old = sequencer.stamp(_start_4688(0x100, 0x4, "2021-01-01T00:00:00Z"))
    new = sequencer.stamp(_start_4688(0x100, 0x4, "2021-01-01T01:00:00Z"))
    child = sequencer.stamp(_start_4688(0x200, 0x100, "2021-01-01T01:00:01Z"))
    assert old.process_key != new.process_key
    assert child.parent_process_key == new.process_key


def test_pid_table_is_bounded() -> None:
    linker = PidLinker(max_pids_per_device=2)
    first = linker.link(_start_4688(1, 4, "2021-01-01T00:00:00Z"))
    for pid in (2, 3):
        linker.link(_start_4688(pid, 4, "2021-01-01T00:00:00Z"))
    child = linker.link(_start_4688(9, 1, "2021-01-01T00:00:05Z"))
    assert first.process_key and child.parent_process_key is None  # pid 1 was forgotten
