"""The events topic's fast path: msgspec Structs that mirror `schemas.events`, checked, then the full codec.

Why: the worker decodes every event the fleet sends, and pydantic's validation of an `EventBatch`
(plus the orjson parse and duplicate-key proof around it, see `schemas.codec`) cost more per event
than everything else on the worker's hot path but the tree. msgspec decodes and validates the same
record from its bytes in one C pass at a fraction of that cost, and its frozen Structs carry the
same attribute names, so the detection core reads them exactly as it reads the pydantic models.

Safety first: the fast path may only *narrow* what is accepted. `fast_events` returns the events
only when it has proved the record valid under the contract, else None; `decode_events` then runs
the full `schemas.codec.decode_record`, so every rejection (and its dead-letter reason) is the
codec's own. What the proof consists of:
- every field constraint of `schemas.events` is restated here at least as tightly (patterns with
  `\\A..\\Z`, since Python's `$` also matches before a final newline; sha256 lower-case only, the
  value pydantic would produce; `schema_version` "1.0" only, other 1.x minors take the full path;
  strings capped at `FAST_TEXT_CHARS`, the codec's default `max_string_chars`, so the fast path is
  used only when the caller's limits are at least the defaults);
- what msgspec cannot express is checked per batch in one pass (`_consistent`): identifiers are
  printable ASCII without spaces, every event is the batch's device, seqs match first/last, times
  lie in [1990, 2100);
- duplicate keys (msgspec, like orjson, keeps the last) are excluded by bytes: either the record is
  byte-identical to msgspec's encoding of what was decoded (what `schemas.codec.encode_batch`
  writes, i.e. every agent's output), or orjson's parse re-encodes byte-identically (the codec's
  own proof) and every timestamp is written exactly as msgspec writes it (so pydantic reads the
  same instant from it). Anything else, pretty-printed JSON included, takes the full path.
**In C.** When the optional extension `schemas._cfastcodec` is built (setup.py), `fast_events` first
hands the bytes to it: in one pass it proves the record a batch (or, since session R, a single event)
in exactly the layout msgspec writes (every field, in order, each value written as msgspec writes it)
whose values meet every constraint above, and builds the events as msgspec's decode would (the same
Structs through their constructors, the same field types and values). A record it cannot prove (it says
no whenever in doubt: `\\u` escapes, escaped identifiers, other time zones) takes msgspec and the Python
proof, then the codec, as before; so the answers are the same with or without it
(tests/unit/test_cfastcodec.py). It halves the cost of decoding what agents write (BENCHMARKS.md,
"Session G").
`tests/unit/test_fastcodec.py` checks that both paths give equal values on generated batches and
that the hostile-input corpus is rejected by the fast path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

import msgspec
import orjson

from schemas import codec
from schemas._rawjson import as_bytes
from schemas.codec import DEFAULT_LIMITS, Limits, RecordValue
from schemas.common import MAX_TEXT_CHARS, Platform
from schemas.errors import ContractError
from schemas.events import BehaviorEvent

__all__ = ["FAST_TEXT_CHARS", "Event", "FastBatch", "FastEvent", "decode_events", "fast_events",
           "to_behavior_event", "to_json_dict"]

FAST_TEXT_CHARS = min(MAX_TEXT_CHARS, DEFAULT_LIMITS.max_string_chars)
_M = msgspec.Meta
_Id = Annotated[str, _M(min_length=1, max_length=128)]  # charset checked per batch (`_consistent`)
_PatternId = Annotated[str, _M(min_length=1, max_length=128, pattern=r"\A[\x21-\x7e]+\Z")]
_DeviceId = Annotated[str, _M(min_length=1, max_length=128, pattern=r"\A[A-Za-z0-9][A-Za-z0-9._:@-]*\Z")]
_Text = Annotated[str, _M(max_length=FAST_TEXT_CHARS)]
_NonEmpty = Annotated[str, _M(min_length=1, max_length=FAST_TEXT_CHARS)]
_Sha = Annotated[str, _M(pattern=r"\A[0-9a-f]{64}\Z")]
_Short = Annotated[str, _M(max_length=64)]
_Seq = Annotated[int, _M(ge=0, le=(1 << 63) - 1)]
_U32 = Annotated[int, _M(ge=0, le=(1 << 32) - 1)]
_Port = Annotated[int, _M(ge=0, le=65535)]
_I64 = Annotated[int, _M(ge=-(1 << 63), le=(1 << 63) - 1)]
_Time = Annotated[datetime, _M(tz=True)]  # range checked per batch
_Version = Literal["1.0"]
_EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class _Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False, tag_field="kind"):
    """Base of the payload Structs; `kind` is the tag on the wire and a class attribute here."""

    kind: ClassVar[str]


class FastProcessStart(_Payload, tag="process_start", frozen=True, kw_only=True):
    kind: ClassVar[str] = "process_start"
    image: _NonEmpty
    command_line: _Text = ""
    sha256: _Sha | None = None
    user: _Text | None = None
    integrity_level: _Text | None = None
    uid: _U32 | None = None
    pid: _U32 | None = None
    ppid: _U32 | None = None
    parent_image: _Text | None = None
    parent_command_line: _Text | None = None
    cwd: _Text | None = None


class FastProcessEnd(_Payload, tag="process_end", frozen=True, kw_only=True):
    kind: ClassVar[str] = "process_end"
    pid: _U32 | None = None
    exit_code: _I64 | None = None


class FastFileCreate(_Payload, tag="file_create", frozen=True, kw_only=True):
    kind: ClassVar[str] = "file_create"
    path: _NonEmpty
    sha256: _Sha | None = None


class FastFileWrite(_Payload, tag="file_write", frozen=True, kw_only=True):
    kind: ClassVar[str] = "file_write"
    path: _NonEmpty
    sha256: _Sha | None = None
    bytes_written: _Seq | None = None


class FastFileDelete(_Payload, tag="file_delete", frozen=True, kw_only=True):
    kind: ClassVar[str] = "file_delete"
    path: _NonEmpty
    sha256: _Sha | None = None


class FastFileRename(_Payload, tag="file_rename", frozen=True, kw_only=True):
    kind: ClassVar[str] = "file_rename"
    path: _NonEmpty
    old_path: _NonEmpty


class FastRegistrySet(_Payload, tag="registry_set", frozen=True, kw_only=True):
    kind: ClassVar[str] = "registry_set"
    key: _NonEmpty
    value_name: _Text | None = None
    data: _Text | None = None
    operation: Literal["set_value", "create_key", "delete_key", "delete_value", "rename_key"] = "set_value"


class FastNetworkConnect(_Payload, tag="network_connect", frozen=True, kw_only=True):
    kind: ClassVar[str] = "network_connect"
    dst_ip: Annotated[str, _M(min_length=1, max_length=64)]
    dst_port: _Port
    src_ip: _Short | None = None
    src_port: _Port | None = None
    protocol: Literal["tcp", "udp"] = "tcp"
    outbound: bool = True
    dst_hostname: _Text | None = None


class FastDnsQuery(_Payload, tag="dns_query", frozen=True, kw_only=True):
    kind: ClassVar[str] = "dns_query"
    query: _NonEmpty
    answers: Annotated[tuple[_Text, ...], _M(max_length=1024)] = ()


class FastImageLoad(_Payload, tag="image_load", frozen=True, kw_only=True):
    kind: ClassVar[str] = "image_load"
    path: _NonEmpty
    sha256: _Sha | None = None
    signed: bool | None = None
    signer: _Text | None = None


class FastProcessAccess(_Payload, tag="process_access", frozen=True, kw_only=True):
    kind: ClassVar[str] = "process_access"
    target_process_key: _PatternId | None = None
    target_image: _NonEmpty
    granted_access: _U32
    call_trace: _Text | None = None


class FastRemoteThread(_Payload, tag="remote_thread", frozen=True, kw_only=True):
    kind: ClassVar[str] = "remote_thread"
    target_process_key: _PatternId | None = None
    target_image: _NonEmpty
    start_address: _Short | None = None


class FastScript(_Payload, tag="script", frozen=True, kw_only=True):
    kind: ClassVar[str] = "script"
    content: _Text
    interpreter: _Text | None = None
    path: _Text | None = None


FastPayload = (
    FastProcessStart | FastProcessEnd | FastFileCreate | FastFileWrite | FastFileDelete | FastFileRename
    | FastRegistrySet | FastNetworkConnect | FastDnsQuery | FastImageLoad | FastProcessAccess
    | FastRemoteThread | FastScript
)  # fmt: skip


class FastEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False, kw_only=True):
    """`schemas.events.BehaviorEvent`'s fields, in its order (so encodings compare byte for byte)."""

    schema_version: _Version = "1.0"
    event_id: _Id
    device_id: _Id  # equal to the batch's, whose pattern is checked (single events: `_consistent`, and in C
    # `schemas/_cfastcodec.c` checks a single event's by the batch's rule)
    seq: _Seq
    ts: _Time
    platform: Platform
    process_key: _Id
    parent_process_key: _Id | None = None
    image: _Text | None = None
    payload: FastPayload


class FastBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False, kw_only=True):
    """`schemas.events.EventBatch`'s fields, in its order."""

    schema_version: _Version = "1.0"
    device_id: _DeviceId
    first_seq: _Seq
    last_seq: _Seq
    events: Annotated[tuple[FastEvent, ...], _M(min_length=1)]


Event = BehaviorEvent | FastEvent
"""What the detection core reads: either model of one event (same attribute names and values)."""

_cdecode: Callable[[bytes, int, int], tuple[FastEvent, ...] | None] | None
try:  # proof and build in C (schemas/_cfastcodec.c); optional: without it msgspec and Python do it all
    from schemas import _cfastcodec
except ImportError:  # pragma: no cover - depends on the build
    _cdecode = None
else:
    _cfastcodec.configure(FastEvent, {cls.kind: cls for cls in FastPayload.__args__},
                          (Platform.WINDOWS, Platform.LINUX))
    _cdecode = _cfastcodec.decode  # None: msgspec and the Python proof only (tests and benchmarks set it)

_BATCH = msgspec.json.Decoder(FastBatch)
_EVENT = msgspec.json.Decoder(FastEvent)
_ENCODER = msgspec.json.Encoder()
_DEVICE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")


def decode_events(data: RecordValue, limits: Limits = DEFAULT_LIMITS) -> tuple[Event, ...]:
    """The events of one events-topic record; accepts and rejects exactly as `codec.decode_record`."""
    fast = fast_events(data, limits)
    if fast is not None:
        return fast
    return codec.decode_record(data, limits).events


