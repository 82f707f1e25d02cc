"""An alert's evidence built from decoded events without validating them again.

`pipeline.evidence` fills `BehaviorEvent` models straight from the decoder's `FastEvent`s. What a
SOC or a re-reading consumer would notice if that went wrong: an evidence model that differs from
the one pydantic validates from the same event (a value, a type, a time zone, the field order its
dump follows), or an alert whose evidence no longer re-parses under the contract. These tests hold
every built model equal to the validated one, attribute for attribute and byte for byte, for every
payload kind and time zone the decoder accepts, and every alert made from decoded evidence equal to
the contract's own parse of the bytes sent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemas_strategies import batches, events
from test_policy import NOW, incident

from pipeline.evidence import behavior_event, evidence_models
from pipeline.outputs import OutputTopics, decision_records
from pipeline.policy import Policy, PolicyConfig
from schemas.alerts import Alert
from schemas.codec import encode, encode_batch
from schemas.common import Mode
from schemas.errors import ContractError
from schemas.events import PAYLOAD_TYPES, BehaviorEvent, EventBatch, ProcessStart
from schemas.fastcodec import FastEvent, FastScript, decode_events
from schemas.signing import SigningKey

TOPICS = OutputTopics("alerts", "verdicts", "commands", "dlq")
KEY = SigningKey.generate("test-key")


def _validated(event: FastEvent) -> BehaviorEvent:
    """What the alert's validation made of a decoded event before: its plain values, validated."""
    return BehaviorEvent.model_validate(msgspec.to_builtins(event))


def _same_model(built: BehaviorEvent, validated: BehaviorEvent) -> None:
    assert type(built) is BehaviorEvent and type(built.payload) is type(validated.payload)
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_dump() == validated.model_dump()
    for mine, theirs in ((built, validated), (built.payload, validated.payload)):
        assert list(vars(mine)) == list(vars(theirs))  # the dump follows this order
        assert {k: type(v) for k, v in vars(mine).items() if k not in ("ts", "payload")} == {
            k: type(v) for k, v in vars(theirs).items() if k not in ("ts", "payload")
        }
        assert mine.model_fields_set == theirs.model_fields_set
        assert mine.__pydantic_extra__ is None and mine.__pydantic_private__ is None
    assert built.ts.utcoffset() == validated.ts.utcoffset()
    assert hash(built) == hash(validated)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_a_decoded_event_becomes_the_model_pydantic_validates_from_it(batch: EventBatch) -> None:
    for event in decode_events(encode_batch(batch)):
        assert type(event) is FastEvent
        _same_model(behavior_event(event), _validated(event))


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(hours=2), timedelta(hours=-5, minutes=-30)])
def test_every_payload_kind_in_any_time_zone_is_built_as_validated(offset: timedelta) -> None:
    ts = datetime(2026, 5, 1, 9, 0, 0, 45_000, tzinfo=timezone(offset))
    seen = set()
    for kind in PAYLOAD_TYPES:
        for event in _one_of_each(kind.value, ts):
            _same_model(behavior_event(event), _validated(event))
            seen.add(type(event.payload).kind)
    assert seen == {kind.value for kind in PAYLOAD_TYPES}


