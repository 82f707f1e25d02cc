"""Behaviour events: the one envelope every endpoint publishes to `ringfence.events.v1`.

Why one envelope with a payload discriminated by `kind`: Sysmon on Windows and the live Linux
source describe the same behaviours (a process starts, writes a file, connects out), and the tree
builder should not care which platform produced them. Processes are named by a stable
`process_key` so PID reuse never merges two processes.

Every constraint here is enforced by pydantic-core itself (patterns, lengths, ranges), with no
Python validator per event, so validating a batch stays one native call (see `schemas.codec`).
Free-text fields (paths, command lines, registry data) may contain NUL characters on purpose:
attackers hide registry keys behind NUL-prefixed names, and dropping them would hide the evidence.
Identifiers (device, event, process keys) are printable ASCII only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from schemas.common import (
    MAX_TEXT_CHARS,
    SCHEMA_VERSION,
    Contract,
    Count,
    DeviceId,
    EventTime,
    Identifier,
    Int64,
    NonEmptyText,
    Pid,
    Platform,
    Port,
    SchemaVersion,
    Seq,
    Sha256Hex,
    Text,
    UInt32,
)

__all__ = [
    "MAX_BATCH_EVENTS_HARD", "MAX_TEXT_CHARS", "PAYLOAD_TYPES", "SCHEMA_VERSION", "BehaviorEvent",
    "DeviceId", "DnsQuery", "EventBatch", "EventKind", "EventTime", "FileCreate", "FileDelete",
    "FileRename", "FileWrite", "Identifier", "ImageLoad", "NetworkConnect", "Payload", "Platform",
    "ProcessAccess", "ProcessEnd", "ProcessStart", "RegistrySet", "RemoteThread", "Script", "Sha256Hex",
]

MAX_BATCH_EVENTS_HARD = 100_000
"""Static ceiling for events in one batch; `Limits.max_events_per_batch` is the configurable one."""


class EventKind(StrEnum):
    """Every payload kind; the value is the `payload.kind` discriminator on the wire."""

    PROCESS_START = "process_start"
    PROCESS_END = "process_end"
    FILE_CREATE = "file_create"
    FILE_WRITE = "file_write"
    FILE_DELETE = "file_delete"
    FILE_RENAME = "file_rename"
    REGISTRY_SET = "registry_set"
    NETWORK_CONNECT = "network_connect"
    DNS_QUERY = "dns_query"
    IMAGE_LOAD = "image_load"
    PROCESS_ACCESS = "process_access"
    REMOTE_THREAD = "remote_thread"
    SCRIPT = "script"


class ProcessStart(Contract):
    """A process was created (Sysmon 1, Security 4688, Linux exec)."""

    kind: Literal["process_start"] = "process_start"
    image: NonEmptyText
    command_line: Text = ""
    sha256: Sha256Hex | None = None
    user: Text | None = None
    integrity_level: Text | None = None
    uid: UInt32 | None = None
    pid: Pid | None = None
    ppid: Pid | None = None
    parent_image: Text | None = None
    parent_command_line: Text | None = None
    cwd: Text | None = None


class ProcessEnd(Contract):
    """A process exited (Sysmon 5)."""

    kind: Literal["process_end"] = "process_end"
    pid: Pid | None = None
    exit_code: Int64 | None = None


class FileCreate(Contract):
    """A file was created (Sysmon 11)."""

    kind: Literal["file_create"] = "file_create"
    path: NonEmptyText
    sha256: Sha256Hex | None = None


class FileWrite(Contract):
    """A file's content was written."""

    kind: Literal["file_write"] = "file_write"
    path: NonEmptyText
    sha256: Sha256Hex | None = None
    bytes_written: Count | None = None


class FileDelete(Contract):
    """A file was deleted (Sysmon 23/26)."""

    kind: Literal["file_delete"] = "file_delete"
    path: NonEmptyText
    sha256: Sha256Hex | None = None


class FileRename(Contract):
    """A file was renamed or moved; `path` is the new name."""

    kind: Literal["file_rename"] = "file_rename"
    path: NonEmptyText
    old_path: NonEmptyText


class RegistrySet(Contract):
    """A registry key or value changed (Sysmon 12/13/14)."""

    kind: Literal["registry_set"] = "registry_set"
    key: NonEmptyText
    value_name: Text | None = None
    data: Text | None = None
    operation: Literal["set_value", "create_key", "delete_key", "delete_value", "rename_key"] = "set_value"


