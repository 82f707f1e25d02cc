"""The C proof of an events record (`schemas._cfastcodec`): it may only say yes where the Python proof does.

The property under test: whatever `proven` accepts, the Python proof of `schemas.fastcodec.fast_events`
(msgspec's decode, `_consistent`, the re-encoding compared byte for byte) accepts too, so
`decode_events` gives the same events, or the same error, with the C proof and without it. It must
also say yes to what agents write (else it only costs time), and never crash on anything: truncations
at every byte, hostile mutations, huge strings, deep nesting; the whole file runs once more in a child
interpreter with `PYTHONMALLOC=debug -X dev`.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pytest
from debug_child import passes_under_debug_allocator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemas_strategies import batches, events

from schemas import codec, fastcodec
from schemas.codec import Limits
from schemas.errors import ContractError
from schemas.events import EventBatch

NOT_BUILT = "schemas._cfastcodec is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
try:
    from schemas import _cfastcodec
except ImportError:  # pragma: no cover - every test below then fails with NOT_BUILT (never skipped)
    _cfastcodec = None  # type: ignore[assignment]
proven = getattr(_cfastcodec, "proven", None)


@pytest.fixture(autouse=True)
def _built() -> None:
    assert _cfastcodec is not None and fastcodec._cdecode is not None, NOT_BUILT
CHILD = "RINGFENCE_CFASTCODEC_CHILD"
MAX_EVENTS = codec.DEFAULT_LIMITS.max_events_per_batch
CHARS = fastcodec.FAST_TEXT_CHARS
SLOW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def python_proof_only() -> Iterator[None]:
    saved, fastcodec._cdecode = fastcodec._cdecode, None
    try:
        yield
    finally:
        fastcodec._cdecode = saved


def python_says(raw: bytes, limits: Limits = codec.DEFAULT_LIMITS) -> tuple[Any, ...] | None:
    with python_proof_only():
        return fastcodec.fast_events(raw, limits)


def outcome(raw: bytes) -> tuple[str, Any]:
    """What `decode_events` gives: the events, or the error's class and message."""
    try:
        return "events", fastcodec.decode_events(raw)
    except ContractError as exc:
        return type(exc).__name__, str(exc)


def identical(built: Any, expected: Any) -> None:
    """The same types all the way down (a str, not an enum; the UTC tzinfo object itself), equal values."""
    assert type(built) is type(expected), (built, expected)
    if isinstance(built, tuple):
        assert len(built) == len(expected)
        for one, other in zip(built, expected, strict=True):
            identical(one, other)
    elif isinstance(built, msgspec.Struct):
        for name in built.__struct_fields__:
            identical(getattr(built, name), getattr(expected, name))
    elif isinstance(built, datetime):
        assert built == expected and built.tzinfo == expected.tzinfo
        assert (built.tzinfo is UTC) == (expected.tzinfo is UTC)
    else:
        assert built == expected


def assert_same_either_way(raw: bytes) -> None:
    """The C path changes nothing a caller sees; and a yes from the C proof is a yes from the Python one."""
    with python_proof_only():
        expected = outcome(raw)
    got = outcome(raw)
    assert got == expected
    if got[0] == "events":
        identical(got[1], expected[1])
    if proven(raw, MAX_EVENTS, CHARS):
        events = python_says(raw)
        assert events is not None, raw[:300]
        assert events == fastcodec.decode_events(raw)


def canonical(batch: EventBatch) -> bytes:
    return fastcodec._ENCODER.encode(fastcodec._BATCH.decode(codec.encode_batch(batch)))


_INT64_MIN = -(1 << 63)


