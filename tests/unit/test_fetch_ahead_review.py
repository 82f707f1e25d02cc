"""pipeline.fetch_ahead under a stalled thread and hostile message sets (review of session L).

The module promises bounded memory however slow its thread is: at most `KEPT` answers and the payloads
of the jobs it still wants. A job it dropped must not keep its payload (a batch of up to
`MAX_AHEAD_BYTES`) alive while it waits in the thread's queue; on a busy host the thread may not run
for a while as the worker reads (and submits) batch after batch.
"""

from __future__ import annotations

import os
import random
import threading
import time
import tracemalloc

import pytest
import test_fetch_ahead
import zstandard
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import _MemoryRecordsPy as PureMemoryRecords
from test_fetch_ahead import _message_set, _outcome, _read, patched  # noqa: F401 - patched: a fixture

from pipeline import fetch_ahead, kafka_zstd

stalled = test_fetch_ahead.stalled  # the fixture: the thread's decode blocks until it is set


def test_payloads_dropped_while_the_thread_is_stalled_are_not_held(stalled: threading.Event) -> None:
    ahead = fetch_ahead._Ahead()
    size, count = 100_000, 200
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            ahead.submit(os.urandom(size))  # the reader read (and dropped) the batch meanwhile
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ahead._order) == fetch_ahead.KEPT
    # the kept jobs' payloads (and the one the stalled thread is decoding), not every one submitted
    assert held < (fetch_ahead.KEPT + 4) * size, f"{held / size:.0f} payloads held"


def test_a_stalled_thread_still_answers_the_kept_payloads_exactly(stalled: threading.Event) -> None:
    ahead = fetch_ahead._Ahead()
    frames = [zstandard.ZstdCompressor().compress(b"%d," % i * 700) for i in range(fetch_ahead.KEPT * 3)]
    for frame in frames:
        ahead.submit(frame)
    assert ahead.take(frames[-1]) is None  # not decoded yet: the reader decodes it itself
    stalled.set()
    deadline = time.monotonic() + 10
    while any(job.done.locked() for _, job in ahead._order):
        assert time.monotonic() < deadline, "the thread did not answer in 10 s"
        time.sleep(0.001)
    for i, frame in enumerate(frames[:-1]):
        answer = ahead.take(frame)
        assert answer is None or answer == b"%d," % i * 700  # dropped ones: decoded by the reader
    assert ahead.taken == fetch_ahead.KEPT - 1


@pytest.mark.usefixtures("patched")
def test_hostile_message_sets_read_ahead_fail_or_read_as_plainly() -> None:
    """Bytes changed anywhere in a fetched set of zstd batches (or the set cut short): reading it with
    batches sent ahead gives the records or the error that reading it plainly gives."""
    data, _ = _message_set(["zstd"] * 5)
    rng = random.Random(5)
    for _ in range(150):
        changed = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            changed[rng.randrange(len(changed))] = rng.randrange(256)
        hostile = bytes(changed[: rng.randrange(len(changed))] if rng.random() < 0.2 else changed)
        plain = _outcome(lambda: _read(PureMemoryRecords(hostile)))  # noqa: B023 - called at once
        ahead_records = fetch_ahead._AheadRecords(PureMemoryRecords(hostile), hostile)
        assert _outcome(lambda: _read(ahead_records, settle=True)) == plain  # noqa: B023
    assert fetch_ahead._ahead.taken > 0  # the thread's answers were used


def _legacy(magic: int, count: int) -> bytes:
    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=0, batch_size=1 << 20)
    for i in range(count):
        assert builder.append(i, timestamp=1_700_000_000_000 + i if magic else None, key=b"k%d" % i,
                              value=b"v" * 80) is not None
    return bytes(builder.build())


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("magic", [0, 1])
def test_a_set_of_old_format_messages_reads_as_plainly(compiled: bool, magic: int) -> None:
    """aiokafka reads magic 0/1 messages (a log written before v2, served as it is) as batches without a
    base offset: read ahead or not, the same records come out (not an AttributeError)."""
    plain_class = (pytest.importorskip("aiokafka.record._crecords.memory_records").MemoryRecords if compiled
                   else PureMemoryRecords)
    data = _legacy(magic, 5)
    plain = _read(plain_class(data))
    assert len(plain) == 5
    assert _read(fetch_ahead._AheadRecords(plain_class(data), data)) == plain


