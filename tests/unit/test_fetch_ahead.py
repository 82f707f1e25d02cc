"""pipeline.fetch_ahead: batches decompressed ahead on a thread read as those decompressed when read."""

from __future__ import annotations

import contextvars
import importlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zstandard
from aiokafka.consumer import fetcher
from aiokafka.record import default_records as pure
from aiokafka.record.memory_records import _MemoryRecordsPy as PureMemoryRecords

from pipeline import fetch_ahead, kafka_zstd

_MEMORY_RECORDS = fetcher.MemoryRecords  # aiokafka's own (tests are imported before any runs)
_PROC_FETCH_REQUEST = fetcher.Fetcher._proc_fetch_request
_CODECS = {"none": 0, "gzip": 1, "zstd": 4}


def _batch(base: int, values: list[bytes], codec: str = "zstd") -> bytes:
    builder = pure.DefaultRecordBatchBuilder(magic=2, compression_type=_CODECS[codec], is_transactional=0,
                                             producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                             batch_size=1 << 22)
    for delta, value in enumerate(values):
        assert builder.append(delta, timestamp=1_700_000_000_000 + delta, key=b"dev-%d" % (delta % 3),
                              value=value, headers=[]) is not None
    built = bytearray(builder.build())
    built[0:8] = base.to_bytes(8, "big")  # the base offset is not covered by the batch's CRC
    return bytes(built)


def _values(seed: int, count: int = 40) -> list[bytes]:
    return [b'{"seq":%d,"image":"C:\\\\Windows\\\\cmd.exe","n":%d}' % (seed * 1000 + i, i) * (1 + i % 4)
            for i in range(count)]


def _message_set(codecs: list[str]) -> tuple[bytes, list[list[bytes]]]:
    values = [_values(k) for k in range(len(codecs))]
    pairs = enumerate(zip(values, codecs, strict=True))
    data = b"".join(_batch(100 * k, v, codec) for k, (v, codec) in pairs)
    return data, values


def _settled() -> None:
    """Wait until the thread has answered every payload submitted (as it has when the worker reads
    a batch it submitted a few batches earlier)."""
    deadline = time.monotonic() + 10
    while any(job.done.locked() for _, job in fetch_ahead._ahead._order):
        assert time.monotonic() < deadline, "the thread did not answer in 10 s"
        time.sleep(0.001)


def _read(records: Any, settle: bool = False) -> list[tuple[int, bytes | None, bytes | None]]:
    """What aiokafka's `PartitionRecords` reads of a message set: each batch's records, in order."""
    out: list[tuple[int, bytes | None, bytes | None]] = []
    while records.has_next():
        if settle:
            _settled()
        batch = records.next_batch()
        if batch is None:
            break
        out.extend((r.offset, r.key, r.value) for r in batch)
    return out


def _outcome(read: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", read()
    except Exception as exc:  # the error is part of the answer: both must fail alike
        return "error", type(exc)


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """install() for one test, over aiokafka's own fetcher (a worker made earlier in the session,
    e.g. by an integration test, installed it for real): everything it changes is restored afterwards."""
    for name in (*kafka_zstd._MODULES, *fetch_ahead._RECORD_MODULES):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in ("zstd_decode", "zstd_encode"):
            if hasattr(module, attr):
                monkeypatch.setattr(module, attr, getattr(module, attr))
    monkeypatch.setattr(fetcher, "MemoryRecords", _MEMORY_RECORDS)
    monkeypatch.setattr(fetcher.Fetcher, "_proc_fetch_request", _PROC_FETCH_REQUEST)
    monkeypatch.setattr(fetch_ahead, "MIN_AHEAD_BYTES", 1)  # the tests' batches are small
    monkeypatch.setattr(fetch_ahead, "BACKLOG_BATCHES", 1)
    monkeypatch.setattr(fetch_ahead, "_installed", False)
    monkeypatch.setattr(fetch_ahead, "_ahead", fetch_ahead._Ahead())
    assert fetch_ahead.install()
    yield


def _ahead_records(data: bytes) -> Any:
    """The fetcher's `MemoryRecords` as an enabled consumer's fetch makes it."""
    context = contextvars.copy_context()
    context.run(fetch_ahead._reading_ahead.set, True)
    return context.run(fetcher.MemoryRecords, data)


def test_batch_payloads_are_the_bytes_aiokafka_decompresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_ahead, "MIN_AHEAD_BYTES", 1)
    data, _ = _message_set(["zstd", "none", "zstd", "gzip", "zstd"])
    asked: list[bytes] = []

    def spy(payload: bytes) -> bytes:
        asked.append(payload)
        return kafka_zstd.zstd_decode(payload)

    monkeypatch.setattr(pure, "zstd_decode", spy)  # aiokafka's batches: pure Python or compiled
    compiled = importlib.import_module("aiokafka.record._crecords.default_records")
    monkeypatch.setattr(compiled, "zstd_decode", spy)
    _read(PureMemoryRecords(data))
    found = fetch_ahead.batch_payloads(data)
    assert [base for base, _ in found] == [0, 100, 200, 300, 400]
    assert [payload for _, payload in found if payload is not None] == asked
    assert [payload is None for _, payload in found] == [False, True, False, True, False]


