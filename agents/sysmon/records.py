"""One view of a Windows event record, whatever shipper wrote it.

The same Sysmon event reaches us in several shapes, all seen in real data:

- flattened (winlogbeat-style, nxlog, OTRF): `EventID`, `Channel`, `Hostname`, the event's own
  fields at the top level;
- evtx-dump (the `evtx` package, `evtx_dump -o jsonl`): `Event.System` + `Event.EventData`, or the
  same two objects at the top level, with `EventID` possibly `{"#text": 1}` and `TimeCreated` as
  `{"#attributes": {"SystemTime": ...}}`;
- winlogbeat 6: `event_id`, `log_name`, `computer_name`, fields nested in `event_data`;
- winlogbeat 7+/ECS: the same under `winlog`;
- Azure Monitor `WindowsEvent`: `EventData` is a JSON *string*.

`normalise` turns any of them into a `WinRecord`: the header (id, channel, provider, computer,
record id, time) plus the event fields with lower-cased names, because shippers also disagree on
case (`SourceProcessGUID` vs `SourceProcessGuid`). It never raises on odd input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agents.sysmon.values import parse_int, text

_COMPUTER_KEYS = ("computer", "hostname", "computer_name", "computername")
_CHANNEL_KEYS = ("channel", "log_name", "eventlog")
_PROVIDER_KEYS = ("provider", "providername", "provider_name", "sourcename", "source_name")
_RECORD_ID_KEYS = ("eventrecordid", "recordnumber", "record_number", "record_id")
_TIME_KEYS = ("timecreated", "@timestamp", "timegenerated")
_EVENT_ID_KEYS = ("eventid", "event_id")
_NESTED_PARTS = frozenset({"System", "EventData", "UserData", "#attributes"})


@dataclass(frozen=True, slots=True)
class WinRecord:
    """A Windows event reduced to what the mapping needs; `fields` keys are lower case."""

    event_id: int | None
    channel: str | None
    provider: str | None
    computer: str | None
    record_id: str | None
    time_created: object  # raw: text, or evtx's {"#attributes": {"SystemTime": ...}}
    fields: Mapping[str, Any]

    def get(self, name: str) -> Any:
        """An event field by its lower-case name (None when absent)."""
        return self.fields.get(name)


def normalise(record: Mapping[str, Any]) -> WinRecord:
    """Read any supported shape; unknown shapes give a WinRecord with `event_id` None."""
    event = record.get("Event")
    if isinstance(event, Mapping):
        record = event
    system = record.get("System")
    if isinstance(system, Mapping):
        return _from_system(system, record)
    winlog = record.get("winlog")
    if isinstance(winlog, Mapping):
        return _from_nested(winlog, winlog.get("event_data"), record)
    if isinstance(record.get("event_data"), Mapping):
        return _from_nested(record, record.get("event_data"), record)
    return _from_flat(record)


def _lower_keys(items: Mapping[str, Any]) -> dict[str, Any]:
    return {key.lower(): value for key, value in items.items() if isinstance(key, str)}


def _first(fields: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = fields.get(key)
        if value is not None:
            return value
    return None


def _event_id(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("#text", value.get("value"))
    return parse_int(value)


def _provider(value: Any) -> str | None:
    if isinstance(value, Mapping):
        attributes = value.get("#attributes")
        value = attributes.get("Name") if isinstance(attributes, Mapping) else value.get("name")
    return text(value)


def _record_id(value: Any) -> str | None:
    return text(value)


def _from_flat(record: Mapping[str, Any]) -> WinRecord:
    fields = _lower_keys(record)
    event_data = fields.get("eventdata")
    if isinstance(event_data, str | Mapping):
        fields.update(_event_data(event_data))
    return _header(fields, fields)


def _header(header: Mapping[str, Any], fields: Mapping[str, Any]) -> WinRecord:
    return WinRecord(
        event_id=_event_id(_first(header, _EVENT_ID_KEYS)),
        channel=text(_first(header, _CHANNEL_KEYS)),
        provider=_provider(_first(header, _PROVIDER_KEYS)),
        computer=text(_first(header, _COMPUTER_KEYS)),
        record_id=_record_id(_first(header, _RECORD_ID_KEYS)),
        time_created=_first(header, _TIME_KEYS),
        fields=fields,
    )


def _from_system(system: Mapping[str, Any], record: Mapping[str, Any]) -> WinRecord:
    fields = _lower_keys({key: value for key, value in record.items() if key not in _NESTED_PARTS})
    for part in ("EventData", "UserData"):
        data = record.get(part)
        if isinstance(data, str | Mapping):
            fields.update(_event_data(data))
    return _header(_lower_keys(system), fields)


def _from_nested(header: Mapping[str, Any], event_data: Any, record: Mapping[str, Any]) -> WinRecord:
    fields = _event_data(event_data) if isinstance(event_data, str | Mapping) else {}
    merged = _lower_keys(header)
    if "timecreated" not in merged and "@timestamp" in record:
        merged["@timestamp"] = record["@timestamp"]
    return _header(merged, fields)


def _event_data(data: str | Mapping[str, Any]) -> dict[str, Any]:
    """EventData as name -> value, from a mapping, a JSON string, or evtx's `Data` list."""
    if isinstance(data, str):
        return _json_event_data(data)
    items = data.get("Data")
    if isinstance(items, list):
        return _data_list(items)
    flat = _lower_keys(data)
    if len(flat) == 1:  # UserData wraps its fields in one element named after the event
        (only,) = flat.values()
        if isinstance(only, Mapping):
            return _lower_keys(only)
    return flat


def _json_event_data(data: str) -> dict[str, Any]:
    if not data.lstrip().startswith("{"):
        return {}
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return _lower_keys(parsed) if isinstance(parsed, dict) else {}


def _data_list(items: list[Any]) -> dict[str, Any]:
    """`[{"#attributes": {"Name": "Image"}, "#text": "C:\\x.exe"}, ...]` as a flat mapping."""
    result: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, Mapping):
            continue
        attributes = item.get("#attributes")
        name = attributes.get("Name") if isinstance(attributes, Mapping) else None
        if isinstance(name, str):
            result[name.lower()] = item.get("#text")
    return result


def time_text(value: Any) -> Any:
    """evtx writes TimeCreated as `{"#attributes": {"SystemTime": ...}}`; others as text."""
    if isinstance(value, Mapping):
        attributes = value.get("#attributes")
        if isinstance(attributes, Mapping):
            return attributes.get("SystemTime")
        return value.get("SystemTime")
    return value
