"""pipeline.kafka_zstd: aiokafka's zstd with kept contexts writes and reads what aiokafka's own does."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from typing import Any

import cramjam
import pytest
import zstandard
from aiokafka import codec
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import kafka_zstd

_ORIGINAL_DECODE = codec.zstd_decode
_ORIGINAL_ENCODE = codec.zstd_encode


def _outcome(decode: Any, payload: bytes) -> tuple[str, Any]:
    try:
        return "ok", bytes(decode(payload))
    except Exception as exc:  # the error is part of the answer: both must fail alike
        return "error", type(exc)


def _streamed(data: bytes) -> bytes:
    """A frame that does not declare its size (as a streaming producer, e.g. Java's, writes it)."""
    writer = zstandard.ZstdCompressor(level=3).compressobj()
    return writer.compress(data) + writer.flush()


def _with_declared_size(frame: bytes, size: int) -> bytes:
    """`frame` (single segment, 4-byte size) rewritten to declare `size` bytes."""
    header = frame[4]
    assert header >> 6 == 2 and header & 0x20, "the test frame is one segment, its size in 4 bytes"
    return frame[:5] + size.to_bytes(4, "little") + frame[9:]


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """install() for one test, from aiokafka's own functions (a worker made earlier in the session,
    e.g. by an integration test, installed `pipeline.fetch_ahead` over it): every module it changes
    is restored afterwards."""
    originals = {"zstd_decode": _ORIGINAL_DECODE, "zstd_encode": _ORIGINAL_ENCODE}
    for name in kafka_zstd._MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr, original in originals.items():
            if hasattr(module, attr):
                monkeypatch.setattr(module, attr, original)
    monkeypatch.setattr(kafka_zstd, "_original_decode", None)
    assert kafka_zstd.install()
    yield


payloads = st.one_of(st.binary(max_size=4096), st.text(max_size=2000).map(lambda s: (s * 7).encode()))


@settings(max_examples=150, deadline=None)
@given(payloads, st.sampled_from([None, 1, 3, 9]))
def test_encode_writes_what_aiokafka_writes(payload: bytes, level: int | None) -> None:
    expected = _ORIGINAL_ENCODE(payload) if level is None else _ORIGINAL_ENCODE(payload, level)
    assert kafka_zstd.zstd_encode(payload, level) == expected
    assert _ORIGINAL_DECODE(kafka_zstd.zstd_encode(payload, level)) == payload


@settings(max_examples=150, deadline=None)
@given(payloads)
def test_decode_reads_what_aiokafka_reads(payload: bytes) -> None:
    for frame in (_ORIGINAL_ENCODE(payload), _streamed(payload), _ORIGINAL_ENCODE(payload) * 2,
                  _ORIGINAL_ENCODE(payload) + _streamed(payload)):
        assert _outcome(kafka_zstd.zstd_decode, frame) == _outcome(_ORIGINAL_DECODE, frame)


@settings(max_examples=600, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.data())
def test_corrupt_frames_fail_or_read_as_aiokafka_does(payload: bytes, data: st.DataObject) -> None:
    frame = bytearray(_ORIGINAL_ENCODE(payload))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(frame) - 1))
        frame[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    for candidate in (bytes(frame), bytes(frame[:cut])):
        assert _outcome(kafka_zstd.zstd_decode, candidate) == _outcome(_ORIGINAL_DECODE, candidate)


def test_a_frame_declaring_more_than_it_holds_is_refused_as_before() -> None:
    frame = _ORIGINAL_ENCODE(b"x" * 70_000)
    assert _with_declared_size(frame, 70_000) == frame
    for size in (69_999, 70_001, kafka_zstd.MAX_DECLARED_BYTES, (1 << 32) - 1):
        liar = _with_declared_size(frame, size)
        assert _outcome(kafka_zstd.zstd_decode, liar) == _outcome(_ORIGINAL_DECODE, liar)
        assert _outcome(kafka_zstd.zstd_decode, liar)[0] == "error"


def test_a_large_declared_size_is_left_to_aiokafka(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile size is never allocated up front: over the bound, aiokafka's streaming decode reads it."""
    calls: list[bytes] = []

    def spy(payload: bytes) -> bytes:
        calls.append(payload)
        return bytes(_ORIGINAL_DECODE(payload))

    monkeypatch.setattr(kafka_zstd, "_original_decode", spy)
    small, large = _ORIGINAL_ENCODE(b"a" * 100), _ORIGINAL_ENCODE(b"b" * 5000)
    monkeypatch.setattr(kafka_zstd, "MAX_DECLARED_BYTES", 1000)
    assert kafka_zstd.zstd_decode(small) == b"a" * 100 and calls == []
    assert kafka_zstd.zstd_decode(large) == b"b" * 5000 and calls == [large]


def test_threads_each_use_their_own_contexts() -> None:
    payloads = [bytes([i]) * (1000 + i) + bytes(range(256)) * i for i in range(16)]
    frames = [_ORIGINAL_ENCODE(p) for p in payloads]
    failures: list[str] = []

    def work(k: int) -> None:
        for n in range(200):
            i = (k * 7 + n) % len(payloads)
            decoded, encoded = kafka_zstd.zstd_decode(frames[i]), kafka_zstd.zstd_encode(payloads[i])
            if decoded != payloads[i] or encoded != frames[i]:
                failures.append(f"thread {k} payload {i}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.usefixtures("patched")
def test_install_is_what_aiokafka_record_code_uses() -> None:
    from aiokafka.record import default_records

    assert kafka_zstd.installed() and kafka_zstd.install()  # idempotent
    assert codec.zstd_decode is kafka_zstd.zstd_decode
    assert default_records.zstd_encode is kafka_zstd.zstd_encode
    compiled = pytest.importorskip("aiokafka.record._crecords.default_records")
    assert compiled.zstd_decode is kafka_zstd.zstd_decode
    assert kafka_zstd._original_decode is _ORIGINAL_DECODE  # what frames it cannot read go to


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("module_name", ["aiokafka.record.default_records",
                                         "aiokafka.record._crecords.default_records"])
def test_record_batches_round_trip_through_aiokafka(module_name: str) -> None:
    module = pytest.importorskip(module_name)
    builder = module.DefaultRecordBatchBuilder(magic=2, compression_type=module.DefaultRecordBatch.CODEC_ZSTD,
                                               is_transactional=0, producer_id=-1, producer_epoch=-1,
                                               base_sequence=-1, batch_size=1 << 20)
    values = [(f"device-{i % 5}".encode(), bytes(range(256)) * (i % 9) + str(i).encode()) for i in range(300)]
    for offset, (key, value) in enumerate(values):
        assert builder.append(offset, timestamp=1_700_000_000_000 + offset, key=key, value=value,
                              headers=[("h", b"v")]) is not None
    built = bytes(builder.build())
    batch = module.DefaultRecordBatch(built)
    assert batch.validate_crc()
    assert [(r.key, r.value, tuple(r.headers)) for r in batch] == [(k, v, (("h", b"v"),)) for k, v in values]
    assert len(cramjam.zstd.compress(b"", level=3)) > 0  # cramjam (aiokafka's) is what the fallback uses
