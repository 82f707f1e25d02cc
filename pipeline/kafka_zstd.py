"""aiokafka's zstd codec with a context kept per thread: the same frames, less CPU per batch.

Why: aiokafka 0.14 compresses and decompresses record batches with `cramjam`, one call per batch,
and each call makes a new zstd context; decompression also does not use the size the frame declares
(the output grows as it is written) and is then copied into `bytes`. Through Kafka, on the pipeline
benchmark (BENCHMARKS.md, Pipeline, "Session K — decode and the worker's loop"), that was ~0.28 µs of
CPU per event for the fetched batches (~1 MB each, 750 µs per call) and ~0.09 µs per event for the
worker's small output batches (160 µs per call, most of it setting up a fresh context). `zstandard`
(already a pipeline dependency: `pipeline.state_out`) keeps a context per thread and decompresses a
frame that declares its size into one buffer of that size.

`install()` replaces `zstd_encode` and `zstd_decode` where aiokafka's record code looks them up (the
codec module, the pure-Python and compiled record modules, the legacy message) — the worker calls
it when it makes its clients, never at import. What changes is the CPU, not the bytes:
- encode writes what cramjam writes (the same libzstd at the same level, the content size declared);
- decode answers exactly as before: a frame that is not a single frame of declared size, from 1 to
  `MAX_DECLARED_BYTES` (e.g. from a streaming producer such as Java's, several frames back to back,
  a corrupt one, or a hostile size) is handed to aiokafka's own function, which decodes it or raises
  as it always did (tests/unit/test_kafka_zstd.py).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import zstandard

__all__ = ["DEFAULT_LEVEL", "MAX_DECLARED_BYTES", "install", "installed", "single_frame", "zstd_decode",
           "zstd_encode"]

log = logging.getLogger(__name__)

DEFAULT_LEVEL = 3  # aiokafka's (and Kafka's) default zstd level
MAX_DECLARED_BYTES = 64 << 20  # a frame declaring more is decoded by aiokafka's streaming function
_MODULES = ("aiokafka.codec", "aiokafka.record.default_records", "aiokafka.record._crecords.default_records",
            "aiokafka.protocol.message")
_local = threading.local()  # zstd contexts are not thread-safe: one of each per thread
_original_decode: Callable[[Any], bytes] | None = None
_lock = threading.Lock()


def zstd_encode(payload: Any, level: int | None = None) -> bytes:
    """A zstd frame of `payload` (content size declared), as aiokafka's `zstd_encode` writes it."""
    level = DEFAULT_LEVEL if level is None else level
    compressors: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(level=level)
    return compressor.compress(payload)


def zstd_decode(payload: Any) -> bytes:
    """The bytes of a zstd-compressed batch; anything but one frame of declared, bounded size is
    decoded (or refused) by aiokafka's own function."""
    answer = single_frame(payload, MAX_DECLARED_BYTES)
    if answer is not None:
        return answer
    fallback = _original_decode
    if fallback is None:  # not installed (called directly): aiokafka's as it is now
        from aiokafka import codec

        fallback = codec.zstd_decode
    return fallback(payload)


def single_frame(payload: Any, limit: int) -> bytes | None:
    """The bytes of `payload` when it is exactly one zstd frame declaring 1 to `limit` bytes, else None
    (several frames, no or a bigger declared size, damage): never more than `limit` bytes are made."""
    try:
        size = zstandard.frame_content_size(payload)
        if 0 < size <= limit:  # 0: zstandard answers b"" without reading the frame
            return _decompressor().decompress(payload, allow_extra_data=False)
    except zstandard.ZstdError:
        pass
    return None


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def installed() -> bool:
    """Whether aiokafka's codec module uses these functions now."""
    from aiokafka import codec

    return codec.zstd_decode is zstd_decode


def install() -> bool:
    """Make aiokafka's record code use these functions (idempotent); False when aiokafka has no zstd
    here (nothing is changed: it cannot read or write zstd batches either way)."""
    global _original_decode
    from aiokafka import codec

    if not codec.has_zstd():
        return False
    with _lock:
        if codec.zstd_decode is zstd_decode:
            return True
        _original_decode = codec.zstd_decode
        for name in _MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # the compiled record module is optional in aiokafka
                continue
            for attr, ours in (("zstd_decode", zstd_decode), ("zstd_encode", zstd_encode)):
                if hasattr(module, attr):
                    setattr(module, attr, ours)
    log.debug("aiokafka's zstd codec: contexts kept per thread (pipeline.kafka_zstd)")
    return True
