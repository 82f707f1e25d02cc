"""`CachingPartitioner`: every keyed record goes to the partition aiokafka's default partitioner picks.

The worker's outputs must land where any other Kafka client would put the same key (the verdict
topic is compacted by artifact, consumers read a device's alerts in order from one partition), so
the cache may only save the hashing, never change an answer.
"""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kafka_io import CachingPartitioner

DEFAULT = DefaultPartitioner()
PARTITIONS = st.lists(st.integers(0, 1000), min_size=1, max_size=64, unique=True).map(sorted)


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.binary(max_size=200), min_size=1, max_size=20), partitions=PARTITIONS)
def test_every_key_goes_where_the_default_partitioner_puts_it(
    keys: list[bytes], partitions: list[int]
) -> None:
    partitioner = CachingPartitioner()
    for key in keys + keys:  # the second time from the cache
        assert partitioner(key, partitions, partitions) == DEFAULT(key, partitions, partitions)


def test_a_cached_key_follows_a_change_in_the_partition_count() -> None:
    partitioner = CachingPartitioner()
    key = b"device-00042"
    for count in (1, 3, 12, 7, 12):
        partitions = list(range(count))
        assert partitioner(key, partitions, partitions) == DEFAULT(key, partitions, partitions)


def test_the_cache_is_bounded_and_stays_correct_when_it_starts_over() -> None:
    partitioner = CachingPartitioner(size=4)
    partitions = list(range(6))
    for i in range(50):
        key = f"artifact-{i % 9}".encode()
        assert partitioner(key, partitions, partitions) == DEFAULT(key, partitions, partitions)
        assert len(partitioner._hashes) <= 4


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    partitioner = CachingPartitioner()
    for _ in range(20):
        assert partitioner(None, [0, 1, 2, 3], [2]) == 2
    assert partitioner(None, [5], []) == 5
