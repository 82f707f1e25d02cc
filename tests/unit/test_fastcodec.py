"""The fast events decoder: same values as the pydantic codec, or no answer (then the codec decides).

The safety property under test: whatever `fast_events` accepts, `codec.decode_record` accepts too,
with equal values. Valid records from every producer shape are generated; hostile records are the
codec's own corpus (`test_codec_hostile.py` also runs every case through `decode_events`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemas_strategies import batches, events

from schemas import codec
from schemas.codec import Limits
from schemas.errors import ContractError, DuplicateKey
from schemas.events import PAYLOAD_TYPES, BehaviorEvent, EventBatch
from schemas.fastcodec import (
    FastBatch,
    FastEvent,
    decode_events,
    fast_events,
    to_behavior_event,
    to_json_dict,
)


def _same(fast: FastEvent, model: BehaviorEvent) -> None:
    """Every attribute the core reads is equal (times: the same instant and the same offset)."""
    for name in BehaviorEvent.model_fields:
        if name == "payload":
            continue
        assert getattr(fast, name) == getattr(model, name), name
    assert fast.ts.utcoffset() == model.ts.utcoffset()
    assert fast.payload.kind == model.payload.kind
    for name in type(model.payload).model_fields:
        assert getattr(fast.payload, name) == getattr(model.payload, name), name


def _equal_or_refused(data: bytes, limits: Limits = codec.DEFAULT_LIMITS) -> None:
    """The safety property: a fast answer implies the codec's answer, with the same values."""
    fast = fast_events(data, limits)
    if fast is None:
        return
    models = codec.decode_record(data, limits).events  # raises if the fast path accepted too much
    assert len(fast) == len(models)
    for one, model in zip(fast, models, strict=True):
        _same(one, model)


def test_the_structs_mirror_the_contract_field_for_field_in_order() -> None:
    assert FastEvent.__struct_fields__ == tuple(BehaviorEvent.model_fields)
    assert FastBatch.__struct_fields__ == tuple(EventBatch.model_fields)
    fast_payloads = {cls.kind: cls for cls in _fast_payload_classes()}
    assert set(fast_payloads) == {kind.value for kind in PAYLOAD_TYPES}
    for kind, model in PAYLOAD_TYPES.items():
        assert ("kind", *fast_payloads[kind.value].__struct_fields__) == tuple(model.model_fields), kind


def _fast_payload_classes() -> list[Any]:
    from schemas import fastcodec

    return [getattr(fastcodec, name) for name in dir(fastcodec)
            if name.startswith("Fast") and hasattr(getattr(fastcodec, name), "kind")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_what_agents_write_takes_the_fast_path_with_the_codecs_values(batch: EventBatch) -> None:
    raw = codec.encode_batch(batch)
    fast = fast_events(raw)
    assert fast is not None
    for one, model in zip(fast, codec.decode_record(raw).events, strict=True):
        _same(one, model)
        assert to_behavior_event(one) == model
        assert to_json_dict(one) == model.model_dump(mode="json")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events())
def test_a_single_event_record_is_a_batch_of_one(event: BehaviorEvent) -> None:
    raw = codec.encode_event(event)
    fast = fast_events(raw)
    assert fast is not None and len(fast) == 1
    _same(fast[0], event)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_other_key_orders_and_omitted_defaults_are_proved_through_orjson(batch: EventBatch) -> None:
    """Another producer's shape (defaults left out, keys reversed) still decodes fast, to equal values."""
    record = batch.model_dump(mode="json", exclude_defaults=True)
    for event, model in zip(record["events"], batch.events, strict=True):
        event["payload"]["kind"] = model.payload.kind  # the tag is required, default or not
    record["events"] = [dict(reversed(event.items())) for event in record["events"]]
    raw = orjson.dumps(dict(reversed(record.items())))
    fast = fast_events(raw)
    assert fast is not None
    _equal_or_refused(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), data=st.data())
def test_mutated_records_are_refused_or_equal_to_the_codecs(batch: EventBatch, data: Any) -> None:
    raw = bytearray(codec.encode_batch(batch))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.sampled_from(b'0129aAzZ"\\:,{}[]-. \n\x00'))
    _equal_or_refused(bytes(raw))


def _event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": "1.0", "event_id": "ev-1", "device_id": "dev-1", "seq": 1,
        "ts": "2024-05-01T10:00:00.000001Z", "platform": "windows", "process_key": "{P1}",
        "parent_process_key": None, "image": None,
        "payload": {"kind": "file_write", "path": "C:\\x.tmp", "sha256": None, "bytes_written": None},
    }  # fmt: skip
    event.update(changes)
    return event


def _payload(**changes: Any) -> dict[str, Any]:
    return {"kind": "file_write", "path": "C:\\x.tmp", "sha256": None, "bytes_written": None, **changes}