def test_a_set_of_fewer_batches_than_asked_gives_nothing_and_a_larger_one_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caught-up worker's small fetch is not read ahead: nothing of it is copied or sent."""
    monkeypatch.setattr(fetch_ahead, "MIN_AHEAD_BYTES", 1)
    data, _ = _message_set(["zstd", "none", "zstd"])
    assert fetch_ahead.batch_payloads(data, at_least=4) == []
    assert fetch_ahead.batch_payloads(data, at_least=3) == fetch_ahead.batch_payloads(data)
    found = fetch_ahead.batch_payloads(data, at_least=3)
    assert [type(payload) for _, payload in found] == [bytes, type(None), bytes]


def test_a_truncated_or_garbled_message_set_is_walked_no_further() -> None:
    data, _ = _message_set(["zstd", "zstd", "zstd"])
    whole = len(_batch(0, _values(0))) + len(_batch(100, _values(1)))
    assert [base for base, _ in fetch_ahead.batch_payloads(data[:-1])] == [0, 100]
    assert [base for base, _ in fetch_ahead.batch_payloads(data[:whole + 30])] == [0, 100]
    garbled = bytearray(data)
    garbled[whole + 8: whole + 12] = (5).to_bytes(4, "big")  # a batch length shorter than a header
    assert [base for base, _ in fetch_ahead.batch_payloads(bytes(garbled))] == [0, 100]
    assert fetch_ahead.batch_payloads(b"") == [] and fetch_ahead.batch_payloads(b"\x00" * 70) == []


def test_a_frame_declaring_too_much_or_too_little_is_not_read_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = _message_set(["zstd"])
    assert fetch_ahead.batch_payloads(data)[0][1] is None  # ~4 KB: decoded when read
    monkeypatch.setattr(fetch_ahead, "MIN_AHEAD_BYTES", 1)
    assert fetch_ahead.batch_payloads(data)[0][1] is not None
    monkeypatch.setattr(fetch_ahead, "MAX_AHEAD_BYTES", 100)
    assert fetch_ahead.batch_payloads(data)[0][1] is None


