"""Per-event-ID builders: which Windows fields fill which BehaviorEvent fields.

Each builder reads one normalised record (`WinRecord`, fields by their usual spelling) and returns a
`Draft`: the acting process, its parent when the record names it, and the payload as a plain dict
(validated once, together with the envelope, in `agents.sysmon.mapping`). A field the event cannot
do without raises `MissingField`; the mapping turns it into a counted skip.

Decisions worth knowing:
- Sysmon GUIDs are the process keys, normalised to lower case without braces.
- Security 4688 has no GUID: its key hashes device, new pid and the event time (the creation
  time), like the Linux source. Its parent key cannot be derived from the record alone (the
  parent's start time is not in it); `agents.sysmon.sequencing.PidLinker` fills it when the
  parent's own 4688 was read earlier in the same stream.
- Sysmon 12 without a usable `EventType` (some nxlog exports overwrite it with `INFO`) is skipped:
  guessing "create" would invent deletions' opposites.
- Sysmon 3 is mapped as written: `Destination*` -> dst, `Initiated` -> outbound.
- Sysmon 14 (rename) keeps the old name in `key` and the new one in `data`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents.sysmon.records import WinRecord
from agents.sysmon.values import (
    dns_answers,
    epoch_ns,
    integrity_from_label,
    normalise_guid,
    opt_text,
    parse_bool,
    parse_hex,
    parse_int,
    pid_process_key,
    sha256_from_hashes,
    split_registry_value,
    text,
)


class MissingField(Exception):
    """A field the event cannot do without is absent or unreadable (internal control flow)."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


@dataclass(frozen=True, slots=True)
class Context:
    """What a builder may need beyond the record: the resolved device and event time."""

    device_id: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class Draft:
    """A BehaviorEvent before envelope ids and `seq` are attached."""

    process_key: str
    payload: dict[str, Any]
    image: str | None = None
    parent_process_key: str | None = None


Builder = Callable[[WinRecord, Context], Draft]


def _required(record: WinRecord, name: str) -> str:
    value = opt_text(record.get(name))
    if value is None:
        raise MissingField(name)
    return value


def _guid(record: WinRecord, name: str) -> str:
    guid = normalise_guid(record.get(name, name.replace("Guid", "GUID")))
    if guid is None:
        raise MissingField(name)
    return guid


def _opt(record: WinRecord, name: str) -> str | None:
    return opt_text(record.get(name))


def _sysmon_draft(record: WinRecord, payload: dict[str, Any]) -> Draft:
    """Most Sysmon events: the actor is ProcessGuid/Image."""
    return Draft(_guid(record, "ProcessGuid"), payload, image=_opt(record, "Image"))


def process_create(record: WinRecord, _: Context) -> Draft:
    """Sysmon 1."""
    image = _required(record, "Image")
    payload = {
        "kind": "process_start",
        "image": image,
        "command_line": text(record.get("CommandLine")) or "",
        "sha256": sha256_from_hashes(record.get("Hashes")),
        "user": _opt(record, "User"),
        "integrity_level": _opt(record, "IntegrityLevel"),
        "pid": parse_int(record.get("ProcessId")),
        "ppid": parse_int(record.get("ParentProcessId")),
        "parent_image": _opt(record, "ParentImage"),
        "parent_command_line": _opt(record, "ParentCommandLine"),
        "cwd": _opt(record, "CurrentDirectory"),
    }
    parent = normalise_guid(record.get("ParentProcessGuid"))
    return Draft(_guid(record, "ProcessGuid"), payload, image=image, parent_process_key=parent)


def network_connect(record: WinRecord, _: Context) -> Draft:
    """Sysmon 3."""
    port = parse_int(record.get("DestinationPort"))
    if port is None:
        raise MissingField("DestinationPort")
    protocol = (_opt(record, "Protocol") or "tcp").lower()
    return _sysmon_draft(record, {
        "kind": "network_connect",
        "dst_ip": _required(record, "DestinationIp"),
        "dst_port": port,
        "src_ip": _opt(record, "SourceIp"),
        "src_port": parse_int(record.get("SourcePort")),
        "protocol": protocol,
        "outbound": parse_bool(record.get("Initiated")) is not False,
        "dst_hostname": _opt(record, "DestinationHostname"),
    })


def process_terminate(record: WinRecord, _: Context) -> Draft:
    """Sysmon 5."""
    return _sysmon_draft(record, {"kind": "process_end", "pid": parse_int(record.get("ProcessId"))})


def image_load(record: WinRecord, _: Context) -> Draft:
    """Sysmon 7."""
    return _sysmon_draft(record, {
        "kind": "image_load",
        "path": _required(record, "ImageLoaded"),
        "sha256": sha256_from_hashes(record.get("Hashes")),
        "signed": parse_bool(record.get("Signed")),
        "signer": _opt(record, "Signature"),
    })