@pytest.mark.parametrize(
    "event",
    [
        _event(ts="2024-05-01t10:00:00Z"),
        _event(ts="2024-05-01T10:00:00z"),
        _event(ts="2024-05-01 10:00:00Z"),
        _event(ts="2024-05-01T10:00:00.1234567Z"),
        _event(ts="2024-05-01T10:00:00+00:00"),
        _event(ts="2024-05-01T10:00:00+0200"),
        _event(ts="2024-05-01T10:00:60Z"),
        _event(ts="1990-01-01T00:30:00+01:00"),
        _event(ts="2099-12-31T23:30:00-01:00"),
        _event(ts="2024-05-01T10:00:00"),
        _event(event_id="ev-1\n"),
        _event(process_key="{P1} "),
        _event(parent_process_key="\x7f"),
        _event(device_id="dev-1\n"),
        _event(schema_version="1.01"),
        _event(schema_version="1.0\n"),
        _event(seq=-0),
        _event(payload=_payload(sha256="A" * 64)),
        _event(payload=_payload(sha256="a" * 64 + "\n")),
        _event(payload=_payload(bytes_written=True)),
        _event(payload=_payload(extra=1)),
        _event(payload={"kind": "process_access", "target_image": "lsass.exe", "granted_access": 16,
                        "target_process_key": "k\n"}),
        _event(payload={"kind": "script", "content": "x" * 70_000}),
    ],
)
def test_edge_values_are_refused_or_equal_to_the_codecs(event: dict[str, Any]) -> None:
    _equal_or_refused(orjson.dumps(event))
    batch = {"schema_version": "1.0", "device_id": "dev-1", "first_seq": 1, "last_seq": 1, "events": [event]}
    _equal_or_refused(orjson.dumps(batch))


def test_an_upper_case_hash_takes_the_codec_which_lower_cases_it() -> None:
    raw = orjson.dumps(_event(payload=_payload(sha256="AB" * 32)))
    assert fast_events(raw) is None
    (event,) = decode_events(raw)
    assert isinstance(event, BehaviorEvent) and event.payload.sha256 == "ab" * 32  # type: ignore[union-attr]


def test_duplicate_keys_are_never_accepted_by_the_fast_path() -> None:
    raw = orjson.dumps(_event())
    twice = raw[:-1] + b',"seq":2}'
    assert fast_events(twice) is None
    with pytest.raises(DuplicateKey):
        decode_events(twice)


def test_pretty_printed_json_is_accepted_through_the_codec() -> None:
    pretty = orjson.dumps(_event(), option=orjson.OPT_INDENT_2)
    assert fast_events(pretty) is None
    (event,) = decode_events(pretty)
    assert isinstance(event, BehaviorEvent) and event.seq == 1


def test_a_batch_of_another_device_or_seq_range_is_refused() -> None:
    batch = {"device_id": "dev-2", "first_seq": 1, "last_seq": 1, "events": [_event()]}
    assert fast_events(orjson.dumps(batch)) is None
    batch.update(device_id="dev-1", last_seq=2)
    assert fast_events(orjson.dumps(batch)) is None
    batch.update(last_seq=1)
    assert fast_events(orjson.dumps(batch)) is not None


def test_stricter_limits_than_the_defaults_take_the_codec() -> None:
    raw = orjson.dumps(_event(image="i" * 100))
    assert fast_events(raw, Limits(max_string_chars=50)) is None
    with pytest.raises(ContractError):
        decode_events(raw, Limits(max_string_chars=50))
    assert fast_events(raw, Limits(max_events_per_batch=0)) is None
    assert fast_events(raw, Limits(max_record_bytes=10)) is None


def test_evidence_made_from_a_fast_event_is_the_codecs_model() -> None:
    raw = orjson.dumps(_event(ts="2024-05-01T12:00:00.500000+02:00"))
    (fast,) = fast_events(raw) or ()
    model = to_behavior_event(fast)
    assert model == codec.decode_record(raw).events[0]
    assert model.ts == datetime.fromisoformat("2024-05-01T10:00:00.5+00:00")


def _attack() -> list[BehaviorEvent]:
    from pipeline.eventkit import EventKit

    kit = EventKit("dev-9")
    drop = r"C:\Users\ann\AppData\Local\Temp\upd.exe"
    return [
        kit.start("e", r"C:\Windows\explorer.exe", "explorer.exe"),
        kit.start("w", r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE",
                  "WINWORD.EXE /n a.docm", parent="e"),
        kit.start("p", r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
                  "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoA", parent="w"),
        kit.write("p", drop),
        kit.start("u", drop, "upd.exe", parent="p", sha256="9f" * 32),
        kit.start("v", r"C:\Windows\System32\vssadmin.exe", "vssadmin.exe delete shadows /all /quiet",
                  parent="u"),
        kit.reg("u", r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run", "upd", drop),
    ]  # fmt: skip


def test_the_detector_decides_the_same_on_fast_events_and_keeps_them_as_evidence() -> None:
    """Same trees, same state bytes, same alerts (evidence included) from either decoder's events."""
    from pipeline.detect import Detector
    from pipeline.model.provisional import ProvisionalRules
    from pipeline.tree_state import forest_to_dict

    raw = codec.encode_batch(EventBatch.of(_attack()))
    fast = fast_events(raw)
    assert fast is not None
    runs = []
    for decoded in (codec.decode_record(raw).events, fast):
        detector = Detector(ProvisionalRules())
        now = 1_700_000_000_000
        decisions = detector.process(decoded, now) + detector.flush(now + 10_000)
        runs.append((decisions, forest_to_dict(detector.forests["dev-9"])))
    assert runs[0][0] and runs[0] == runs[1]


def test_the_pipeline_benchmark_measures_what_agents_write() -> None:
    from bench._pipeline_data import check_sample, records

    values = [value for _, value in records(400, 50, 4)] + [value for _, value in records(20, 1, 4)]
    check_sample(values)  # raises unless the bytes are `encode_batch`'s
    assert all(fast_events(value) is not None for value in values)