def needs_python(raw: bytes) -> bool:
    """What the C proof leaves to Python by design: `\\u` escapes, escaped ids, other time zones, and
    -2**63 (the one int64 whose magnitude an int64 cannot hold: `integer()` in the C file)."""
    if b"\\u" in raw:
        return True
    record = orjson.loads(raw)
    if not all(event["ts"].endswith("Z") for event in record["events"]):
        return True
    if any(value == _INT64_MIN for event in record["events"] for value in event["payload"].values()):
        return True
    ids = [record["device_id"]] + [
        value for event in record["events"]
        for value in (event["event_id"], event["device_id"], event["process_key"],
                      event["parent_process_key"], event["payload"].get("target_process_key"))
        if value is not None
    ]  # fmt: skip
    return any('"' in value or "\\" in value for value in ids)


# --- the table and the switch ---------------------------------------------------------------------------


def test_the_c_field_table_is_the_structs_field_for_field_in_order() -> None:
    structs = {cls.kind: cls.__struct_fields__ for cls in fastcodec.FastPayload.__args__}
    assert _cfastcodec.FIELDS == structs
    assert fastcodec.FastEvent.__struct_fields__ == (
        "schema_version", "event_id", "device_id", "seq", "ts", "platform", "process_key",
        "parent_process_key", "image", "payload",
    )  # fmt: skip  (the layout `event()` in the C file walks)
    batch = ("schema_version", "device_id", "first_seq", "last_seq", "events")
    assert fastcodec.FastBatch.__struct_fields__ == batch


def test_the_benchmark_records_are_proven_and_decode_as_before() -> None:
    from bench._pipeline_data import records

    values = [value for _, value in records(2_000, 50, 20)]
    assert all(proven(value, MAX_EVENTS, CHARS) for value in values)
    for value in values[:10]:
        assert fastcodec.decode_events(value) == python_says(value)


def test_bad_arguments_are_a_type_error_not_a_crash() -> None:
    with pytest.raises(TypeError):
        proven("not bytes", MAX_EVENTS, CHARS)
    with pytest.raises(TypeError):
        proven(b"{}", MAX_EVENTS)
    with pytest.raises(TypeError):
        proven(bytearray(b"{}"), MAX_EVENTS, CHARS)
    with pytest.raises(OverflowError):
        proven(b"{}", 1 << 80, CHARS)
    assert proven(b"", MAX_EVENTS, CHARS) is False
    assert proven(b"{}", MAX_EVENTS, -1) is False


# --- what agents write ----------------------------------------------------------------------------------


@SLOW
@given(batch=batches())
def test_what_agents_write_is_proven_with_the_python_proofs_values(batch: EventBatch) -> None:
    raw = codec.encode_batch(batch)
    assert_same_either_way(raw)
    if not needs_python(raw):
        assert proven(raw, MAX_EVENTS, CHARS)
    assert proven(canonical(batch), MAX_EVENTS, CHARS) == proven(raw, MAX_EVENTS, CHARS)


@SLOW
@given(batch=batches(), data=st.data())
def test_mutated_records_are_refused_or_what_the_python_proof_accepts(batch: EventBatch, data: Any) -> None:
    assert_same_either_way(mutated(codec.encode_batch(batch), data))


def mutated(record: bytes, data: Any) -> bytes:
    """`record` with one to three bytes replaced, inserted or deleted, each drawn from JSON's syntax, digits,
    letters of literals, control and non-ASCII bytes."""
    raw = bytearray(record)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(("replace", "insert", "delete")))
        byte = data.draw(st.sampled_from(b'0129aAfFzZ"\\:,{}[]-.+eE nTtu/\n\x00\x7f\xc3\xa9\xed\xff'))
        if action == "replace":
            raw[position] = byte
        elif action == "insert":
            raw.insert(position, byte)
        elif len(raw) > 1:
            del raw[position]
    return bytes(raw)


def needs_python_single(raw: bytes) -> bool:
    """`needs_python` of a single-event record."""
    record = orjson.loads(raw)
    wrapped = {"schema_version": "1.0", "device_id": record["device_id"], "first_seq": record["seq"],
               "last_seq": record["seq"], "events": [record]}  # fmt: skip
    return needs_python(orjson.dumps(wrapped)) or b"\\u" in raw


