"""Events are encoded once, when they are spooled; EventBatch records are spliced from those bytes.

Why: an agent serialised every event twice (into the spool, then again inside the EventBatch it
sends), and kept the numbered event objects in memory between the two so it would not have to
decode them. The spool already holds each event's exact JSON, with its seq, so the record value is
the batch envelope around the stored bytes joined by commas: no model, no second serialisation,
nothing kept in memory. `splice_batch` writes the same bytes `schemas.codec.encode_batch` would
(same key order, compact separators), which the unit tests check against the codec.

Records written by an earlier agent version may no longer be valid events; the publisher validates
those (and only those) before it splices them (see `agents.publisher`).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from schemas.events import SCHEMA_VERSION, BehaviorEvent

__all__ = ["encode_event_fast", "encode_with_seq", "splice_batch"]

_SERIALIZER = BehaviorEvent.__pydantic_serializer__
_HEAD = b'{"schema_version":' + orjson.dumps(SCHEMA_VERSION) + b',"device_id":'


def encode_event_fast(event: BehaviorEvent) -> bytes:
    """Compact JSON of one event, as `schemas.codec.encode_event` writes it, in one native call."""
    return _SERIALIZER.to_json(event)


def encode_with_seq(event: BehaviorEvent, seq: int) -> bytes:
    """`encode_event_fast(event.model_copy(update={"seq": seq}))` without copying the model (the spool
    numbers every event). The first `,"seq":` in the JSON is the top-level field: it follows
    schema_version, event_id and device_id, and a string cannot hold an unescaped quote."""
    data = _SERIALIZER.to_json(event)
    if event.seq == seq:
        return data
    return data.replace(b',"seq":%d,' % event.seq, b',"seq":%d,' % seq, 1)


def splice_batch(device_id: str, first_seq: int, last_seq: int, records: Sequence[bytes]) -> bytes:
    """An EventBatch record value around already encoded events of `device_id` (at least one)."""
    if not records:
        raise ValueError("a batch needs at least one event")
    return b"".join((
        _HEAD, orjson.dumps(device_id), b',"first_seq":', str(first_seq).encode(), b',"last_seq":',
        str(last_seq).encode(), b',"events":[', b",".join(records), b"]}",
    ))
