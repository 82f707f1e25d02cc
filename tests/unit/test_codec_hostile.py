"""Hostile records: each one gives a typed ContractError with its location, none escapes unhandled."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemas_strategies import batches

from schemas import codec, fastcodec
from schemas.codec import Limits
from schemas.errors import (
    ContractError,
    DecodeError,
    DeviceMismatch,
    DuplicateKey,
    LimitExceeded,
    UnsupportedVersion,
    ValidationFailed,
)
from schemas.events import BehaviorEvent
from schemas.jsonschema import CONTRACTS


def _event(seq: int = 0, device: str = "dev-1", **payload: Any) -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "event_id": f"ev-{seq}",
        "device_id": device,
        "seq": seq,
        "ts": "2024-05-01T10:00:00.000001Z",
        "platform": "windows",
        "process_key": f"{{P{seq}}}",
        "payload": payload
        or {"kind": "process_start", "image": "C:\\Windows\\cmd.exe", "command_line": "cmd"},
    }


def _batch(n: int = 3, device: str = "dev-1") -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "device_id": device,
        "first_seq": 0,
        "last_seq": n - 1,
        "events": [_event(seq, device) for seq in range(n)],
    }


VALID = orjson.dumps(_batch())


def _with(path: str, value: Any) -> bytes:
    """VALID with the field at dotted `path` set to `value`."""
    record = _batch()
    *parents, last = [int(step) if step.isdigit() else step for step in path.split(".")]
    target: Any = record
    for step in parents:
        target = target[step]
    target[last] = value
    if isinstance(value, int) and abs(value) >= 2**63:
        return json.dumps(record).encode()  # orjson refuses to write integers past 64 bits
    return orjson.dumps(record)


def _decode_error(data: Any, limits: Limits = codec.DEFAULT_LIMITS) -> ContractError:
    """The codec's error; the worker's fast path refuses the record too and reports the same error."""
    assert fastcodec.fast_events(data, limits) is None
    with pytest.raises(ContractError) as caught:
        codec.decode_record(data, limits)
    with pytest.raises(type(caught.value)) as fast:
        fastcodec.decode_events(data, limits)
    assert str(fast.value) == str(caught.value)
    return caught.value


def _refused_or_same(data: bytes) -> None:
    """Whatever the fast path accepts, the codec accepts with equal events."""
    fast = fastcodec.fast_events(data)
    if fast is not None:
        models = codec.decode_record(data).events
        assert tuple(fastcodec.to_behavior_event(event) for event in fast) == models


def test_the_corpus_base_record_is_valid() -> None:
    assert len(codec.decode_record(VALID).events) == 3


@pytest.mark.parametrize("cut", [1, 2, 10, len(VALID) // 2, len(VALID) - 2, len(VALID) - 1])
def test_truncated_json_is_a_decode_error(cut: int) -> None:
    assert isinstance(_decode_error(VALID[:cut]), DecodeError)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"[]", "array"),
        (b'"x"', "string"),
        (b"null", "null"),
        (b"{}x", "trailing bytes"),
        (b'{"a":NaN}', "NaN"),
        (b'{"a":1e400}', "infinite number"),
        (b"\xef\xbb\xbf{}", "BOM"),
        (VALID.replace(b"cmd.exe", b"cmd\xff.exe"), "invalid UTF-8"),
        (VALID.replace(b"cmd.exe", b"cmd\\ud800.exe"), "lone surrogate escape"),
        (VALID.replace(b'"dev-1"', b'"dev\x00-1"', 1), "raw NUL byte inside a string"),
        (b'{"events":' + b"[" * 2000 + b"]" * 2000 + b"}", "2000 levels deep"),
    ],
)
def test_unreadable_bytes_are_decode_errors(data: bytes, why: str) -> None:
    assert isinstance(_decode_error(data), DecodeError), why


@pytest.mark.parametrize("value", [None, 42, "text", [1]])
def test_a_non_bytes_record_value_is_a_decode_error(value: Any) -> None:
    assert isinstance(_decode_error(value), DecodeError)


def test_moderate_nesting_in_a_known_field_names_the_field() -> None:
    error = _decode_error(_with("events.1.payload.image", orjson.loads(b"[" * 100 + b"]" * 100)))
    assert isinstance(error, ValidationFailed)
    assert error.field_path == "events.1.payload.image"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("events.0.seq", "1"),
        ("events.0.seq", 1.5),
        ("events.0.seq", True),
        ("events.0.seq", 1.0),
        ("events.0.ts", 1714557600),
        ("events.0.platform", "macos"),
        ("events.0.payload", []),
        ("events.2.payload.image", 7),
        ("first_seq", None),
        ("device_id", ["dev-1"]),
        ("events.0.event_id", ""),
        ("events.0.process_key", "has space"),
    ],
)
def test_wrong_types_name_the_field(path: str, value: Any) -> None:
    error = _decode_error(_with(path, value))
    assert isinstance(error, ValidationFailed)
    assert error.field_path == path
    assert error.issues and error.issues[0].path == path


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("events.0.seq", 10**30),
        ("events.0.seq", 2**63),
        ("events.0.seq", -1),
        ("events.0.payload.pid", 2**32),
        ("events.0.payload.pid", -1),
    ],
)
def test_huge_or_negative_integers_are_rejected(path: str, value: int) -> None:
    error = _decode_error(_with(path, value))
    assert isinstance(error, ValidationFailed)
    assert error.field_path == path


@pytest.mark.parametrize(
    "ts",
    [
        "1970-01-01T00:00:00Z",
        "2100-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2024-13-45T00:00:00Z",
        "2024-05-01T10:00:00",
        "yesterday",
        "99999-01-01T00:00:00Z",
    ],
)
def test_out_of_range_or_naive_timestamps_are_rejected(ts: str) -> None:
    error = _decode_error(_with("events.1.ts", ts))
    assert isinstance(error, ValidationFailed)
    assert (error.field_path, error.event_id, error.device_id) == ("events.1.ts", "ev-1", "dev-1")


def test_a_batch_carrying_another_devices_event_is_a_device_mismatch() -> None:
    error = _decode_error(_with("events.2.device_id", "intruder"))
    assert isinstance(error, DeviceMismatch)
    assert (error.field_path, error.device_id, error.event_id) == ("events.2.device_id", "dev-1", "ev-2")


def test_declared_seq_range_must_match_the_events() -> None:
    assert isinstance(_decode_error(_with("last_seq", 99)), ValidationFailed)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (VALID[:-1] + b',"device_id":"other"}', "device_id"),
        (VALID.replace(b'"kind":"process_start"', b'"kind":"file_create","kind":"process_start"', 1), "kind"),
    ],
)
def test_duplicate_keys_are_rejected(data: bytes, key: str) -> None:
    error = _decode_error(data)
    assert isinstance(error, DuplicateKey)
    assert error.field_path == key


def test_pretty_printed_json_without_duplicates_is_accepted() -> None:
    pretty = orjson.dumps(_batch(), option=orjson.OPT_INDENT_2)
    assert codec.decode_record(pretty) == codec.decode_record(VALID)


def test_a_10_mb_string_exceeds_the_record_limit_before_parsing() -> None:
    error = _decode_error(_with("events.0.payload.command_line", "A" * 10_000_000))
    assert isinstance(error, LimitExceeded)
    assert (error.limit, error.maximum) == ("max_record_bytes", 1 << 20)


def test_a_long_string_exceeds_the_string_limit_with_its_path() -> None:
    data = _with("events.1.payload.command_line", "A" * 200_000)
    error = _decode_error(data, Limits(max_record_bytes=10 << 20))
    assert isinstance(error, LimitExceeded)
    assert (error.limit, error.field_path, error.event_id) == (
        "max_string_chars",
        "events.1.payload.command_line",
        "ev-1",
    )
    assert (
        len(codec.decode_record(data, Limits(max_record_bytes=10 << 20, max_string_chars=300_000)).events)
        == 3
    )


def test_a_long_unknown_key_is_caught_by_the_generic_decoder() -> None:
    data = orjson.dumps({"k" * 70_000: 1})
    with pytest.raises(LimitExceeded) as caught:
        codec.decode(CONTRACTS["verdict"], data)
    assert caught.value.limit == "max_string_chars"


def test_an_oversized_batch_exceeds_the_event_limit() -> None:
    error = _decode_error(orjson.dumps(_batch(5001)), Limits(max_record_bytes=10 << 20))
    assert isinstance(error, LimitExceeded)
    assert (error.limit, error.actual, error.device_id) == ("max_events_per_batch", 5001, "dev-1")
    assert isinstance(_decode_error(VALID, Limits(max_events_per_batch=2)), LimitExceeded)


def test_an_empty_batch_is_rejected() -> None:
    record = _batch()
    record["events"] = []
    assert isinstance(_decode_error(orjson.dumps(record)), ValidationFailed)


def test_nul_characters_in_identifiers_are_rejected_but_kept_in_free_text() -> None:
    assert isinstance(_decode_error(_with("device_id", "dev\x00-1")), ValidationFailed)
    registry = _event(0, kind="registry_set", key="HKCU\\Software\\\x00Hidden", data="x")
    decoded = codec.decode_record(orjson.dumps(registry))
    assert decoded.events[0].payload.key == "HKCU\\Software\\\x00Hidden"  # type: ignore[union-attr]


def test_error_ids_are_made_printable_for_logs() -> None:
    record = _batch()
    record["device_id"] = "dev\x1b[31m"
    error = _decode_error(orjson.dumps(record))
    assert error.device_id is not None and error.device_id.isprintable()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _decode_all_ways(data: bytes, name: str) -> None:
    _refused_or_same(data)
    for decode in (lambda d: codec.decode(CONTRACTS[name], d), codec.decode_record, fastcodec.decode_events):
        try:
            decode(data)
        except ContractError:
            pass


@settings(max_examples=300, deadline=None)
@given(value=_json, name=st.sampled_from(sorted(CONTRACTS)))
def test_arbitrary_json_never_escapes_as_another_exception(value: Any, name: str) -> None:
    _decode_all_ways(json.dumps(value, allow_nan=False).encode(), name)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(CONTRACTS)), data=st.data())
def test_contract_shaped_json_with_arbitrary_values_never_escapes(name: str, data: Any) -> None:
    fields = sorted(CONTRACTS[name].model_fields)
    value = data.draw(
        st.dictionaries(st.sampled_from([*fields, "kind", "schema_version"]), _json, max_size=8)
    )
    if "events" in value:
        event_fields = st.sampled_from(sorted(BehaviorEvent.model_fields))
        value["events"] = data.draw(st.lists(st.dictionaries(event_fields, _json), max_size=3))
    _decode_all_ways(json.dumps(value, allow_nan=False).encode(), name)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), data=st.data())
def test_mutated_valid_records_never_escape_as_another_exception(batch: Any, data: Any) -> None:
    raw = bytearray(codec.encode_batch(batch))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    _refused_or_same(bytes(raw))
    try:
        fastcodec.decode_events(bytes(raw))
    except ContractError:
        pass


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300))
def test_random_bytes_never_escape_as_another_exception(raw: bytes) -> None:
    _refused_or_same(raw)
    try:
        fastcodec.decode_events(raw)
    except ContractError:
        pass


def test_unsupported_major_version_in_the_corpus() -> None:
    assert isinstance(_decode_error(_with("schema_version", "2.0")), UnsupportedVersion)


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"kind": "script", "content": "A" * 70_000}, "events.0.payload.content"),
        ({"kind": "dns_query", "query": "q", "answers": ["a", "B" * 70_000]}, "events.0.payload.answers.1"),
        ({"kind": "registry_set", "key": "k", "data": "C" * 70_000}, "events.0.payload.data"),
    ],
)
def test_the_string_limit_covers_optional_and_repeated_free_text(payload: dict[str, Any], path: str) -> None:
    record = _batch(1)
    record["events"][0]["payload"] = payload
    error = _decode_error(orjson.dumps(record))
    assert isinstance(error, LimitExceeded)
    assert (error.limit, error.field_path) == ("max_string_chars", path)


def test_the_string_limit_covers_the_envelope_image() -> None:
    error = _decode_error(_with("events.2.image", "D" * 70_000))
    assert isinstance(error, LimitExceeded)
    assert error.field_path == "events.2.image"