def test_the_one_int64_the_c_proof_leaves_to_python_decodes_as_python_decodes_it() -> None:
    """-2**63, an exit code the contract allows, is refused by the C proof (its magnitude does not fit an
    int64) and decoded by the Python proof instead, to the same events (found by the property below)."""
    raw = (b'{"schema_version":"1.0","event_id":"0","device_id":"0","seq":0,"ts":"2000-01-01T00:00:00Z",'
           b'"platform":"windows","process_key":"0","parent_process_key":null,"image":null,'
           b'"payload":{"kind":"process_end","pid":null,"exit_code":-9223372036854775808}}')
    assert not proven(raw, MAX_EVENTS, CHARS) and needs_python_single(raw)
    assert_same_either_way(raw)
    (event,) = fastcodec.decode_events(raw)
    assert event.payload.exit_code == -(1 << 63)


@SLOW
@given(batch=batches())
def test_each_event_alone_is_proven_with_the_python_proofs_values(batch: EventBatch) -> None:
    for event in batch.events:
        raw = codec.encode_event(event)
        assert_same_either_way(raw)
        if not needs_python_single(raw):
            assert proven(raw, MAX_EVENTS, CHARS), raw[:300]


@SLOW
@given(batch=batches(), data=st.data())
def test_mutated_single_event_records_are_refused_or_what_the_python_proof_accepts(
    batch: EventBatch, data: Any
) -> None:
    assert_same_either_way(mutated(codec.encode_event(batch.events[0]), data))


HOSTILE_IDS = ["-a", ".a", "a b", "é", "x" * 128, "x" * 129, 'a"b', "a\\b", "a~", "a/b", "a\x7f", "",
               "events"]
HOSTILE_VALUES: dict[str, list[Any]] = {
    "device_id": HOSTILE_IDS, "event_id": HOSTILE_IDS, "process_key": HOSTILE_IDS,
    "parent_process_key": [*HOSTILE_IDS, None], "seq": [0, 2**63 - 1, -1, 2**63],
    "ts": ["1989-12-31T23:59:59.999999Z", "1990-01-01T00:00:00Z", "2099-12-31T23:59:59.999999Z",
           "2100-01-01T00:00:00Z", "2023-02-29T00:00:00Z", "2024-02-29T00:00:00Z",
           "2024-01-01T00:00:00+00:00"],
    "image": ["events", 'x"events', None, ""],
}  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events(), data=st.data())
def test_a_single_event_with_one_hostile_value_is_decoded_only_as_the_python_proof_decodes_it(
    event: Any, data: Any
) -> None:
    # One value at a time made hostile (ids the batch's device rule or the id charset refuses, times at
    # the contract's edges, seqs past int64, the word "events" that once sent Python to the batch decoder),
    # written as msgspec writes it so that the C walk reaches the value, then a trailing byte and limits
    # of every kind: whatever C builds, the Python proof builds too, equal, under the same limits.
    record = orjson.loads(codec.encode_event(event.model_copy(update={"ts": event.ts.astimezone(UTC)})))
    name = data.draw(st.sampled_from(sorted(HOSTILE_VALUES)))
    record[name] = data.draw(st.sampled_from(HOSTILE_VALUES[name]))
    try:
        raw = fastcodec._ENCODER.encode(fastcodec._EVENT.decode(orjson.dumps(record)))
    except (msgspec.MsgspecError, TypeError, OverflowError):  # a value msgspec refuses: written by orjson
        raw = orjson.dumps(record)
    raw += data.draw(st.sampled_from([b""] * 6 + [b" ", b"\n", b"}", b"x"]))
    max_events = data.draw(st.sampled_from([-1, 0, 1, 2, 5000]))
    built = _cfastcodec.decode(raw, max_events, CHARS)
    assert (built is not None) == proven(raw, max_events, CHARS)
    if built is not None:
        limits = Limits(max_events_per_batch=max(max_events, 1))
        expected = python_says(raw, limits)
        assert expected is not None and max_events >= 1, raw
        identical(built, expected)


