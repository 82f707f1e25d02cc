"""Every contract survives encode -> decode unchanged, and its JSON matches its published schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemas_strategies import ALL_MODELS, batches, events

from schemas import codec
from schemas.common import Contract
from schemas.events import EventBatch
from schemas.jsonschema import CONTRACTS, schema_of

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_every_contract_has_a_strategy(name: str) -> None:
    assert name in ALL_MODELS


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
@_SETTINGS
@given(data=st.data())
def test_round_trip(name: str, data: Any) -> None:
    model: Contract = data.draw(ALL_MODELS[name])
    encoded = codec.encode(model)
    decoded = codec.decode(CONTRACTS[name], encoded)
    assert decoded == model
    assert codec.encode(decoded) == encoded  # stable: a second trip writes the same bytes
    jsonschema.Draft202012Validator(schema_of(name)).validate(orjson.loads(encoded))


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_published_schema_rejects_an_unknown_field(name: str) -> None:
    validator = jsonschema.Draft202012Validator(schema_of(name))
    assert not validator.is_valid({"surely_not_a_field": 1})


@_SETTINGS
@given(batch=batches())
def test_batch_round_trip_through_batch_and_record_decoders(batch: EventBatch) -> None:
    encoded = codec.encode_batch(batch)
    assert codec.decode_batch(encoded) == batch
    assert codec.decode_record(encoded) == batch


@_SETTINGS
@given(event=events())
def test_single_event_record_is_wrapped_as_batch_of_one(event: Any) -> None:
    batch = codec.decode_record(codec.encode_event(event))
    assert batch.events == (event,)
    assert (batch.device_id, batch.first_seq, batch.last_seq) == (event.device_id, event.seq, event.seq)
    assert codec.decode_event(codec.encode_event(event)) == event


def test_upper_case_sha256_is_normalised_to_lower_case() -> None:
    raw = (
        b'{"event_id":"e1","device_id":"d1","seq":1,"ts":"2024-05-01T10:00:00Z","platform":"windows",'
        b'"process_key":"{A}","payload":{"kind":"file_create","path":"C:\\\\x.exe","sha256":"'
        + b"AB" * 32
        + b'"}}'
    )
    assert codec.decode_event(raw).payload.sha256 == "ab" * 32  # type: ignore[union-attr]