def _one_of_each(kind: str, ts: datetime) -> tuple[Any, ...]:
    payloads: dict[str, dict[str, Any]] = {
        "process_start": {"image": "C:\\x.exe", "sha256": "ab" * 32, "pid": 4, "uid": 0},
        "process_end": {"pid": 4, "exit_code": -1},
        "file_create": {"path": "/tmp/a"}, "file_write": {"path": "/tmp/a", "bytes_written": 3},
        "file_delete": {"path": "/tmp/a"}, "file_rename": {"path": "/tmp/b", "old_path": "/tmp/a"},
        "registry_set": {"key": "HKLM\\x", "data": "\x00hidden", "operation": "create_key"},
        "network_connect": {"dst_ip": "10.0.0.1", "dst_port": 443, "protocol": "udp", "outbound": False},
        "dns_query": {"query": "example.org", "answers": ["1.2.3.4", "::1"]},
        "image_load": {"path": "C:\\a.dll", "signed": True, "signer": "Contoso"},
        "process_access": {"target_image": "lsass.exe", "granted_access": 0x1010, "target_process_key": "k"},
        "remote_thread": {"target_image": "x.exe", "start_address": "0x1"},
        "script": {"content": "Invoke-Mimikatz", "interpreter": "powershell"},
    }  # fmt: skip
    event = BehaviorEvent.model_validate({
        "event_id": "e-1", "device_id": "dev-1", "seq": 1, "ts": ts, "platform": "windows",
        "process_key": "p-1", "payload": {"kind": kind, **payloads[kind]},
    })  # fmt: skip
    return decode_events(encode_batch(EventBatch.of([event])))


def test_models_and_anything_else_are_handed_over_as_they_are() -> None:
    model = BehaviorEvent(event_id="e", device_id="d", seq=1, ts=NOW_TS, platform="linux", process_key="p",
                          payload=ProcessStart(image="/bin/sh"))  # fmt: skip
    restored = {"not": "an event"}
    (decoded,) = decode_events(encode_batch(EventBatch.of([model])))
    built, same, other = evidence_models((decoded, model, restored))
    assert built == model and same is model and other is restored


NOW_TS = datetime(2026, 5, 1, 9, tzinfo=UTC)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evidence=st.lists(events(st.just("dev-1")), min_size=1, max_size=5),
       mode=st.sampled_from(["audit", "block"]))  # fmt: skip
def test_an_alert_with_decoded_evidence_reparses_under_the_contract_as_itself(
    evidence: list[BehaviorEvent], mode: str
) -> None:
    decoded = decode_events(encode_batch(EventBatch.of(evidence)))
    decisions = Policy(PolicyConfig(default_mode=Mode(mode))).decide(incident(evidence=tuple(decoded)), NOW)
    alert = decisions[0]
    assert isinstance(alert, Alert)
    assert alert.process_tree.evidence == tuple(evidence)
    sent = decision_records(decisions, TOPICS, KEY)[0].value
    assert sent is not None and sent == encode(alert)
    assert Alert.model_validate_json(sent) == alert


def test_a_restored_event_out_of_contract_is_still_refused() -> None:
    (decoded,) = _one_of_each("file_write", NOW_TS)
    hostile = {**msgspec.to_builtins(decoded), "seq": -1}
    with pytest.raises(ValueError, match="seq"):
        Policy(PolicyConfig(default_mode=Mode.BLOCK)).decide(incident(evidence=(decoded, hostile)), NOW)


def test_structs_that_drift_from_the_models_stop_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.evidence as evidence

    evidence._same_fields()  # as at import: the Structs mirror the models today
    monkeypatch.setattr(evidence, "_FIELDS", tuple(reversed(evidence._FIELDS)))
    with pytest.raises(TypeError, match="not BehaviorEvent's"):
        evidence._same_fields()


def test_evidence_that_is_no_json_text_is_refused_with_the_alert_named_and_never_written() -> None:
    """The decoder refuses a lone surrogate (no FastEvent holds one); one built by hand is refused
    when the alert is written, as a ValueError the detector counts."""
    (decoded,) = _one_of_each("script", NOW_TS)
    raw = encode_batch(EventBatch.of([behavior_event(decoded)]))
    with pytest.raises(ContractError):
        decode_events(raw.replace(b'"content":"Invoke-Mimikatz"', b'"content":"\\ud800"'))
    surrogate = msgspec.structs.replace(decoded, payload=FastScript(content="\ud800"))
    with pytest.raises(ValueError, match=r"alert \w+ cannot be written as JSON"):
        Policy(PolicyConfig(default_mode=Mode.BLOCK)).decide(incident(evidence=(surrogate,)), NOW)