def test_a_single_event_holding_the_word_events_decodes_alike_either_way() -> None:
    base = orjson.loads(codec.encode_event(_batch(1).events[0]))
    for name, value in (("image", "events"), ("image", 'x"events'), ("process_key", "events")):
        raw = fastcodec._ENCODER.encode(fastcodec._EVENT.decode(orjson.dumps({**base, name: value})))
        assert proven(raw, MAX_EVENTS, CHARS), name
        assert_same_either_way(raw)
        assert type(fastcodec.decode_events(raw)[0]) is fastcodec.FastEvent
    batch_head = b'{"schema_version":"1.0","device_id":"d","first_seq":1,"last_seq":1,"events":'
    assert not proven(batch_head + codec.encode_event(_batch(1).events[0]), MAX_EVENTS, CHARS)


def test_every_truncation_is_refused() -> None:
    raw = codec.encode_batch(_batch())
    assert proven(raw, MAX_EVENTS, CHARS)
    assert not any(proven(raw[:end], MAX_EVENTS, CHARS) for end in range(len(raw)))
    assert not proven(raw + b" ", MAX_EVENTS, CHARS)
    assert not proven(raw + b"\x00", MAX_EVENTS, CHARS)


# --- one edge at a time ---------------------------------------------------------------------------------


def _batch(events: int = 2) -> EventBatch:
    record = _record(events)
    return EventBatch.model_validate_json(orjson.dumps(record))


def _record(events: int = 2, **payload: Any) -> dict[str, Any]:
    listed = [
        {"schema_version": "1.0", "event_id": f"ev-{i}", "device_id": "dev-1", "seq": i,
         "ts": f"2024-05-01T10:00:0{i}.000001Z", "platform": "windows", "process_key": "{P1}",
         "parent_process_key": None, "image": None,
         "payload": {"kind": "process_start", "image": "C:\\a.exe", "command_line": "a", "sha256": None,
                     "user": None, "integrity_level": None, "uid": None, "pid": 4, "ppid": None,
                     "parent_image": None, "parent_command_line": None, "cwd": None, **payload}}
        for i in range(1, events + 1)
    ]  # fmt: skip
    batch = {"schema_version": "1.0", "device_id": "dev-1", "first_seq": 1, "last_seq": events}
    return {**batch, "events": listed}


