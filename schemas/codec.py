"""Bytes <-> contract models: orjson + one pydantic validation call per record, with hard limits.

Why this shape: the pipeline decodes every event a fleet produces, so a batch of 1,000 events must
cost one `orjson.loads` and one native `model_validate`, not 1,000 of each. Everything that can go
wrong with hostile bytes is turned into a `schemas.errors.ContractError` subclass carrying the field
path and ids, so the caller can dead-letter the record and carry on.

Decoding a record, in order:
1. size: more than `Limits.max_record_bytes` -> LimitExceeded, before parsing anything;
2. parse with orjson (invalid UTF-8, depth > 1024, NaN, trailing bytes -> DecodeError);
3. duplicate keys -> DuplicateKey. Fast check: our own encoder's output re-encodes byte-identical,
   so only records that do not (other producers, hand-written JSON) pay a second, stdlib parse;
4. version: a major other than 1 -> UnsupportedVersion;
5. counts and string lengths against `Limits` -> LimitExceeded;
6. one validation call. A record of a *newer minor* version that fails only because of fields we
   do not know has those fields dropped and is validated once more (forward compatibility).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from schemas.errors import (
    ContractError,
    DecodeError,
    DeviceMismatch,
    DuplicateKey,
    Issue,
    LimitExceeded,
    UnknownKind,
    UnsupportedVersion,
    ValidationFailed,
)
from schemas.events import SCHEMA_VERSION, BehaviorEvent, EventBatch

M = TypeVar("M", bound=BaseModel)

_VERSION = re.compile(r"^([0-9]{1,4})\.([0-9]{1,4})$")
_OUR_MAJOR, _OUR_MINOR = (int(part) for part in SCHEMA_VERSION.split("."))


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits applied before and after parsing; exceeding one raises LimitExceeded."""

    max_record_bytes: int = 1 << 20  # whole Kafka record value
    max_events_per_batch: int = 5000
    max_string_chars: int = 64 * 1024  # any one JSON string (key or value)


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


