"""The worker's producers know every topic's partitions once started (`pipeline.kafka_io.make_producer`).

What a user would notice: the worker's first state record (and first decision) is handed to Kafka
at once, instead of waiting for a metadata round trip that takes several turns of an event loop
busy encoding the other devices' states (86-108 ms of the benchmark's last commit point).
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.kafka_io import make_producer, make_state_producer, read_compacted
from schemas.topics import KafkaSettings

pytestmark = pytest.mark.integration


async def test_a_started_producer_sends_its_first_record_without_asking_for_metadata(
        kafka_settings: KafkaSettings) -> None:
    kafka = kafka_settings
    topic = f"rf-test-warm-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
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