class NetworkConnect(Contract):
    """A network connection (Sysmon 3, Linux connect)."""

    kind: Literal["network_connect"] = "network_connect"
    dst_ip: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    dst_port: Port
    src_ip: Annotated[str, StringConstraints(max_length=64)] | None = None
    src_port: Port | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    outbound: bool = True
    dst_hostname: Text | None = None


class DnsQuery(Contract):
    """A DNS lookup and its answers (Sysmon 22)."""

    kind: Literal["dns_query"] = "dns_query"
    query: NonEmptyText
    answers: Annotated[tuple[Text, ...], Field(max_length=1024)] = ()


class ImageLoad(Contract):
    """A module/DLL or shared object was loaded (Sysmon 7)."""

    kind: Literal["image_load"] = "image_load"
    path: NonEmptyText
    sha256: Sha256Hex | None = None
    signed: bool | None = None
    signer: Text | None = None


class ProcessAccess(Contract):
    """One process opened another (Sysmon 10), e.g. an LSASS read."""

    kind: Literal["process_access"] = "process_access"
    target_process_key: Identifier | None = None
    target_image: NonEmptyText
    granted_access: UInt32
    call_trace: Text | None = None


class RemoteThread(Contract):
    """A thread was created in another process (Sysmon 8)."""

    kind: Literal["remote_thread"] = "remote_thread"
    target_process_key: Identifier | None = None
    target_image: NonEmptyText
    start_address: Annotated[str, StringConstraints(max_length=64)] | None = None


class Script(Contract):
    """Script content seen by an interpreter (PowerShell 4104, AMSI, shell)."""

    kind: Literal["script"] = "script"
    content: Text
    interpreter: Text | None = None
    path: Text | None = None


Payload = Annotated[
    ProcessStart
    | ProcessEnd
    | FileCreate
    | FileWrite
    | FileDelete
    | FileRename
    | RegistrySet
    | NetworkConnect
    | DnsQuery
    | ImageLoad
    | ProcessAccess
    | RemoteThread
    | Script,
    Field(discriminator="kind"),
]

PAYLOAD_TYPES: dict[EventKind, type[Contract]] = {
    EventKind(model.model_fields["kind"].default): model
    for model in (
        ProcessStart, ProcessEnd, FileCreate, FileWrite, FileDelete, FileRename, RegistrySet,
        NetworkConnect, DnsQuery, ImageLoad, ProcessAccess, RemoteThread, Script,
    )
}


class BehaviorEvent(Contract):
    """One thing one process did on one device, at device time `ts`."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    event_id: Identifier
    device_id: DeviceId
    seq: Seq
    ts: EventTime
    platform: Platform
    process_key: Identifier
    parent_process_key: Identifier | None = None
    image: Text | None = None
    payload: Payload

    @property
    def kind(self) -> EventKind:
        """The payload's kind, as an enum."""
        return EventKind(self.payload.kind)


class EventBatch(Contract):
    """What a shipper publishes (key = device_id): one device's events, so per-record cost is paid once."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    device_id: DeviceId
    first_seq: Seq
    last_seq: Seq
    events: Annotated[tuple[BehaviorEvent, ...], Field(min_length=1, max_length=MAX_BATCH_EVENTS_HARD)]

    @model_validator(mode="after")
    def _consistent(self) -> EventBatch:
        """Every event belongs to this device; first/last seq are the events' min/max."""
        for index, event in enumerate(self.events):
            if event.device_id != self.device_id:
                raise PydanticCustomError(
                    "device_mismatch",
                    "event {index} names device {event_device}, batch is for {batch_device}",
                    {"index": index, "event_device": event.device_id, "batch_device": self.device_id,
                     "event_id": event.event_id},
                )
        seqs = [event.seq for event in self.events]
        if (min(seqs), max(seqs)) != (self.first_seq, self.last_seq):
            raise PydanticCustomError(
                "seq_range_mismatch",
                "first_seq/last_seq {declared} differ from the events' {actual}",
                {"declared": f"{self.first_seq}..{self.last_seq}", "actual": f"{min(seqs)}..{max(seqs)}"},
            )
        return self

    @classmethod
    def of(cls, events: tuple[BehaviorEvent, ...] | list[BehaviorEvent]) -> EventBatch:
        """Build a batch from one device's events, computing device and seq range."""
        if not events:
            raise ValueError("a batch needs at least one event")
        seqs = [event.seq for event in events]
        return cls(
            device_id=events[0].device_id, first_seq=min(seqs), last_seq=max(seqs), events=tuple(events)
        )
