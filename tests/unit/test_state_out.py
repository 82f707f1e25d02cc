"""State values compressed off the loop: the format old and new workers read, and the writer's order.

What a user would notice: a worker restores every device from a changelog written before this
change (uncompressed records) or after it; a corrupt or oversized compressed value is refused as
unreadable (the device starts empty) rather than crashing or exhausting memory; two states of one
device reach the changelog in the order they were written (compaction keeps the last one); a
record Kafka refused fails its checkpoint (its future raises).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import state_out
from pipeline.errors import StateError
from pipeline.state_out import ZSTD_MAGIC, StateWriter, _pack_all, pack_state, unpack_state
from pipeline.tree import DeviceForest
from pipeline.tree_state import forest_from_bytes, forest_to_bytes

RECORD = forest_to_bytes(DeviceForest("dev-a", "windows"))


def test_a_packed_record_is_smaller_and_reads_back_and_an_old_record_reads_as_it_is() -> None:
    big = RECORD + b" " * 50_000  # JSON with room to compress
    packed = pack_state(big)
    assert packed.startswith(ZSTD_MAGIC) and len(packed) < len(big) // 10
    assert unpack_state(packed, len(big)) == big
    assert unpack_state(RECORD, 10) == RECORD  # written before compression: passed through, any size
    assert forest_from_bytes(unpack_state(pack_state(RECORD), 1 << 20)).device_id == "dev-a"


def test_a_compressed_value_larger_than_the_limit_is_refused_before_it_is_decompressed() -> None:
    bomb = pack_state(b"\0" * (4 << 20))  # 4 MB of zeros: a few hundred bytes compressed
    assert len(bomb) < 1_000
    with pytest.raises(StateError, match="declares 4194304 bytes"):
        unpack_state(bomb, 1 << 20)
    assert len(unpack_state(bomb, 4 << 20)) == 4 << 20


def test_a_frame_without_a_declared_size_is_bounded_by_the_limit() -> None:
    streamed = cramjam.zstd.Compressor()  # a streaming frame does not declare its content size
    streamed.compress(b"x" * 5_000)
    frame = bytes(streamed.finish())
    assert frame.startswith(ZSTD_MAGIC)
    assert unpack_state(frame, 5_000) == b"x" * 5_000
    with pytest.raises(StateError):
        unpack_state(frame, 4_999)


@pytest.mark.parametrize("value", [ZSTD_MAGIC, ZSTD_MAGIC + b"\x60", ZSTD_MAGIC + b"\x20garbage!",
                                   pack_state(RECORD)[:-3], pack_state(RECORD)[:6]])
def test_corrupt_or_truncated_frames_are_unreadable_state(value: bytes) -> None:
    with pytest.raises(StateError):
        unpack_state(value, 1 << 20)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=4096))
def test_any_bytes_behind_the_magic_give_bounded_bytes_or_a_state_error(tail: bytes, limit: int) -> None:
    try:
        out = unpack_state(ZSTD_MAGIC + tail, limit)
    except StateError:
        return
    assert len(out) <= limit


@dataclass
class Producer:
    """Records what it was sent; acks come back when the test says (or fail)."""

    sent: list[tuple[str, bytes, bytes | None, int | None]] = field(default_factory=list)
    acks: list[asyncio.Future[None]] = field(default_factory=list)
    refuse: bool = False

    async def send(self, topic: str, value: bytes | None = None, key: bytes = b"",
                   partition: int | None = None) -> asyncio.Future[None]:
        if self.refuse:
            raise ValueError("message too large")
        self.sent.append((topic, key, value, partition))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        await asyncio.sleep(0)  # like aiokafka, a send may let other tasks run
        return ack


async def test_states_are_sent_compressed_in_the_order_written_and_acked_as_kafka_acks() -> None:
    producer = Producer()
    writer = StateWriter(producer)
    values = [RECORD + str(i).encode() * 200 for i in range(40)]
    futures = []
    for i, value in enumerate(values):
        futures.append(await writer.send("t.state", b"dev-%d" % (i % 3), value, i % 2))
        if i % 7 == 0:
            await asyncio.sleep(0.001)  # sends arrive while an earlier run is being compressed
    futures.append(await writer.send("t.state", b"gone", None, 0))  # a tombstone stays one
    while len(producer.sent) < len(values) + 1:
        await asyncio.sleep(0.01)
    assert [unpack_state(v, 1 << 20) for _, _, v, _ in producer.sent[:-1] if v is not None] == values
    assert [k for _, k, _, _ in producer.sent][:4] == [b"dev-0", b"dev-1", b"dev-2", b"dev-0"]
    assert producer.sent[-1] == ("t.state", b"gone", None, 0)
    assert not any(f.done() for f in futures)  # nothing is acknowledged yet
    producer.acks[0].set_exception(OSError("broker gone"))
    for ack in producer.acks[1:]:
        ack.set_result(None)
    await asyncio.sleep(0)
    with pytest.raises(OSError, match="broker gone"):
        await futures[0]
    await asyncio.gather(*futures[1:])


async def test_a_record_the_producer_refuses_fails_its_future_and_close_fails_the_queued_ones() -> None:
    producer = Producer(refuse=True)
    writer = StateWriter(producer)
    refused = await writer.send("t.state", b"dev-a", RECORD, 0)
    with pytest.raises(ValueError, match="too large"):
        await asyncio.wait_for(refused, 5)
    producer.refuse = False
    queued = [await writer.send("t.state", b"dev-b", RECORD, 0) for _ in range(3)]
    await writer.close()  # before the thread has compressed them
    for future in queued:
        with pytest.raises(StateError, match="closed"):
            await future


async def test_without_offload_the_record_is_with_the_producer_when_send_returns() -> None:
    producer = Producer()
    writer = StateWriter(producer, offload=False)
    ack = await writer.send("t.state", b"dev-a", RECORD, 3)
    assert ack is producer.acks[0]
    (_, key, value, partition), = producer.sent
    assert (key, partition, value is not None and unpack_state(value, 1 << 20)) == (b"dev-a", 3, RECORD)


async def test_a_run_with_tombstones_and_an_empty_value_is_sent_in_order_each_value_readable() -> None:
    producer = Producer()
    writer = StateWriter(producer)
    values = [RECORD, None, b"", RECORD + b" " * 10_000, None]
    futures = [await writer.send("t.state", b"dev-%d" % i, v, 0) for i, v in enumerate(values)]  # one run
    while len(producer.sent) < len(values):
        await asyncio.sleep(0.01)
    sent = [v for _, _, v, _ in producer.sent]
    assert [None if v is None else unpack_state(v, 1 << 20) for v in sent] == values
    assert all(v is None or v.startswith(ZSTD_MAGIC) for v in sent)
    for ack in producer.acks:
        ack.set_result(None)
    await asyncio.gather(*futures)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.none() | st.binary(max_size=3_000), max_size=12))
def test_a_run_compressed_in_one_call_gives_each_value_its_own_frame_in_place(
        values: list[bytes | None]) -> None:
    packed = _pack_all(values)
    assert [v is None for v in packed] == [v is None for v in values]
    assert [None if v is None else unpack_state(v, 3_000) for v in packed] == values
    assert all(v is None or v.startswith(ZSTD_MAGIC) for v in packed)  # declared sizes: read above


def test_threads_packing_at_once_each_get_their_own_values_back() -> None:
    """Each thread compresses with its own zstd context (a shared one would mix their frames)."""
    from concurrent.futures import ThreadPoolExecutor

    def pack_many(seed: int) -> bool:
        values = [RECORD + bytes([seed]) * (1_000 + 37 * i) for i in range(60)]
        singles = [unpack_state(pack_state(v), 1 << 20) for v in values]
        runs = [unpack_state(v, 1 << 20) for v in _pack_all(list(values)) if v is not None]
        return singles == values and runs == values

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(pack_many, range(32)))


async def test_values_sent_while_more_keep_coming_are_compressed_in_few_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit point sends a state per device with a loop turn every few devices: the runs grow to
    `RUN_BYTES` (each run costs the loop's thread GIL handovers), and the last one goes once the
    sends stop."""
    runs: list[int] = []

    def counting(values: list[bytes | None]) -> list[bytes | None]:
        runs.append(len(values))
        return _pack_all(values)

    monkeypatch.setattr(state_out, "_pack_all", counting)
    producer = Producer()
    writer = StateWriter(producer)
    value = RECORD + b" " * (100_000 - len(RECORD))
    for i in range(60):  # 6 MB, a turn of the loop after each state
        await writer.send("t.state", b"dev-%d" % i, value, 0)
        await asyncio.sleep(0)
    while len(producer.sent) < 60:
        await asyncio.sleep(0.01)
    assert sum(runs) == 60 and len(runs) == 2 and runs[0] >= state_out.RUN_BYTES // len(value)


async def test_a_value_sent_alone_is_not_held_back_waiting_for_more() -> None:
    producer = Producer()
    writer = StateWriter(producer)
    await writer.send("t.state", b"dev-a", RECORD, 0)
    for _ in range(200):
        if producer.sent:
            break
        await asyncio.sleep(0.01)
    assert [k for _, k, _, _ in producer.sent] == [b"dev-a"]