@pytest.mark.usefixtures("patched")
def test_a_worker_that_keeps_up_reads_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """A set of fewer than `BACKLOG_BATCHES` batches, or of small batches, sends nothing ahead."""
    monkeypatch.setattr(fetch_ahead, "BACKLOG_BATCHES", 3)
    few, _ = _message_set(["zstd", "zstd"])
    assert _read(_ahead_records(few), settle=True) == _read(PureMemoryRecords(few))
    assert fetch_ahead._ahead.taken == 0 and not fetch_ahead._ahead._order
    monkeypatch.setattr(fetch_ahead, "MIN_AHEAD_BYTES", 256 << 10)
    small, _ = _message_set(["zstd"] * 6)
    assert _read(_ahead_records(small), settle=True) == _read(PureMemoryRecords(small))
    assert fetch_ahead._ahead.taken == 0 and not fetch_ahead._ahead._order


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("compiled", [False, True])
def test_records_read_ahead_are_the_records_read_when_needed(compiled: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if compiled:
        module = pytest.importorskip("aiokafka.record._crecords.memory_records")
        plain_class = module.MemoryRecords
    else:
        plain_class = PureMemoryRecords
    original = fetch_ahead._AheadRecords
    monkeypatch.setattr(fetch_ahead, "_AheadRecords", lambda records, data: original(plain_class(data), data))
    data, values = _message_set(["zstd", "zstd", "none", "zstd", "zstd", "gzip", "zstd"])
    threads: list[str] = []
    decode = kafka_zstd.zstd_decode

    single = kafka_zstd.single_frame

    def spy(payload: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return decode(payload)

    def spy_single(payload: bytes, limit: int) -> bytes | None:  # what the thread decodes with
        if threading.current_thread().name == "zstd-ahead":
            threads.append("zstd-ahead")
        return single(payload, limit)

    monkeypatch.setattr(kafka_zstd, "zstd_decode", spy)
    monkeypatch.setattr(kafka_zstd, "single_frame", spy_single)
    ahead = _ahead_records(data)
    assert isinstance(ahead, original)
    read = _read(ahead, settle=True)
    # every zstd batch but the set's first (wanted at once when caught up) came from the thread, once
    assert (fetch_ahead._ahead.taken, fetch_ahead._ahead.missed, fetch_ahead._ahead.late) == (4, 1, 0)
    assert sorted(threads) == ["MainThread"] + ["zstd-ahead"] * 4
    assert read == _read(plain_class(data))  # (these are decoded here: not submitted)
    assert [value for _, _, value in read] == [v for batch in values for v in batch]


@pytest.mark.usefixtures("patched")
def test_a_consumer_not_enabled_reads_as_before() -> None:
    data, _ = _message_set(["zstd", "zstd"])
    records = fetcher.MemoryRecords(data)  # outside an enabled consumer's fetch
    assert type(records) is _MEMORY_RECORDS
    assert _read(records) == _read(PureMemoryRecords(data))
    assert fetch_ahead._ahead.taken == 0


@pytest.mark.usefixtures("patched")
def test_a_corrupt_batch_fails_as_it_fails_when_read_plainly() -> None:
    data, _ = _message_set(["zstd", "zstd", "zstd"])
    start = len(_batch(0, _values(0)))
    for at in (61 + 5, 61 + 40, 61 + 200):  # within the second batch's frame (header, then blocks)
        corrupt = bytearray(data)
        corrupt[start + at] ^= 0x5A
        data_c = bytes(corrupt)
        plain = _outcome(lambda: _read(PureMemoryRecords(data_c)))  # noqa: B023 - called at once
        ahead = _outcome(lambda: _read(fetch_ahead._AheadRecords(PureMemoryRecords(data_c), data_c)))  # noqa: B023
        assert ahead == plain


def test_answers_never_taken_are_bounded_and_a_lookalike_is_not_taken() -> None:
    ahead = fetch_ahead._Ahead()
    frames = [zstandard.ZstdCompressor().compress(b"%d" % i * 500) for i in range(fetch_ahead.KEPT + 5)]
    for frame in frames:
        ahead.submit(frame)
    assert len(ahead._order) == fetch_ahead.KEPT
    deadline = time.monotonic() + 10
    while any(job.done.locked() for _, job in ahead._order):  # the kept ones answered
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert ahead.take(frames[0]) is None  # dropped: the caller decodes it
    assert ahead.take(frames[-1]) == b"%d" % (len(frames) - 1) * 500
    lookalike = bytes([frames[-2][0] ^ 1]) + frames[-2][1:]  # the same length and tail, other bytes
    assert ahead.take(lookalike) is None
    assert ahead.take(frames[-2]) == b"%d" % (len(frames) - 2) * 500
    assert (ahead.taken, ahead.missed) == (2, 2)


@pytest.mark.usefixtures("patched")
def test_install_is_idempotent_and_what_aiokafka_uses() -> None:
    assert fetch_ahead.install() and fetch_ahead.installed()
    assert pure.zstd_decode is fetch_ahead.zstd_decode
    compiled = pytest.importorskip("aiokafka.record._crecords.default_records")
    assert compiled.zstd_decode is fetch_ahead.zstd_decode
    assert kafka_zstd.installed()
    frame = zstandard.ZstdCompressor().compress(b"x" * 1000)
    assert fetch_ahead.zstd_decode(frame) == b"x" * 1000  # never submitted: decoded here


@pytest.fixture
def stalled(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The thread's decode (`kafka_zstd.single_frame`, what it runs) blocks until the event is set (set
    again at the end of the test); the reader's own decode is not slowed."""
    release = threading.Event()
    single = kafka_zstd.single_frame

    def slow_on_the_thread(payload: bytes, limit: int) -> bytes | None:
        if threading.current_thread().name == "zstd-ahead":
            release.wait(20)
        return single(payload, limit)

    monkeypatch.setattr(kafka_zstd, "single_frame", slow_on_the_thread)
    try:
        yield release
    finally:
        release.set()


@pytest.mark.usefixtures("patched")
def test_the_reader_never_waits_for_the_thread(stalled: threading.Event) -> None:
    """A batch the thread has not decoded yet (it waits for a core on a busy host) is decoded here."""
    data, values = _message_set(["zstd"] * 5)
    started = time.monotonic()
    read = _read(_ahead_records(data))
    stalled.set()
    assert time.monotonic() - started < 5
    assert [value for _, _, value in read] == [v for batch in values for v in batch]
    ahead = fetch_ahead._ahead
    assert ahead.taken == 0 and ahead.late >= 1 and ahead.late + ahead.missed == 5
