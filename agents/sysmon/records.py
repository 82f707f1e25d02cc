"""One view of a Windows event record, whatever shipper wrote it.

The same Sysmon event reaches us in several shapes, all seen in real data:

- flattened (winlogbeat-style, nxlog, OTRF): `EventID`, `Channel`, `Hostname`, the event's own
  fields at the top level;
- evtx-dump (the `evtx` package, `evtx_dump -o jsonl`): `Event.System` + `Event.EventData`, or the
  same objects at the top level, with `EventID` possibly `{"#text": 1}` and `TimeCreated` as
  `{"#attributes": {"SystemTime": ...}}`;
- winlogbeat 6: `event_id`, `log_name`, `computer_name`, fields nested in `event_data` (or with dotted
  keys, `event_data.Image`, as flattening exporters write it);
- winlogbeat 7+/ECS: the same under `winlog`, nested or dotted (`winlog.event_id`,
  `winlog.event_data.Image`, ...);
- Azure Monitor `WindowsEvent`: `EventData` is a JSON *string*;
- Splunk exports (`XmlWinEventLog`/`WinEventLog` events as JSON): `EventCode`, the channel after the
  `source`'s `XmlWinEventLog:` prefix, the time in `_time`;
- nxlog: a flat record dated only by `EventTime`, the host's local time (read last: see `_TIME_KEYS`).

`normalise` turns any of them into a `WinRecord`: the header (id, channel, provider, computer,
record id, time) plus the event fields. Event fields are looked up by their usual spelling first
and case-insensitively only on a miss (shippers disagree on case: `SourceProcessGUID` vs
`SourceProcessGuid`); folding every key of every record up front cost more than all the rest of
the mapping. Nothing here raises on odd input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from agents.sysmon.values import parse_int, text

# Header fields: the spellings shippers use, matched exactly (folding every record's keys to find a
# header that is simply absent would cost more than the whole mapping).
_COMPUTER_KEYS = ("Computer", "Hostname", "computer_name", "ComputerName", "computer", "hostname")
_CHANNEL_KEYS = ("Channel", "log_name", "EventLog", "channel")
_SPLUNK_SOURCE_KEYS = ("source", "sourcetype")  # read only with a `(Xml)WinEventLog:<channel>` value
_SPLUNK_PREFIXES = ("xmlwineventlog:", "wineventlog:")
_PROVIDER_KEYS = ("Provider", "SourceName", "ProviderName", "provider_name", "source_name", "provider")
_RECORD_ID_KEYS = ("EventRecordID", "RecordNumber", "record_number", "record_id", "EventRecordId")
_TIME_KEYS = ("TimeCreated", "@timestamp", "TimeGenerated", "timeCreated", "_time", "EventTime")
"""The log's time of the event, first present wins. nxlog's `EventTime` is the host's local time without a
zone (taken as UTC, as every naive time is): it comes last, so it dates only a record nothing else dates
(nxlog's Security events; Sysmon's carry `UtcTime`, which `mapping` reads first). Times of such a log keep
their order and spacing; they may be off by the host's zone."""
_EVENT_ID_KEYS = ("EventID", "event_id", "EventId", "eventid", "eventId", "EventCode")
_NESTED_PARTS = frozenset({"System", "EventData", "UserData", "#attributes"})


class Fields:
    """Read-only field access by usual spelling, falling back to a case-insensitive match."""

    __slots__ = ("_folded", "_items")

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = items
        self._folded: dict[str, Any] | None = None

    def get(self, name: str, *alternates: str) -> Any:
        """The value of `name` or an alternate spelling (exact first, then any case), or None."""
        value = self._items.get(name)
        if value is not None:
            return value
        for alternate in alternates:
            value = self._items.get(alternate)
            if value is not None:
                return value
        if self._folded is None:
            self._folded = {key.lower(): item for key, item in self._items.items() if isinstance(key, str)}
        return self._folded.get(name.lower())

    def first(self, names: tuple[str, ...]) -> Any:
        """The first of `names` present with exactly that spelling."""
        for name in names:
            value = self._items.get(name)
            if value is not None:
                return value
        return None


class WinRecord:
    """A Windows event reduced to what the mapping needs."""

    __slots__ = ("channel", "computer", "event_id", "fields", "provider", "record_id", "time_created")

    def __init__(self, header: Fields, fields: Fields) -> None:
        self.event_id = _event_id(header.first(_EVENT_ID_KEYS))
        self.channel = _channel(header)
        self.provider = _provider(header.first(_PROVIDER_KEYS))
        self.computer = text(header.first(_COMPUTER_KEYS))
        self.record_id = text(header.first(_RECORD_ID_KEYS))
        self.time_created: object = header.first(_TIME_KEYS)  # text, or evtx's {"#attributes": ...}
        self.fields = fields

    def get(self, name: str, *alternates: str) -> Any:
        """An event field by its usual spelling or known alternates (any case matches), else None."""
        return self.fields.get(name, *alternates)


def normalise(record: Mapping[str, Any]) -> WinRecord:
    """Read any supported shape; unknown shapes give a WinRecord with `event_id` None."""
    record = _nested_again(record)
    event = record.get("Event")
    if isinstance(event, Mapping):
        record = event
    system = record.get("System")
    if isinstance(system, Mapping):
        return _from_system(system, record)
    winlog = record.get("winlog")
    if isinstance(winlog, Mapping):
        return _from_nested(winlog, winlog.get("event_data"), record)
    event_data = record.get("event_data")
    if isinstance(event_data, Mapping):
        return _from_nested(record, event_data, record)
    return _from_flat(record)


