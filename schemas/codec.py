"""Bytes <-> contract models: orjson + one pydantic validation call per record, with hard limits.

Why this shape: the pipeline decodes every event a fleet produces, so a batch of 1,000 events must
cost one parse and one native validation, not 1,000 of each. Everything that can go wrong with
hostile bytes becomes a `schemas.errors.ContractError` subclass carrying the field path and ids, so
the caller can dead-letter the record and carry on.

Decoding a record, in order:
1. size: more than `Limits.max_record_bytes` -> LimitExceeded, before parsing anything;
2. parse with orjson (invalid UTF-8, depth > 1024, NaN, trailing bytes -> DecodeError);
3. duplicate keys -> DuplicateKey (cheap for our own encoder's output, see `_rawjson`);
4. version: a major other than 1 -> UnsupportedVersion;
5. event count against `Limits` -> LimitExceeded;
6. one `model_validate_json` call on the bytes (pydantic-core's own parser is faster than
   validating the orjson objects). A record of a *newer minor* version that fails only because of
   fields we do not know has them dropped and is validated once more (forward compatibility);
7. string lengths against `Limits` -> LimitExceeded (on the typed model for events: cheaper).
The parsed objects from step 2 are kept to name field paths and ids in errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from schemas import _rawjson, _textlimits
from schemas._rawjson import Path
from schemas.common import Contract
from schemas.devices import DeviceRecord, Heartbeat
from schemas.errors import (
    ContractError,
    DecodeError,
    DeviceMismatch,
    Issue,
    LimitExceeded,
    UnknownKind,
    UnsupportedVersion,
    ValidationFailed,
)
from schemas.events import SCHEMA_VERSION, BehaviorEvent, EventBatch

M = TypeVar("M", bound=Contract)
RecordValue = bytes | bytearray | memoryview

_VERSION = re.compile(r"^([0-9]{1,4})\.([0-9]{1,4})$")
_OUR_MAJOR, _OUR_MINOR = (int(part) for part in SCHEMA_VERSION.split("."))


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits applied around validation; exceeding one raises LimitExceeded."""

    max_record_bytes: int = 1 << 20  # one Kafka record value
    max_events_per_batch: int = 5000
    max_string_chars: int = 64 * 1024  # any one JSON string (keys too)


DEFAULT_LIMITS = Limits()


def encode(model: BaseModel) -> bytes:
    """Compact JSON of any contract model (datetimes ISO 8601, `Z` for UTC)."""
    return orjson.dumps(model.model_dump(mode="json"))


def encode_batch(batch: EventBatch) -> bytes:
    """The record value a shipper publishes (key: the batch's device_id)."""
    return encode(batch)


def encode_event(event: BehaviorEvent) -> bytes:
    """A single event as a record value (readers accept it via `decode_record`)."""
    return encode(event)


def decode(model_type: type[M], data: RecordValue, limits: Limits = DEFAULT_LIMITS) -> M:
    """Decode and validate one record of any contract; raises a ContractError subclass."""
    raw, obj = _load(data, limits)
    if len(raw) > limits.max_string_chars and _rawjson.has_long_string(obj, limits.max_string_chars):
        path, length = _rawjson.first_long_string(obj, limits.max_string_chars)
        raise _string_too_long(length, limits, path, **_rawjson.ids_at(obj, path))
    return validate(model_type, raw, obj)


def decode_batch(data: RecordValue, limits: Limits = DEFAULT_LIMITS) -> EventBatch:
    """Decode an EventBatch record (one validation call for all its events)."""
    raw, obj = _load(data, limits)
    return _batch(raw, obj, limits)


def decode_event(data: RecordValue, limits: Limits = DEFAULT_LIMITS) -> BehaviorEvent:
    """Decode a single BehaviorEvent record."""
    raw, obj = _load(data, limits)
    return _event(raw, obj, limits)


def decode_record(data: RecordValue, limits: Limits = DEFAULT_LIMITS) -> EventBatch:
    """Decode what the events topic carries: a batch, or a single event wrapped as a batch of one."""
    raw, obj = _load(data, limits)
    if "events" in obj:
        return _batch(raw, obj, limits)
    return EventBatch.of([_event(raw, obj, limits)])


def validate(model_type: type[M], raw: bytes, obj: dict[str, Any]) -> M:
    """One validation call; a newer-minor record gets a second one without its unknown fields.

    Strict JSON mode: times must be RFC 3339 strings (not epoch numbers), integers not floats.
    """
    try:
        return model_type.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        if not model_type.forward_compatible or not _drop_fields_of_newer_versions(exc, obj):
            raise _translate(exc, obj) from None
    try:
        return model_type.model_validate_json(orjson.dumps(obj), strict=True)
    except ValidationError as exc:
        raise _translate(exc, obj) from None


def _load(data: RecordValue, limits: Limits) -> tuple[bytes, dict[str, Any]]:
    raw = _rawjson.as_bytes(data)
    if len(raw) > limits.max_record_bytes:
        raise LimitExceeded(
            f"record is {len(raw)} bytes, limit {limits.max_record_bytes}",
            limit="max_record_bytes", actual=len(raw), maximum=limits.max_record_bytes,
        )
    obj = _rawjson.parse_object(raw)
    _rawjson.check_duplicates(raw, obj)
    _check_version(obj)
    return raw, obj


def _batch(raw: bytes, obj: dict[str, Any], limits: Limits) -> EventBatch:
    events = obj.get("events")
    if isinstance(events, list) and len(events) > limits.max_events_per_batch:
        raise LimitExceeded(
            f"batch has {len(events)} events, limit {limits.max_events_per_batch}",
            limit="max_events_per_batch", actual=len(events), maximum=limits.max_events_per_batch,
            field_path="events", **_rawjson.ids_at(obj, ()),
        )
    batch = validate(EventBatch, raw, obj)
    if len(raw) > limits.max_string_chars:  # N characters need at least N bytes
        _check_event_strings(batch.events, limits, prefix=("events",))
    return batch


