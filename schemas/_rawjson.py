"""Checks on raw JSON that pydantic cannot do: duplicate keys, string lengths, locating a field.

Private helpers of `schemas.codec`. They work on the plain objects `orjson.loads` returns, before
(or instead of) pydantic, and every loop is iterative: hostile records nest up to orjson's 1,024
levels, deeper than Python's recursion limit.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from schemas.errors import DecodeError, DuplicateKey

Path = tuple[str | int, ...]

_MAX_ID_CHARS = 128
_MAX_STEP_CHARS = 64


def as_bytes(data: object) -> bytes:
    """Kafka gives bytes; accept the other buffer types, refuse anything else (e.g. a tombstone)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise DecodeError(f"record value must be bytes, got {type(data).__name__}")


def parse_object(raw: bytes) -> dict[str, Any]:
    """orjson-parse a record that must be a JSON object."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"record must be a JSON object, got {type(obj).__name__}")
    return obj


def check_duplicates(raw: bytes, obj: dict[str, Any]) -> None:
    """Raise DuplicateKey if any object in `raw` repeats a key (orjson silently keeps the last).

    Our encoder's output re-encodes byte-identical, which proves no key was collapsed; anything
    else (other producers, pretty-printed JSON) pays a stdlib parse that sees every pair.
    """
    try:
        if orjson.dumps(obj) == raw:
            return
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
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"duplicate key {key[:_MAX_STEP_CHARS]!r}", field_path=safe_text(key))
            seen.add(key)
    return result


def has_long_string(obj: object, max_chars: int) -> bool:
    """True if any string (key or value) is longer than `max_chars`; no paths kept, so it is fast."""
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


def first_long_string(obj: object, max_chars: int) -> tuple[Path, int]:
    """Path and length of a string longer than `max_chars` (call after `has_long_string`)."""
    stack: list[tuple[Path, object]] = [((), obj)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str) and len(item) > max_chars:
            return path, len(item)
        if isinstance(item, dict):
            for key, value in item.items():
                if len(key) > max_chars:
                    return (*path, key), len(key)
                stack.append(((*path, key), value))
        elif isinstance(item, list):
            stack.extend(((*path, index), value) for index, value in enumerate(item))
    return (), 0


def walk(obj: object, loc: Path, is_newer: Any) -> tuple[object, Path, bool]:
    """Follow a pydantic error `loc` through the raw JSON.

    Returns the object reached, the path with union tags removed (pydantic inserts the tag, e.g.
    `process_start`, between `payload` and the field) and whether the innermost object carrying a
    `schema_version` on the way satisfies `is_newer`.
    """
    path: list[str | int] = []
    newer = isinstance(obj, dict) and bool(is_newer(obj.get("schema_version")))
    for step in loc:
        if isinstance(obj, dict) and isinstance(step, str) and step in obj:
            obj = obj[step]
        elif isinstance(obj, list) and isinstance(step, int) and 0 <= step < len(obj):
            obj = obj[step]
        else:
            continue
        path.append(step)
        if isinstance(obj, dict) and "schema_version" in obj:
            newer = bool(is_newer(obj["schema_version"]))
    return obj, tuple(path), newer


def dotted(path: Path) -> str:
    """`("events", 3, "payload", "image")` -> `events.3.payload.image` (steps capped in length)."""
    return ".".join(str(step)[:_MAX_STEP_CHARS] for step in path)


def safe_text(value: object) -> str | None:
    """An id fit for logs and dead letters: a short printable string, or None."""
    if not isinstance(value, str):
        return None
    text = value[:_MAX_ID_CHARS]
    return text if text.isprintable() else ascii(text)[1:-1][:_MAX_ID_CHARS]


def ids_at(obj: dict[str, Any], path: Path) -> dict[str, str | None]:
    """The record's device_id/event_id, or the event's id when `path` points inside `events.N`."""
    ids = {"device_id": safe_text(obj.get("device_id")), "event_id": safe_text(obj.get("event_id"))}
    events = obj.get("events")
    if len(path) >= 2 and path[0] == "events" and isinstance(events, list) and isinstance(path[1], int):
        event = events[path[1]] if 0 <= path[1] < len(events) else None
        ids["event_id"] = safe_text(event.get("event_id")) if isinstance(event, dict) else None
    return ids