def _raw(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


BASE = _raw(_record())
EDITS = [  # (old, new): each makes a record the C proof must refuse (the Python proof may accept some)
    (b'"seq":1,', b'"seq":01,'), (b'"seq":1,', b'"seq":1.0,'), (b'"seq":1,', b'"seq":1e0,'),
    (b'"seq":1,', b'"seq":-0,'), (b'"seq":1,', b'"seq":-1,'), (b'"seq":1,', b'"seq": 1,'),
    (b'"seq":1,', b'"seq":9223372036854775808,'), (b'"seq":1,', b'"seq":99999999999999999999,'),
    (b'"pid":4,', b'"pid":4294967296,'), (b'"pid":4,', b'"pid":"4",'), (b'"pid":4,', b'"pid":true,'),
    (b'"first_seq":1,', b'"first_seq":0,'), (b'"last_seq":2,', b'"last_seq":3,'),
    (b'"device_id":"dev-1","seq":2', b'"device_id":"dev-2","seq":2'),
    (b'"device_id":"dev-1","first', b'"device_id":"-dev","first'),
    (b'"event_id":"ev-1"', b'"event_id":""'), (b'"event_id":"ev-1"', b'"event_id":"e v"'),
    (b'"event_id":"ev-1"', b'"event_id":"e\\"v"'), (b'"event_id":"ev-1"', b'"event_id":"\xc3\xa9"'),
    (b'"event_id":"ev-1"', b'"event_id":"' + b"x" * 129 + b'"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"2024-05-01T10:00:01.000000Z"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"2024-05-01T10:00:01.0000010Z"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"2024-05-01T10:00:01.000001+00:00"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"2023-02-29T10:00:01Z"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"1989-12-31T23:59:59Z"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"2100-01-01T00:00:00Z"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"2024-05-01T24:00:00Z"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"2024-05-01T23:59:60Z"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":"2024-05-01t10:00:01Z"'),
    (b'"ts":"2024-05-01T10:00:01.000001Z"', b'"ts":1714557601'),
    (b'"platform":"windows"', b'"platform":"Windows"'), (b'"platform":"windows"', b'"platform":"macos"'),
    *((b'"command_line":"a"', b'"command_line":' + text) for text in (
        b'"a\\/b"', b'"\\u0041"', b'"a\x01"', b'"\xed\xa0\x80"', b'"\xc0\x80"', b'"\xf5\x80\x80\x80"',
        b'"\xe0\x80\x80"', b'"\xf4\x90\x80\x80"', b'"\xc3"', b'null', b'"a', b'"\\x"',
    )),
    (b'"image":"C:\\\\a.exe"', b'"image":""'), (b'"sha256":null', b'"sha256":"' + b"A" * 64 + b'"'),
    (b'"sha256":null', b'"sha256":"' + b"a" * 63 + b'"'), (b'"cwd":null}', b'"cwd":null,"cwd":null}'),
    (b'"cwd":null}', b'"cwd":null,"extra":1}'), (b'"cwd":null}', b'}'),
    (b'"pid":4,"ppid"', b'"ppid":null,"pid":4,"x"'),
    (b'{"kind":"process_start"', b'{"kind":"process_end"'), (b'{"kind":"process_start"', b'{"kind":"nope"'),
    (b'"schema_version":"1.0","event_id"', b'"schema_version":"1.1","event_id"'),
    (b'{"schema_version":"1.0","device_id"', b'{ "schema_version":"1.0","device_id"'),
]


@pytest.mark.parametrize(("old", "new"), EDITS)
def test_edits_off_the_canonical_layout_are_refused_and_decode_as_before(old: bytes, new: bytes) -> None:
    assert proven(BASE, MAX_EVENTS, CHARS)
    assert old in BASE, old
    raw = BASE.replace(old, new, 1)
    assert not proven(raw, MAX_EVENTS, CHARS), new
    assert_same_either_way(raw)


@pytest.mark.parametrize(
    "payload",
    [
        {"kind": "process_end", "pid": None, "exit_code": -(1 << 63) + 1},
        {"kind": "file_write", "path": "p", "sha256": "a" * 64, "bytes_written": (1 << 63) - 1},
        {"kind": "registry_set", "key": "k", "value_name": None, "data": "\t\"\\\n\r\b\f",
         "operation": "rename_key"},
        {"kind": "network_connect", "dst_ip": "x" * 64, "dst_port": 65535, "src_ip": "", "src_port": 0,
         "protocol": "udp", "outbound": False, "dst_hostname": "\u2028\U0001f600\x7f"},
        {"kind": "dns_query", "query": "q", "answers": []},
        {"kind": "dns_query", "query": "q", "answers": ["a", "", "é"]},
        {"kind": "image_load", "path": "p", "sha256": None, "signed": True, "signer": None},
        {"kind": "process_access", "target_process_key": "~!", "target_image": "t",
         "granted_access": 4294967295, "call_trace": None},
        {"kind": "remote_thread", "target_process_key": None, "target_image": "t", "start_address": "0x1"},
        {"kind": "script", "content": "", "interpreter": None, "path": None},
        {"kind": "file_rename", "path": "a", "old_path": "b"},
        {"kind": "file_delete", "path": "a", "sha256": None},
        {"kind": "file_create", "path": "a", "sha256": None},
    ],
)  # fmt: skip
def test_every_payload_kind_at_its_limits_is_proven_as_python_proves_it(payload: dict[str, Any]) -> None:
    record = _record(1)
    record["events"][0]["payload"] = payload
    raw = _raw(record)
    assert python_says(raw) is not None
    assert proven(raw, MAX_EVENTS, CHARS)
    assert_same_either_way(raw)
    answers = payload.get("answers")
    if answers is not None:  # one answer too many
        payload["answers"] = ["a"] * 1025
        assert not proven(_raw(record), MAX_EVENTS, CHARS)


@pytest.mark.parametrize(
    ("field", "value"),
    [("dst_ip", "x" * 65), ("dst_ip", ""), ("dst_port", 65536), ("src_ip", "é" * 65), ("protocol", "icmp"),
     ("outbound", None), ("outbound", 1)],
)  # fmt: skip
def test_network_fields_out_of_their_range_are_refused(field: str, value: Any) -> None:
    record = _record(1)
    record["events"][0]["payload"] = {"kind": "network_connect", "dst_ip": "1.2.3.4", "dst_port": 1,
                                      "src_ip": None, "src_port": None, "protocol": "tcp", "outbound": True,
                                      "dst_hostname": None, field: value}  # fmt: skip
    raw = _raw(record)
    assert not proven(raw, MAX_EVENTS, CHARS)
    assert_same_either_way(raw)


def test_text_is_capped_in_characters_not_bytes() -> None:
    for text, chars in (("a" * 10, 10), ("é" * 10, 10), ("\U0001f600" * 10, 10), ('\\"' * 5, 10)):
        raw = _raw(_record(1, command_line=text))
        assert proven(raw, MAX_EVENTS, chars), text
        assert not proven(raw, MAX_EVENTS, chars - 1), text


def test_the_events_limit_and_an_empty_batch() -> None:
    raw = _raw(_record(3))
    assert proven(raw, 3, CHARS) and not proven(raw, 2, CHARS)
    assert not proven(raw.replace(b'"events":[{', b'"events":[],"x":[{'), MAX_EVENTS, CHARS)
    empty = orjson.dumps({"schema_version": "1.0", "device_id": "d", "first_seq": 0, "last_seq": 0,
                          "events": []})  # fmt: skip
    assert not proven(empty, MAX_EVENTS, CHARS)
    assert_same_either_way(empty)
    limits = Limits(max_events_per_batch=2)
    assert fastcodec.fast_events(raw, limits) is None
    with pytest.raises(ContractError):
        fastcodec.decode_events(raw, limits)


def test_other_buffer_types_decode_as_bytes_do() -> None:
    expected = fastcodec.decode_events(BASE)
    assert fastcodec.decode_events(bytearray(BASE)) == expected == fastcodec.decode_events(memoryview(BASE))
    with pytest.raises(TypeError):
        _cfastcodec.decode(bytearray(BASE), MAX_EVENTS, CHARS)  # bytes only (what as_bytes gives)


def test_a_single_event_record_is_proven_as_the_python_proof_proves_it() -> None:
    raw = codec.encode_event(_batch(1).events[0])
    assert proven(raw, MAX_EVENTS, CHARS) and proven(raw, 1, CHARS) and not proven(raw, 0, CHARS)
    assert_same_either_way(raw)
    identical(fastcodec.decode_events(raw), python_says(raw))
    assert not any(proven(raw[:end], MAX_EVENTS, CHARS) for end in range(len(raw)))
    assert not proven(raw + b" ", MAX_EVENTS, CHARS)
    record = orjson.loads(raw)
    for device in ("-starts-with-a-dash", "has space", "x" * 129, "dévice", ""):  # the batch's device rule
        bad = orjson.dumps({**record, "device_id": device})
        assert not proven(bad, MAX_EVENTS, CHARS), device
        assert_same_either_way(bad)
    assert not proven(orjson.dumps({**record, "device_id": 7}), MAX_EVENTS, CHARS)
    late = orjson.dumps({**record, "ts": "2100-01-01T00:00:00.000000Z"})  # out of the contract's range
    assert not proven(late, MAX_EVENTS, CHARS)
    assert_same_either_way(late)


def test_huge_strings_and_deep_nesting_are_refused_without_trouble() -> None:
    huge = _raw(_record(1, command_line="x" * (CHARS + 1)))
    assert not proven(huge, MAX_EVENTS, CHARS)
    assert_same_either_way(huge)
    assert proven(_raw(_record(1, command_line="x" * CHARS)), MAX_EVENTS, CHARS)
    deep = b'{"schema_version":"1.0","device_id":"d","first_seq":1,"last_seq":1,"events":' + b"[" * 100_000
    assert not proven(deep, MAX_EVENTS, CHARS)
    assert_same_either_way(deep)
    assert not proven(b"[" * 100_000 + b"]" * 100_000, MAX_EVENTS, CHARS)


def test_no_memory_is_kept_per_record_built_or_refused_halfway() -> None:
    """Every object built for a record refused at its last event is released; so is every record's."""
    good = _raw(_record(40))
    bad = good.replace(b'"pid":4,"ppid":null,"parent_image":null,"parent_command_line":null,"cwd":null}}]}',
                       b'"pid":4,"ppid":null,"parent_image":null,"parent_command_line":null,"cwd":nul}}]}')
    assert bad != good and _cfastcodec.decode(bad, MAX_EVENTS, CHARS) is None
    for value in (good, bad):
        _cfastcodec.decode(value, MAX_EVENTS, CHARS)
        gc.collect()
        before = sys.getallocatedblocks()
        for _ in range(2_000):
            _cfastcodec.decode(value, MAX_EVENTS, CHARS)
        gc.collect()
        assert sys.getallocatedblocks() - before < 100


def test_a_records_repeated_keys_and_texts_are_one_object_each() -> None:
    """Equal ids and texts share a str (less memory, pointer-equal dict keys), within a record and from
    one record to the next (the table is kept); unique event ids are not looked up."""
    events = _cfastcodec.decode(_raw(_record(9)), MAX_EVENTS, CHARS)
    assert len({id(event.device_id) for event in events}) == 1
    assert len({id(event.process_key) for event in events}) == 1
    assert len({id(event.payload.image) for event in events}) == 1  # escaped ("C:\\a.exe") too
    assert len({id(event.event_id) for event in events}) == 9
    again = _cfastcodec.decode(_raw(_record(9)), MAX_EVENTS, CHARS)
    assert again[0].device_id is events[0].device_id and again[0].payload.image is events[0].payload.image
    assert again[0].event_id == events[0].event_id and again[0].event_id is not events[0].event_id


def test_kept_strings_are_bounded_and_answers_unchanged_when_slots_collide() -> None:
    """The kept table holds at most its slots' strings: records of ever new texts do not grow memory, and
    texts that evict one another (any pair may share a slot) still decode to their own values."""
    def record(i: int) -> bytes:
        return _raw(_record(3, command_line=f"cmd {i} \u00e9\\x", cwd=f"C:\\dir{i}"))

    for i in range(3_000):  # fill every slot with strings no later record repeats
        _cfastcodec.decode(record(-i), MAX_EVENTS, CHARS)
    gc.collect()
    before = sys.getallocatedblocks()
    for i in range(20_000):
        value = record(i)
        if i % 1_000 == 0:
            assert _cfastcodec.decode(value, MAX_EVENTS, CHARS) == python_says(value)
        else:
            _cfastcodec.decode(value, MAX_EVENTS, CHARS)
    gc.collect()
    assert sys.getallocatedblocks() - before < 200
    texts = [f"t{i}".encode() for i in range(5_000)]  # many more than the slots: collisions certain
    for value in [_raw(_record(2, command_line=t.decode())) for t in texts + texts[::-1]]:
        events = _cfastcodec.decode(value, MAX_EVENTS, CHARS)
        assert events == python_says(value)


def test_configure_refuses_what_it_cannot_build() -> None:
    with pytest.raises(TypeError):
        _cfastcodec.configure(fastcodec.FastEvent, {}, ())
    with pytest.raises(ValueError, match="no payload type"):
        _cfastcodec.configure(fastcodec.FastEvent, {"process_start": fastcodec.FastProcessStart}, ("w", "l"))
    assert _cfastcodec.decode(BASE, MAX_EVENTS, CHARS) == python_says(BASE)  # still configured as before


# --- the same file under the debug allocator ------------------------------------------------------------


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the child run")
def test_this_file_passes_in_a_child_with_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)


