"""Pure mapping: one Windows event record -> one BehaviorEvent, or a typed `Skip` saying why not.

Nothing here reads files or keeps state, so the same function serves the live agent, offline
hunting and training. Two things need state and are done by the caller in read order
(`agents.sysmon.sequencing`): the per-device `seq` (events come back with `seq=0`) and the parent
key of Security 4688 events.

Supported: Sysmon 1, 3, 5, 7, 8, 10, 11, 12, 13, 14, 22, 23, 26 and Security 4688. Anything else is
a `Skip(UNKNOWN_EVENT_ID)` or `Skip(UNSUPPORTED_CHANNEL)`, never an exception.

Identity:
- `device_id` is the configured one, else the record's host name normalised
  (`values.device_id_from_host`). Host names are identifiers only, never model features.
- `event_id` is deterministic, so ingesting the same log twice gives the same ids: a hash of
  device, channel and the log's record number when the record has one (evtx, nxlog, winlogbeat),
  else of device and the reader's `fallback_id` (content digest + line), else of the content.
- `ts`: Sysmon's own `UtcTime` first (when the event happened), then the log's `TimeCreated`,
  then the shipper's `@timestamp`/`TimeGenerated`/`_time`, and last nxlog's `EventTime`, a local time
  read as UTC, only for a record nothing else dates (`records._TIME_KEYS`). ISO 8601 text, a Unix time
  (a number or digits, s/ms/us/ns) and .NET's `/Date(<ms>)/` are read (`values.parse_ts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError

from agents.sysmon.payloads import SECURITY_BUILDERS, SYSMON_BUILDERS, Builder, Context, Draft, MissingField
from agents.sysmon.records import WinRecord, normalise, time_text
from agents.sysmon.values import device_id_from_host, parse_ts, stable_id
from schemas.events import BehaviorEvent, Platform

SYSMON_CHANNEL = "microsoft-windows-sysmon/operational"
SYSMON_PROVIDER = "microsoft-windows-sysmon"
SECURITY_CHANNEL = "security"
SECURITY_PROVIDER = "microsoft-windows-security-auditing"
_MAX_DETAIL_CHARS = 64


class Origin(StrEnum):
    """Which log an event comes from; decides how its EventID is read."""

    SYSMON = "sysmon"
    SECURITY = "security"


class SkipReason(StrEnum):
    """Why a record did not become an event (the first part of a stats key)."""

    NOT_AN_EVENT = "not_an_event"  # no readable EventID: not a Windows event record
    UNSUPPORTED_CHANNEL = "unsupported_channel"  # neither Sysmon nor Security
    UNKNOWN_EVENT_ID = "unknown_event_id"  # a Sysmon/Security event we do not map
    NO_DEVICE = "no_device"  # no host name and no configured device id
    MISSING_FIELD = "missing_field"  # a field the event needs is absent or unreadable
    INVALID_FIELD = "invalid_field"  # a value the contract rejects (range, pattern, type)


@dataclass(frozen=True, slots=True)
class Skip:
    """A record that was read but not mapped; `key` is what statistics count."""

    reason: SkipReason
    detail: str = ""

    @property
    def key(self) -> str:
        """`reason:detail`, e.g. `unknown_event_id:sysmon:18` or `missing_field:Image`."""
        return f"{self.reason}:{self.detail}" if self.detail else str(self.reason)


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """Settings of the mapping: `device_id` overrides the host name found in records;
    `fallback_device_id` names the device of a record that names no host (`ringfence hunt` passes one
    per file, so that a log exported without host names is still hunted instead of skipped whole)."""

    device_id: str | None = None
    fallback_device_id: str | None = None


DEFAULT_CONFIG = MappingConfig()
MappingResult = BehaviorEvent | Skip


def map_record(
    record: Mapping[str, Any], config: MappingConfig = DEFAULT_CONFIG, fallback_id: str | None = None
) -> MappingResult:
    """Map one Windows event record (any supported shape) to a BehaviorEvent with `seq=0`."""
    win = normalise(record)
    selected = _select_builder(win)
    if isinstance(selected, Skip):
        return selected
    origin, builder = selected
    device_id = config.device_id or device_id_from_host(win.computer) or config.fallback_device_id
    if device_id is None:
        return Skip(SkipReason.NO_DEVICE)
    ts = _event_time(win, origin)
    if ts is None:
        return Skip(SkipReason.MISSING_FIELD, "UtcTime/TimeCreated")
    try:
        draft = builder(win, Context(device_id, ts))
    except MissingField as missing:
        return Skip(SkipReason.MISSING_FIELD, missing.field)
    event_id = _event_id(win, origin, device_id, fallback_id, record)
    return _validate(draft, event_id, device_id, ts)


def classify(win: WinRecord) -> Origin | None:
    """Sysmon or Security, by channel or provider (forwarded logs keep the provider). A record that names
    neither (an export that kept only the event's fields) is told by its own fields: Security's 4688
    carries `NewProcessName`, and every Sysmon event its `UtcTime` and a process GUID; anything else
    stays unclassified."""
    channel = (win.channel or "").lower()
    provider = (win.provider or "").lower()
    if channel == SYSMON_CHANNEL or provider == SYSMON_PROVIDER:
        return Origin.SYSMON
    if channel == SECURITY_CHANNEL or provider == SECURITY_PROVIDER:
        return Origin.SECURITY
    if channel or provider:
        return None
    if win.event_id in SECURITY_BUILDERS and win.get("NewProcessName") is not None:
        return Origin.SECURITY
    if win.event_id in SYSMON_BUILDERS and win.get("UtcTime") is not None and _has_guid(win):
        return Origin.SYSMON
    return None


_GUID_FIELDS = ("ProcessGuid", "SourceProcessGuid")  # `get` matches any case (Sysmon 10's SourceProcessGUID)


def _has_guid(win: WinRecord) -> bool:
    return any(win.get(name) is not None for name in _GUID_FIELDS)


def _select_builder(win: WinRecord) -> tuple[Origin, Builder] | Skip:
    if win.event_id is None:
        return Skip(SkipReason.NOT_AN_EVENT)
    origin = classify(win)
    if origin is None:
        channel = (win.channel or win.provider or "none").lower()[:_MAX_DETAIL_CHARS]
        return Skip(SkipReason.UNSUPPORTED_CHANNEL, channel)
    builders = SYSMON_BUILDERS if origin is Origin.SYSMON else SECURITY_BUILDERS
    builder = builders.get(win.event_id)
    if builder is None:
        return Skip(SkipReason.UNKNOWN_EVENT_ID, f"{origin}:{win.event_id}")
    return origin, builder


def _event_time(win: WinRecord, origin: Origin) -> datetime | None:
    if origin is Origin.SYSMON:
        parsed = parse_ts(win.get("UtcTime"))
        if parsed is not None:
            return parsed
    return parse_ts(time_text(win.time_created))


def _event_id(
    win: WinRecord, origin: Origin, device_id: str, fallback_id: str | None, record: Mapping[str, Any]
) -> str:
    channel = (win.channel or origin).lower()
    if win.record_id:
        return stable_id(device_id, channel, win.record_id)
    if fallback_id:
        return stable_id(device_id, "line", fallback_id)
    try:
        content = orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        content = repr(sorted(record.items(), key=lambda item: str(item[0])))
    return stable_id(device_id, "content", content)


def _validate(draft: Draft, event_id: str, device_id: str, ts: datetime) -> MappingResult:
    """One validation call for envelope and payload; contract violations become a Skip."""
    try:
        return BehaviorEvent.model_validate({
            "event_id": event_id,
            "device_id": device_id,
            "seq": 0,
            "ts": ts,
            "platform": Platform.WINDOWS,
            "process_key": draft.process_key,
            "parent_process_key": draft.parent_process_key,
            "image": draft.image,
            "payload": draft.payload,
        })
    except ValidationError as exc:
        return Skip(SkipReason.INVALID_FIELD, _first_location(exc))


def _first_location(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    location = ".".join(str(part) for part in errors[0]["loc"]) if errors else "record"
    return location[:_MAX_DETAIL_CHARS]