def _event(raw: bytes, obj: dict[str, Any], limits: Limits) -> BehaviorEvent:
    event = validate(BehaviorEvent, raw, obj)
    if len(raw) > limits.max_string_chars:
        _check_event_strings((event,), limits, prefix=())
    return event


def _check_event_strings(events: tuple[BehaviorEvent, ...], limits: Limits, *, prefix: Path) -> None:
    """String limit on validated events: their free-text fields are few and cheap to read."""
    found = _textlimits.first_long_text(events, limits.max_string_chars)
    if found is None:
        return
    index, path, length = found
    where = (*prefix, index, *path) if prefix else path
    ids = {"device_id": events[index].device_id, "event_id": events[index].event_id}
    raise _string_too_long(length, limits, where, **ids)


def _string_too_long(length: int, limits: Limits, path: Path, **ids: str | None) -> LimitExceeded:
    return LimitExceeded(
        f"string of {length} characters, limit {limits.max_string_chars}",
        limit="max_string_chars", actual=length, maximum=limits.max_string_chars,
        field_path=_rawjson.dotted(path), **ids,
    )


def _version_of(value: object) -> tuple[int, int] | None:
    match = _VERSION.match(value) if isinstance(value, str) else None
    return (int(match[1]), int(match[2])) if match else None


def _is_newer(value: object) -> bool:
    version = _version_of(value)
    return version is not None and version[0] == _OUR_MAJOR and version[1] > _OUR_MINOR


def _check_version(obj: dict[str, Any]) -> None:
    version = _version_of(obj.get("schema_version"))
    if version is not None and version[0] != _OUR_MAJOR:
        raise UnsupportedVersion(
            f"schema_version {obj['schema_version']} is not readable (this code reads {_OUR_MAJOR}.x)",
            version=str(obj["schema_version"]), field_path="schema_version", **_rawjson.ids_at(obj, ()),
        )


def _drop_fields_of_newer_versions(exc: ValidationError, obj: dict[str, Any]) -> bool:
    """Delete unknown fields that sit inside a newer-minor record; True if any was dropped."""
    dropped = False
    for error in exc.errors(include_url=False, include_input=False):
        if error["type"] != "extra_forbidden" or not error["loc"]:
            continue
        parent, _, newer = _rawjson.walk(obj, tuple(error["loc"][:-1]), _is_newer)
        if newer and isinstance(parent, dict) and error["loc"][-1] in parent:
            del parent[error["loc"][-1]]
            dropped = True
    return dropped


def _translate(exc: ValidationError, obj: dict[str, Any]) -> ContractError:
    """Map pydantic's error list to one typed ContractError; every issue is kept in `issues`.

    The class follows the most telling issue, not the first: a record from a newer major or with
    an unknown kind usually has other problems too, and those are consequences.
    """
    errors = exc.errors(include_url=False, include_input=False)
    paths = [_issue_path(obj, error) for error in errors]
    issues = tuple(
        Issue(_rawjson.dotted(path), error["type"], error["msg"])
        for path, error in zip(paths, errors, strict=True)
    )
    ranks = [_rank(error, path, obj) for error, path in zip(errors, paths, strict=True)]
    index = ranks.index(min(ranks))
    path, rank = paths[index], ranks[index]
    context = {"field_path": _rawjson.dotted(path), **_rawjson.ids_at(obj, path)}
    message = f"{len(issues)} problem(s), first: {issues[index]}"
    if rank == _DECODE:
        return DecodeError(message, **context)
    if rank == _VERSION_RANK:
        version = str(_rawjson.walk(obj, path, _is_newer)[0])[:16]
        return UnsupportedVersion(message, version=version, **context)
    return _FAILURES[rank](message, issues=issues, **context)


_DECODE, _VERSION_RANK, _KIND, _DEVICE, _OTHER = range(5)
_FAILURES: dict[int, type[ValidationFailed]] = {
    _KIND: UnknownKind, _DEVICE: DeviceMismatch, _OTHER: ValidationFailed,
}


def _rank(error: ErrorDetails, path: Path, obj: dict[str, Any]) -> int:
    """Lower is more telling: undecodable, then another major version, unknown kind, device mismatch."""
    kind = error["type"]
    if kind == "json_invalid":
        return _DECODE
    if kind == "string_pattern_mismatch" and path and path[-1] == "schema_version":
        if _version_of(_rawjson.walk(obj, path, _is_newer)[0]) is not None:
            return _VERSION_RANK
    return {"union_tag_invalid": _KIND, "device_mismatch": _DEVICE}.get(kind, _OTHER)


def _issue_path(obj: dict[str, Any], error: ErrorDetails) -> Path:
    ctx = error.get("ctx") or {}
    if error["type"] == "device_mismatch" and "index" in ctx:
        return ("events", int(ctx["index"]), "device_id")
    loc = tuple(error["loc"])
    if not loc:
        return loc
    _, path, _ = _rawjson.walk(obj, loc[:-1], _is_newer)
    return (*path, loc[-1])


def decode_device_value(value: RecordValue) -> DeviceRecord | Heartbeat:
    """Decode a `ringfence.devices.v1` value: two contracts share that key; only records carry
    `effective_mode`."""
    try:
        probe = orjson.loads(value)
    except orjson.JSONDecodeError:
        probe = None
    if isinstance(probe, dict) and "effective_mode" in probe:
        return decode(DeviceRecord, value)
    return decode(Heartbeat, value)