@pytest.mark.parametrize("special", ['"', "\\", "\n", "\x01", "\x1f", "\x7f", "é", "\u2028", "\U0001f600"])
def test_a_special_character_at_every_offset_of_a_text_is_seen(special: str) -> None:
    """Text is scanned eight bytes at a time: a character needing care must be found wherever it falls."""
    for length in (0, 1, 7, 8, 9, 15, 16, 17, 24):
        for at in range(length + 1):
            text = "a" * at + special + "b" * (length - at)
            raw = _raw(_record(1, command_line=text))
            assert_same_either_way(raw)
            plain = special not in "\x01\x1f"  # raw control characters are not JSON
            assert proven(raw, MAX_EVENTS, CHARS) == plain, (text, raw)
            if plain and len(text) > len("C:\\a.exe"):  # the longest other text of the record
                assert proven(raw, MAX_EVENTS, len(text)) and not proven(raw, MAX_EVENTS, len(text) - 1)


@pytest.mark.parametrize("special", [" ", '"', "\\", "\x7f", "\x01", "\x1f", "\x00", "é", "\U0001f600"])
def test_a_byte_no_identifier_may_hold_is_seen_at_every_offset(special: str) -> None:
    """Identifiers are scanned eight bytes at a time too: a space, quote, backslash, DEL, control or
    non-ASCII byte anywhere in a process key makes the record the Python proof's (or the codec's)."""
    for length in (1, 7, 8, 9, 15, 16, 17, 24, 127):
        raw = _raw(_record(1)).replace(b'"{P1}"', b'"' + b"k" * length + b'"')
        assert proven(raw, MAX_EVENTS, CHARS), length  # the same key without the byte is proven
        for at in range(0, length + 1, 1 if length < 30 else 13):
            key = "k" * at + special + "k" * (length - at)
            record = _record(1)
            record["events"][0]["process_key"] = key
            raw = _raw(record)
            assert not proven(raw, MAX_EVENTS, CHARS), key
            assert_same_either_way(raw)