def _nested_again(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A winlogbeat record an exporter flattened with dotted keys, nested again as winlogbeat writes it;
    any other record as it is (a flat `EventID` header, or a nested `winlog` or `event_data`, keeps its
    shape as before). The input is never changed.

    - ECS (`winlog.event_id`, `winlog.channel`, ..., `winlog.event_data.Image`): `winlog` -> `event_data`.
      A `winlog.event_data` given whole (a mapping or a JSON string) wins over dotted fields of the same
      name, in whatever order they come.
    - winlogbeat 6 (`event_id`, `log_name`, ... and `event_data.Image`): `event_data`, which also takes
      the fields left at the top level (a dotted field of the same name wins)."""
    if "EventID" in record or "winlog" in record:
        return record
    if "winlog.event_id" in record:
        return _ecs_nested(record)
    if "event_id" in record and "event_data" not in record:
        plain, dotted = _split(record, "event_data.")
        if dotted:  # fields left at the top level are read too (the dotted ones win)
            return {**plain, "event_data": {**plain, **dotted}}
    return record


def _ecs_nested(record: Mapping[str, Any]) -> dict[str, Any]:
    out, winlog = _split(record, "winlog.")
    winlog, fields = _split(winlog, "event_data.")
    whole = winlog.get("event_data")
    winlog["event_data"] = {**fields, **(_event_data(whole) if isinstance(whole, str | Mapping) else {})}
    out["winlog"] = winlog
    return out


def _split(record: Mapping[Any, Any], prefix: str) -> tuple[dict[Any, Any], dict[str, Any]]:
    """(`record`'s other keys, its keys that start with `prefix`, the prefix cut off)."""
    other: dict[Any, Any] = {}
    cut: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(key, str) and key.startswith(prefix):
            cut[key[len(prefix) :]] = value
        else:
            other[key] = value
    return other, cut


def _from_flat(record: Mapping[str, Any]) -> WinRecord:
    fields = Fields(record)
    event_data = record.get("EventData")
    if isinstance(event_data, str | Mapping):  # Azure WindowsEvent: the fields are a JSON string
        fields = Fields({**record, **_event_data(event_data)})
    return WinRecord(fields, fields)


def _from_system(system: Mapping[str, Any], record: Mapping[str, Any]) -> WinRecord:
    fields = {key: value for key, value in record.items() if key not in _NESTED_PARTS}
    for part in ("EventData", "UserData"):
        data = record.get(part)
        if isinstance(data, str | Mapping):
            fields.update(_event_data(data))
    return WinRecord(Fields(system), Fields(fields))


def _from_nested(header: Mapping[str, Any], event_data: Any, record: Mapping[str, Any]) -> WinRecord:
    fields = _event_data(event_data) if isinstance(event_data, str | Mapping) else {}
    merged = dict(header)
    if "@timestamp" in record:
        merged.setdefault("@timestamp", record["@timestamp"])
    return WinRecord(Fields(merged), Fields(fields))


def _channel(header: Fields) -> str | None:
    """The channel, with a Splunk source type's `XmlWinEventLog:`/`WinEventLog:` prefix taken off; a
    Splunk export's `source` names the channel only so (any other `source` is not read)."""
    channel = text(header.first(_CHANNEL_KEYS))
    if channel is None:
        for key in _SPLUNK_SOURCE_KEYS:
            value = text(header.first((key,)))
            if value is not None and value.lower().startswith(_SPLUNK_PREFIXES):
                channel = value
                break
    if channel is not None:
        folded = channel.lower()
        for prefix in _SPLUNK_PREFIXES:
            if folded.startswith(prefix):
                return channel[len(prefix) :]
    return channel


def _event_id(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("#text", value.get("value"))
    return parse_int(value)


def _provider(value: Any) -> str | None:
    if isinstance(value, Mapping):
        attributes = value.get("#attributes")
        value = attributes.get("Name") if isinstance(attributes, Mapping) else value.get("name")
    return text(value)


def _event_data(data: str | Mapping[str, Any]) -> dict[str, Any]:
    """EventData as name -> value, from a mapping, a JSON string, or evtx's `Data` list."""
    if isinstance(data, str):
        return _json_event_data(data)
    items = data.get("Data")
    if isinstance(items, list):
        return _data_list(items)
    if len(data) == 1:  # UserData wraps its fields in one element named after the event
        (only,) = data.values()
        if isinstance(only, Mapping):
            return {key: value for key, value in only.items() if key != "#attributes"}
    return dict(data)


def _json_event_data(data: str) -> dict[str, Any]:
    if not data.lstrip().startswith("{"):
        return {}
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _data_list(items: list[Any]) -> dict[str, Any]:
    """`[{"#attributes": {"Name": "Image"}, "#text": "C:\\x.exe"}, ...]` as a flat mapping."""
    result: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, Mapping):
            continue
        attributes = item.get("#attributes")
        name = attributes.get("Name") if isinstance(attributes, Mapping) else None
        if isinstance(name, str):
            result[name] = item.get("#text")
    return result


def time_text(value: Any) -> Any:
    """evtx writes TimeCreated as `{"#attributes": {"SystemTime": ...}}`; others as text."""
    if isinstance(value, Mapping):
        attributes = value.get("#attributes")
        if isinstance(attributes, Mapping):
            return attributes.get("SystemTime")
        return value.get("SystemTime")
    return value