def _source_process(record: WinRecord) -> tuple[str, str | None]:
    """Sysmon 8/10 name the actor Source*; 10 spells it `GUID` in some versions (case-folded here)."""
    return _guid(record, "SourceProcessGuid"), _opt(record, "SourceImage")


def create_remote_thread(record: WinRecord, _: Context) -> Draft:
    """Sysmon 8."""
    key, image = _source_process(record)
    return Draft(key, {
        "kind": "remote_thread",
        "target_process_key": normalise_guid(record.get("TargetProcessGuid", "TargetProcessGUID")),
        "target_image": _required(record, "TargetImage"),
        "start_address": _opt(record, "StartAddress"),
    }, image=image)


def process_access(record: WinRecord, _: Context) -> Draft:
    """Sysmon 10."""
    key, image = _source_process(record)
    access = parse_hex(record.get("GrantedAccess"))
    if access is None:
        raise MissingField("GrantedAccess")
    return Draft(key, {
        "kind": "process_access",
        "target_process_key": normalise_guid(record.get("TargetProcessGuid", "TargetProcessGUID")),
        "target_image": _required(record, "TargetImage"),
        "granted_access": access,
        "call_trace": _opt(record, "CallTrace"),
    }, image=image)


def file_create(record: WinRecord, _: Context) -> Draft:
    """Sysmon 11."""
    return _sysmon_draft(record, {
        "kind": "file_create",
        "path": _required(record, "TargetFilename"),
        "sha256": sha256_from_hashes(record.get("Hashes")),
    })


def file_delete(record: WinRecord, _: Context) -> Draft:
    """Sysmon 23 (archived) and 26 (logged only)."""
    return _sysmon_draft(record, {
        "kind": "file_delete",
        "path": _required(record, "TargetFilename"),
        "sha256": sha256_from_hashes(record.get("Hashes")),
    })


_REGISTRY_OPERATIONS = {
    "createkey": "create_key",
    "deletekey": "delete_key",
    "deletevalue": "delete_value",
    "createvalue": "set_value",
    "setvalue": "set_value",
}


def _registry(record: WinRecord, operation: str, data: str | None) -> Draft:
    target = _required(record, "TargetObject")
    key, value_name = target, None
    if operation in ("set_value", "delete_value"):
        key, value_name = split_registry_value(target)
    return _sysmon_draft(record, {
        "kind": "registry_set", "key": key, "value_name": value_name, "data": data, "operation": operation,
    })


def registry_add_delete(record: WinRecord, _: Context) -> Draft:
    """Sysmon 12: create or delete, as its EventType says."""
    operation = _REGISTRY_OPERATIONS.get((_opt(record, "EventType") or "").strip().lower())
    if operation is None:
        raise MissingField("EventType")
    return _registry(record, operation, None)


def registry_set_value(record: WinRecord, _: Context) -> Draft:
    """Sysmon 13."""
    return _registry(record, "set_value", text(record.get("Details")))


def registry_rename(record: WinRecord, _: Context) -> Draft:
    """Sysmon 14: the new name goes into `data`."""
    return _registry(record, "rename_key", _opt(record, "NewName"))


def dns_query(record: WinRecord, _: Context) -> Draft:
    """Sysmon 22."""
    return _sysmon_draft(record, {
        "kind": "dns_query",
        "query": _required(record, "QueryName"),
        "answers": dns_answers(record.get("QueryResults")),
    })


def _security_user(record: WinRecord) -> str | None:
    """4688 names the new process's account in Target* when it differs from the creator's."""
    for prefix in ("target", "subject"):
        name = _opt(record, f"{prefix}UserName")
        if name is not None:
            domain = _opt(record, f"{prefix}DomainName")
            return f"{domain}\\{name}" if domain else name
    return None


def security_process_create(record: WinRecord, context: Context) -> Draft:
    """Security 4688: ids are hex (`0x1a2c`); the key is derived, the parent key is not."""
    pid = parse_hex(record.get("NewProcessId"))
    if pid is None:
        raise MissingField("NewProcessId")
    image = _required(record, "NewProcessName")
    payload = {
        "kind": "process_start",
        "image": image,
        "command_line": text(record.get("CommandLine")) or "",
        "user": _security_user(record),
        "integrity_level": integrity_from_label(record.get("MandatoryLabel")),
        "pid": pid,
        "ppid": parse_hex(record.get("ProcessId")),
        "parent_image": _opt(record, "ParentProcessName"),
    }
    key = pid_process_key(context.device_id, pid, epoch_ns(context.ts))
    return Draft(key, payload, image=image)


SYSMON_BUILDERS: dict[int, Builder] = {
    1: process_create,
    3: network_connect,
    5: process_terminate,
    7: image_load,
    8: create_remote_thread,
    10: process_access,
    11: file_create,
    12: registry_add_delete,
    13: registry_set_value,
    14: registry_rename,
    22: dns_query,
    23: file_delete,
    26: file_delete,
}
SECURITY_BUILDERS: dict[int, Builder] = {4688: security_process_create}
