"""Spliced EventBatch records: the bytes the agent sends equal what the contracts' codec writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from schemas_strategies import batches, events

from agents.batch_codec import encode_event_fast, splice_batch
from schemas.codec import decode_batch, encode_batch, encode_event
from schemas.events import BehaviorEvent, EventBatch


@settings(max_examples=200, deadline=None)
@given(events())
def test_fast_event_encoding_is_the_codecs_encoding(event: BehaviorEvent) -> None:
    assert encode_event_fast(event) == encode_event(event)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_a_spliced_batch_is_byte_for_byte_the_codecs_batch(batch: EventBatch) -> None:
    records = [encode_event_fast(event) for event in batch.events]
    value = splice_batch(batch.device_id, batch.first_seq, batch.last_seq, records)
    assert value == encode_batch(batch)
    assert decode_batch(value) == batch


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        splice_batch("dev-a", 0, 0, [])