def fast_events(data: RecordValue, limits: Limits = DEFAULT_LIMITS) -> tuple[FastEvent, ...] | None:
    """The events when the fast path proves the record valid; None means "ask the full codec"."""
    if not _within(limits):
        return None
    try:
        raw = as_bytes(data)
    except ContractError:
        return None
    if len(raw) > limits.max_record_bytes:
        return None
    built = _cdecode(raw, limits.max_events_per_batch, FAST_TEXT_CHARS) if _cdecode is not None else None
    if built is not None:
        return built  # proven canonical and valid, and built as msgspec builds it, in C
    decoded: FastBatch | FastEvent | None = None
    if b'"events"' in raw:  # a batch, most likely (a single event may hold the word in a value)
        try:
            decoded = _BATCH.decode(raw)
        except (msgspec.MsgspecError, ValueError):  # ValueError: e.g. invalid UTF-8 in a string
            decoded = None
    if decoded is None:
        try:
            decoded = _EVENT.decode(raw)
        except (msgspec.MsgspecError, ValueError):
            return None
    events = decoded.events if isinstance(decoded, FastBatch) else (decoded,)
    if len(events) > limits.max_events_per_batch or not _consistent(decoded, events):
        return None
    if _ENCODER.encode(decoded) == raw or _same_as_orjson(raw, events):
        return events
    return None


def _within(limits: Limits) -> bool:
    """The Structs' caps are the default limits: stricter limits need the full codec."""
    return limits.max_string_chars >= FAST_TEXT_CHARS


def _consistent(decoded: FastBatch | FastEvent, events: tuple[FastEvent, ...]) -> bool:
    """What the Structs cannot say: id charset, one device, the seq range, the time range."""
    if isinstance(decoded, FastEvent):  # a single-event record: the same checks without collections
        ids = decoded.event_id + decoded.process_key + (decoded.parent_process_key or "")
        return (
            _DEVICE_PATTERN.fullmatch(decoded.device_id) is not None
            and _EARLIEST <= decoded.ts < _LATEST
            and ids.isascii() and ids.isprintable() and " " not in ids
        )  # fmt: skip
    device, seqs = decoded.device_id, [e.seq for e in events]
    if min(seqs) != decoded.first_seq or max(seqs) != decoded.last_seq:
        return False
    if {e.device_id for e in events} != {device}:
        return False
    times = [e.ts for e in events]
    if min(times) < _EARLIEST or max(times) >= _LATEST:
        return False
    ids = "".join([e.event_id + e.process_key + (e.parent_process_key or "") for e in events])
    return ids.isascii() and ids.isprintable() and " " not in ids


def _same_as_orjson(raw: bytes, events: tuple[FastEvent, ...]) -> bool:
    """The codec's duplicate-key proof (orjson re-encodes the record byte for byte), and every
    timestamp written as msgspec writes it, which pydantic reads as the same instant."""
    try:
        obj = orjson.loads(raw)
        if orjson.dumps(obj) != raw:
            return False
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False
    listed = obj.get("events") if isinstance(obj, dict) and "events" in obj else [obj]
    if not isinstance(listed, list) or not all(isinstance(event, dict) for event in listed):
        return False
    written = [event.get("ts") for event in listed]
    return orjson.dumps(written) == _ENCODER.encode([e.ts for e in events])


def to_behavior_event(event: FastEvent) -> BehaviorEvent:
    """The pydantic model of a fast event (for alert evidence): validated from its canonical JSON."""
    return BehaviorEvent.model_validate_json(_ENCODER.encode(event), strict=True)


def to_json_dict(event: FastEvent) -> dict[str, object]:
    """JSON-ready dict of a fast event, as `BehaviorEvent.model_dump(mode="json")` gives it."""
    value = msgspec.json.decode(_ENCODER.encode(event))  # lists, not tuples, as JSON reads back
    if not isinstance(value, dict):
        raise TypeError(f"an event encodes as a JSON object, got {type(value).__name__}")
    return value
