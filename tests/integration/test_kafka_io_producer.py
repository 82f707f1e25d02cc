"""The worker's producers know every topic's partitions once started (`pipeline.kafka_io.make_producer`).

What a user would notice: the worker's first state record (and first decision) is handed to Kafka
at once, instead of waiting for a metadata round trip that takes several turns of an event loop
busy encoding the other devices' states (86-108 ms of the benchmark's last commit point).
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.kafka_io import make_producer, make_state_producer, prepare_state_topic, read_compacted
from schemas.topics import KafkaSettings

pytestmark = pytest.mark.integration


async def _created(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    """Create `topics` and wait until the broker's metadata lists them (a busy broker answers the
    create before its metadata cache knows the topic: the tests then saw "does not exist")."""
    await admin.create_topics(topics)
    names = {topic.name for topic in topics}
    for _ in range(200):
        if names <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"topics {sorted(names)} not listed 10 s after their creation")


async def test_a_started_producer_sends_its_first_record_without_asking_for_metadata(
        kafka_settings: KafkaSettings) -> None:
    kafka = kafka_settings
    topic = f"rf-test-warm-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await _created(admin, [NewTopic(topic, 3, 1)])
        for make in (make_producer, make_state_producer):
            producer = make(kafka, max_request_bytes=1 << 20)
            await producer.start()
            try:
                assert producer.client.cluster.partitions_for_topic(topic) == {0, 1, 2}
                sent = producer.send(topic, value=b"v", key=b"dev-a", partition=2)
                waited = sent.send(None)  # the coroutine runs to its end without suspending once
                sent.close()
                pytest.fail(f"the first send waited for {waited!r}")
            except StopIteration as done:
                await done.value
            finally:
                await producer.stop()
        read = await read_compacted(kafka, topic, {2}, 30)
        assert read[2] == {b"dev-a": b"v"}
    finally:
        await admin.delete_topics([topic])
        await admin.close()


@pytest.mark.parametrize("state_limit", [256 << 10, 8 << 20])
async def test_a_checkpoints_states_sent_at_once_fit_the_state_topic_it_creates(
        kafka_settings: KafkaSettings, state_limit: int) -> None:
    """Many states sent back to back go out in batches the state topic accepts, also when the state
    limit (and so the topic's `max.message.bytes`) is under a megabyte."""
    events, state = (f"rf-test-batch-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("events", "state"))
    admin = AIOKafkaAdminClient(**kafka_settings.client_kwargs())
    await admin.start()
    try:
        await _created(admin, [NewTopic(events, 2, 1)])
        await prepare_state_topic(kafka_settings, events, state, max_message_bytes=state_limit)
        producer = make_state_producer(kafka_settings, max_request_bytes=state_limit + (64 << 10))
        await producer.start()
        try:
            values = {b"dev-%d" % i: os.urandom(40_000) for i in range(80)}  # 3.2 MB, incompressible
            acks = [await producer.send(state, value=v, key=k, partition=i % 2)
                    for i, (k, v) in enumerate(values.items())]
            await asyncio.wait_for(asyncio.gather(*acks), 60)
        finally:
            await producer.stop()
        read = await read_compacted(kafka_settings, state, {0, 1}, 30)
        assert {**read[0], **read[1]} == values
    finally:
        await admin.delete_topics([events, state])
        await admin.close()