def test_answers_kept_are_bounded_for_a_payload_of_several_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's first frame declares its size, not the batch's (several frames back to back, as a
    streaming producer writes, or a hostile one): the answers kept for batches never read (a partition
    revoked, a seek) stay within `KEPT` x `MAX_AHEAD_BYTES`, and a batch read gets its bytes."""
    monkeypatch.setattr(fetch_ahead, "MAX_AHEAD_BYTES", 1 << 20)
    compressor = zstandard.ZstdCompressor()
    payloads = [compressor.compress(b"%d" % i * 300_000) + compressor.compress(b"z" * (4 << 20))
                for i in range(fetch_ahead.KEPT)]
    assert all(fetch_ahead._bounded(p) for p in payloads)  # what `batch_payloads` sends ahead
    ahead = fetch_ahead._Ahead()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for payload in payloads:
            ahead.submit(payload)
        deadline = time.monotonic() + 20
        while any(job.done.locked() for _, job in ahead._order):
            assert time.monotonic() < deadline, "the thread did not answer in 20 s"
            time.sleep(0.001)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < fetch_ahead.KEPT * ((1 << 20) + 64 * 1024), f"{held >> 20} MB held"
    whole = b"3" * 300_000 + b"z" * (4 << 20)
    assert ahead.take(payloads[3]) in (None, whole)  # None: the reader decodes it itself
    assert kafka_zstd.zstd_decode(payloads[3]) == whole


def test_the_thread_never_decodes_a_payload_of_several_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several frames back to back pass the first frame's size check, but only the reader decodes them
    (through aiokafka's own function): a hostile batch expanding far beyond what its first frame
    declares is never decompressed a second time on the thread."""
    on_thread: list[int] = []
    original = kafka_zstd._original_decode or (lambda payload: b"")

    def counting(payload: bytes) -> bytes:
        if threading.current_thread().name == "zstd-ahead":
            on_thread.append(len(payload))
        return original(payload)

    monkeypatch.setattr(kafka_zstd, "_original_decode", counting)
    compressor = zstandard.ZstdCompressor()
    payload = compressor.compress(b"a" * 300_000) + compressor.compress(b"b" * (2 << 20))
    single = compressor.compress(b"c" * 300_000)
    ahead = fetch_ahead._Ahead()
    ahead.submit(payload)
    ahead.submit(single)
    deadline = time.monotonic() + 20
    while any(job.done.locked() for _, job in ahead._order):
        assert time.monotonic() < deadline, "the thread did not answer in 20 s"
        time.sleep(0.001)
    assert ahead.take(payload) is None  # no answer: the reader decodes it
    assert ahead.take(single) == b"c" * 300_000  # a single frame is still decoded ahead
    assert on_thread == []
    assert kafka_zstd.zstd_decode(payload) == b"a" * 300_000 + b"b" * (2 << 20)


def test_a_thread_that_is_gone_is_started_again() -> None:
    """After a fork (or any end of the thread) the next submit starts a new one: batches are decoded
    ahead again and the queue does not only grow."""
    ahead = fetch_ahead._Ahead()
    first = zstandard.ZstdCompressor().compress(b"1" * 300_000)
    ahead.submit(first)
    old = ahead._thread
    assert old is not None
    ahead._jobs.put(None)  # ends the thread, as a fork leaves the child without it
    old.join(10)
    assert not old.is_alive()
    second = zstandard.ZstdCompressor().compress(b"2" * 300_000)
    ahead.submit(second)
    assert ahead._thread is not old and ahead._thread is not None and ahead._thread.is_alive()
    deadline = time.monotonic() + 20
    while (answer := ahead.take(second)) is None and time.monotonic() < deadline:
        ahead.submit(second)  # taken or late: submit again until the new thread answers it
        time.sleep(0.01)
    assert answer == b"2" * 300_000