@pytest.mark.parametrize(
    ("old", "new"),
    [(b'"process_start"', b'"process_star"'), (b'"process_start"', b'"process_startt"'),
     (b'"process_start"', b'"process_start\\""'), (b'"process_start"', b'""'),
     (b'"process_start"', b'"' + b"process_start" * 3 + b'"'), (b'"process_start"', b'"rocess_start"'),
     (b'"windows"', b'"window"'), (b'"windows"', b'"windowss"'), (b'"windows"', b'"linux "'),
     (b'"windows"', b'"w\\u0069ndows"'), (b'"windows"', b'"windows')],
)  # fmt: skip
def test_a_name_is_one_of_the_names_exactly(old: bytes, new: bytes) -> None:
    """Kinds, platforms, operations and protocols are matched whole: a prefix, an extension, an
    escape or a missing quote is refused (and decodes as the Python proof says)."""
    raw = BASE.replace(old, new, 1)
    assert raw != BASE and not proven(raw, MAX_EVENTS, CHARS)
    assert_same_either_way(raw)
    for operation in ("set_value", "create_key", "delete_key", "delete_value", "rename_key"):
        record = _record(1)
        record["events"][0]["payload"] = {"kind": "registry_set", "key": "k", "value_name": None,
                                          "data": None, "operation": operation}
        assert proven(_raw(record), MAX_EVENTS, CHARS), operation
        cut = _raw(record).replace(operation.encode(), operation[:-1].encode())
        assert not proven(cut, MAX_EVENTS, CHARS)