def decode(model_type: type[M], data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> M:
    """Decode and validate one record of any contract; raises a ContractError subclass."""
    obj = load(data, limits)
    return validate(model_type, obj)


def decode_batch(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> EventBatch:
    """Decode an EventBatch record (one validation call for all its events)."""
    obj = load(data, limits, check_strings=False)
    return _batch(obj, limits)


def decode_event(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> BehaviorEvent:
    """Decode a single BehaviorEvent record."""
    event = validate(BehaviorEvent, load(data, limits, check_strings=False))
    _check_event_strings(0, event, limits.max_string_chars, prefix=())
    return event


def decode_record(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> EventBatch:
    """Decode what the events topic carries: a batch, or a single event wrapped as a batch of one."""
    obj = load(data, limits, check_strings=False)
    if "events" in obj:
        return _batch(obj, limits)
    event = validate(BehaviorEvent, obj)
    _check_event_strings(0, event, limits.max_string_chars, prefix=())
    return EventBatch.of([event])


def _batch(obj: dict[str, Any], limits: Limits) -> EventBatch:
    _check_event_count(obj, limits)
    batch = validate(EventBatch, obj)
    for index, event in enumerate(batch.events):
        _check_event_strings(index, event, limits.max_string_chars, prefix=("events", index))
    return batch


def _check_event_strings(
    index: int, event: BehaviorEvent, max_chars: int, *, prefix: tuple[str | int, ...]
) -> None:
    """String limit on a validated event: walking typed fields is ~8x cheaper than the raw JSON."""
    for path, value in _event_texts(event):
        if len(value) > max_chars:
            raise LimitExceeded(
                f"string of {len(value)} characters, limit {max_chars}",
                limit="max_string_chars", actual=len(value), maximum=max_chars,
                field_path=_dotted((*prefix, *path)), device_id=event.device_id, event_id=event.event_id,
            )


def _event_texts(event: BehaviorEvent) -> Iterator[tuple[tuple[str | int, ...], str]]:
    for name, value in event.__dict__.items():
        if type(value) is str:
            yield (name,), value
    for name, value in event.payload.__dict__.items():
        if type(value) is str:
            yield ("payload", name), value
        elif type(value) is tuple:
            yield from ((("payload", name, i), item) for i, item in enumerate(value))


def load(
    data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS, *, check_strings: bool = True
) -> dict[str, Any]:
    """Steps 1-5 above: bytes -> a JSON object that is safe to hand to pydantic.

    `check_strings=False` leaves the string-length limit to the caller, who checks it on the
    validated model (the events path does, as it is the hot one).
    """
    raw = _as_bytes(data)
    if len(raw) > limits.max_record_bytes:
        raise LimitExceeded(
            f"record is {len(raw)} bytes, limit {limits.max_record_bytes}",
            limit="max_record_bytes", actual=len(raw), maximum=limits.max_record_bytes,
        )
    obj = _parse(raw)
    _check_duplicates(raw, obj)
    _check_version(obj)
    if check_strings and len(raw) > limits.max_string_chars:  # N chars need at least N bytes
        _check_strings(obj, limits.max_string_chars)
    return obj


def validate(model_type: type[M], obj: dict[str, Any]) -> M:
    """One validation call; newer-minor records get a second one without their unknown fields."""
    try:
        return model_type.model_validate(obj)
    except ValidationError as exc:
        if not _drop_fields_of_newer_versions(exc, obj):
            raise _translate(exc, obj) from None
    try:
        return model_type.model_validate(obj)
    except ValidationError as exc:
        raise _translate(exc, obj) from None


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise DecodeError(f"record value must be bytes, got {type(data).__name__}")


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"record must be a JSON object, got {type(obj).__name__}")
    return obj


def _check_duplicates(raw: bytes, obj: dict[str, Any]) -> None:
    try:
        if orjson.dumps(obj) == raw:
            return  # re-encodes identically: no key was collapsed
    except orjson.JSONEncodeError:
        pass  # orjson writes at most 254 levels; let the stdlib parse decide
    try:
        json.loads(raw, object_pairs_hook=_pairs_without_duplicates)
    except RecursionError:
        raise DecodeError("JSON nesting too deep") from None


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise DuplicateKey(f"duplicate key {duplicate[:64]!r} in a JSON object", field_path=duplicate[:64])
    return result


def _version_of(value: object) -> tuple[int, int] | None:
    match = _VERSION.match(value) if isinstance(value, str) else None
    return (int(match[1]), int(match[2])) if match else None


def _check_version(obj: dict[str, Any]) -> None:
    version = _version_of(obj.get("schema_version"))
    if version is not None and version[0] != _OUR_MAJOR:
        raise UnsupportedVersion(
            f"schema_version {obj['schema_version']} is not readable (this code reads {_OUR_MAJOR}.x)",
            version=str(obj["schema_version"]), field_path="schema_version", **_ids_of(obj),
        )


def _check_event_count(obj: dict[str, Any], limits: Limits) -> None:
    events = obj.get("events")
    if isinstance(events, list) and len(events) > limits.max_events_per_batch:
        raise LimitExceeded(
            f"batch has {len(events)} events, limit {limits.max_events_per_batch}",
            limit="max_events_per_batch", actual=len(events), maximum=limits.max_events_per_batch,
            field_path="events", **_ids_of(obj),
        )


def _check_strings(obj: dict[str, Any], max_chars: int) -> None:
    if not _has_long_string(obj, max_chars):
        return
    path, text = next((path, text) for path, text in _strings(obj) if len(text) > max_chars)
    raise LimitExceeded(
        f"string of {len(text)} characters, limit {max_chars}",
        limit="max_string_chars", actual=len(text), maximum=max_chars,
        field_path=_dotted(path), **_ids_at(obj, path),
    )


def _has_long_string(obj: object, max_chars: int) -> bool:
    """Fast scan (no paths kept); iterative because nesting may be 1,024 levels deep."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if len(item) > max_chars:
                return True
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


def _strings(obj: object) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string (keys included) with its path; only run once a long string is known to exist."""
    stack: list[tuple[tuple[str | int, ...], object]] = [((), obj)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            for key, value in item.items():
                yield (*path, key), key
                stack.append(((*path, key), value))
        elif isinstance(item, list):
            stack.extend(((*path, index), value) for index, value in enumerate(item))


def _is_newer(version: object) -> bool:
    parsed = _version_of(version)
    return parsed is not None and parsed[0] == _OUR_MAJOR and parsed[1] > _OUR_MINOR


def _drop_fields_of_newer_versions(exc: ValidationError, obj: dict[str, Any]) -> bool:
    """Delete unknown fields that sit inside a newer-minor record; True if any was dropped."""
    dropped = False
    for error in exc.errors(include_url=False, include_input=False):
        if error["type"] != "extra_forbidden":
            continue
        parent, _, newer = _walk(obj, error["loc"][:-1])
        if newer and isinstance(parent, dict) and error["loc"][-1] in parent:
            del parent[error["loc"][-1]]
            dropped = True
    return dropped


def _walk(obj: object, loc: tuple[str | int, ...]) -> tuple[object, tuple[str | int, ...], bool]:
    """Follow a pydantic loc through the raw JSON, skipping union tags; also: is it in a newer record?"""
    path: list[str | int] = []
    newer = isinstance(obj, dict) and _is_newer(obj.get("schema_version"))
    for step in loc:
        if isinstance(obj, dict) and isinstance(step, str) and step in obj:
            obj = obj[step]
        elif isinstance(obj, list) and isinstance(step, int) and 0 <= step < len(obj):
            obj = obj[step]
        else:
            continue  # a union tag such as `process_start`, not a key of the input
        path.append(step)
        if isinstance(obj, dict) and "schema_version" in obj:
            newer = _is_newer(obj["schema_version"])
    return obj, tuple(path), newer


def _clean_path(obj: dict[str, Any], loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    if not loc:
        return loc
    _, path, _ = _walk(obj, loc[:-1])
    return (*path, loc[-1])


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(step) for step in path)


def _ids_of(obj: object) -> dict[str, str | None]:
    if not isinstance(obj, dict):
        return {}
    device, event = obj.get("device_id"), obj.get("event_id")
    return {"device_id": device if isinstance(device, str) else None,
            "event_id": event if isinstance(event, str) else None}


def _ids_at(obj: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, str | None]:
    """Device of the record and, for a path inside `events.N`, that event's id."""
    ids = _ids_of(obj)
    events = obj.get("events")
    if len(path) >= 2 and path[0] == "events" and isinstance(events, list) and isinstance(path[1], int):
        if 0 <= path[1] < len(events):
            ids["event_id"] = _ids_of(events[path[1]]).get("event_id")
    return ids


def _translate(exc: ValidationError, obj: dict[str, Any]) -> ContractError:
    """Map pydantic's error list to one typed ContractError; every issue is kept in `issues`."""
    errors = exc.errors(include_url=False, include_input=False)
    issues = tuple(Issue(_issue_path(obj, err), err["type"], err["msg"]) for err in errors)
    first, path = errors[0], _issue_path_tuple(obj, errors[0])
    context = {"field_path": _dotted(path), **_ids_at(obj, path)}
    message = f"{len(issues)} problem(s), first: {issues[0]}"
    if first["type"] == "union_tag_invalid":
        return UnknownKind(message, issues=issues, **context)
    if first["type"] == "device_mismatch":
        return DeviceMismatch(message, issues=issues, **context)
    if path and path[-1] == "schema_version" and first["type"] == "string_pattern_mismatch":
        return UnsupportedVersion(message, version=str(_walk(obj, path)[0]), **context)
    return ValidationFailed(message, issues=issues, **context)


def _issue_path_tuple(obj: dict[str, Any], error: Any) -> tuple[str | int, ...]:
    ctx = error.get("ctx") or {}
    if error["type"] == "device_mismatch" and "index" in ctx:
        return ("events", int(ctx["index"]), "device_id")
    return _clean_path(obj, tuple(error["loc"]))


def _issue_path(obj: dict[str, Any], error: Any) -> str:
    return _dotted(_issue_path_tuple(obj, error))
