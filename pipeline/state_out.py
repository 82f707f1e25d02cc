"""State records compressed off the event loop's thread, then sent in order.

Why: aiokafka compresses a producer batch on the event loop's thread when its sender drains it. The
state producer's batches are up to 1 MB of device forests, so at 38,500 events/s a checkpoint's
zstd took ~150 ms of the loop for ~17 MB of state (BENCHMARKS.md, "Session H — checkpoint
latency"), time in which no record was read. cramjam's zstd releases the GIL, so here each value is
compressed in a thread (one hop per run of queued values) and the state producer sends them with
its own compression off (`kafka_io.make_state_producer`); the loop only encodes the forests.

**One call per run.** The thread compresses a whole run of values in one call
(`zstandard`'s `multi_compress_to_buffer`), which releases the GIL once for all of them. Compressed
one call per value (cramjam), the thread had to take the GIL back after every value while the
loop's thread was busy encoding the next states, and each time waited for the interpreter's switch
interval (5 ms): at a commit point of 200 devices, a run of 10 values took 90 ms instead of 4, and
most values were compressed only after the last state was encoded (BENCHMARKS.md, "Session J —
the commit point"). Each thread keeps its compressor (a zstd context), where cramjam made one per
value. The frames are the same zstd frames (same level, content size declared); cramjam still reads
them (`unpack_state`).

**The value format.** A state value is a zstd frame (magic 28 b5 2f fd) holding the forest record,
or, as every worker before this module wrote it, the record itself (JSON: it begins with `{`).
`unpack_state` reads both, so a changelog written by older workers restores as before, and refuses
a frame that would decompress to more than `max_bytes` (its declared size is checked first, and the
output buffer is never larger than that bound) with a `StateError`.

**Order.** Values are sent in the order `send` was called (one task drains the queue), so two states
of one device never overtake each other on the compacted changelog: the later one wins, as it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import cramjam  # the pipeline extra names it (aiokafka[zstd] compresses with it too)
import zstandard  # the pipeline extra names it: compresses a run of values with one release of the GIL

from pipeline.errors import StateError

__all__ = ["LEVEL", "ZSTD_MAGIC", "StateWriter", "pack_state", "unpack_state"]

log = logging.getLogger(__name__)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LEVEL = 3  # what the producer used (aiokafka's default zstd level), so bytes on the wire are alike
_FCS_SIZES = (0, 2, 4, 8)  # Frame_Content_Size field bytes by its flag (flag 0: 1 byte if single segment)
_DICT_ID_SIZES = (0, 1, 2, 4)
RUN_BYTES = 4 << 20  # a run waits for this much state while more keeps coming (fewer GIL handovers)


def pack_state(record: bytes) -> bytes:
    """The value written for a state record: a zstd frame of it (declares its size)."""
    return _compressor().compress(record)


_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    """This thread's compressor: its zstd context is reused (a new context per value, as cramjam's
    `compress` makes, cost 25-50 % more CPU on 8-80 KB records). Not shared: it is not thread-safe."""
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "zstd", None)
    if compressor is None:
        compressor = _local.zstd = zstandard.ZstdCompressor(level=LEVEL)
    return compressor


def unpack_state(value: bytes, max_bytes: int) -> bytes:
    """The state record in a changelog value, compressed by `pack_state` or (older workers) not."""
    if not value.startswith(ZSTD_MAGIC):
        return value
    declared = _content_size(value)
    if declared is not None and declared > max_bytes:
        raise StateError(f"compressed state declares {declared} bytes, more than max_state_bytes {max_bytes}")
    out = bytearray((declared if declared is not None else max_bytes) + 1)
    try:
        size = cramjam.zstd.decompress_into(value, out)
    except Exception as exc:  # cramjam raises its own DecompressionError (not a ValueError)
        raise StateError(f"compressed state is unreadable: {exc}") from exc
    if size > max_bytes or (declared is not None and size != declared):
        raise StateError(f"compressed state holds {size} bytes, not the {declared} it declares")
    return bytes(out[:size])


def _content_size(frame: bytes) -> int | None:
    """The Frame_Content_Size of a zstd frame header (RFC 8878, 3.1.1.1), None when it has none."""
    if len(frame) < 5:
        raise StateError("compressed state is truncated")
    descriptor = frame[4]
    single_segment = descriptor >> 5 & 1
    fcs_bytes = _FCS_SIZES[descriptor >> 6] or single_segment
    if fcs_bytes == 0:
        return None
    start = 5 + (0 if single_segment else 1) + _DICT_ID_SIZES[descriptor & 3]
    field = frame[start: start + fcs_bytes]
    if len(field) != fcs_bytes:
        raise StateError("compressed state is truncated")
    return int.from_bytes(field, "little") + (256 if fcs_bytes == 2 else 0)


@dataclass(slots=True)
class _Queued:
    topic: str
    key: bytes
    value: bytes | None
    partition: int | None
    acked: asyncio.Future[None]


class StateWriter:
    """Sends state records through `producer`, each value compressed in a thread first.

    `send` returns at once with a future that resolves when Kafka acknowledged the record (or
    raises what its send raised): the worker awaits it at the commit point, as it awaited the
    producer's own futures before. `offload=False` compresses and hands the record to the producer
    within `send` instead (the same bytes; for tests that script the loop step by step).
    """

    def __init__(self, producer: Any, *, offload: bool = True) -> None:
        self.producer, self.offload = producer, offload
        self._queue: deque[_Queued] = deque()
        self._compressing: list[_Queued] = []  # taken off the queue, not yet handed to the producer
        self._task: asyncio.Task[None] | None = None
        self._queued_bytes = 0  # of the values in `_queue`

    async def send(
        self, topic: str, key: bytes, value: bytes | None, partition: int | None
    ) -> asyncio.Future[None]:
        if not self.offload:  # the producer's own future, as a send raises: exactly the old path
            ack: asyncio.Future[None] = await self.producer.send(
                topic, value=None if value is None else pack_state(value), key=key, partition=partition)
            return ack
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(topic, key, value, partition, acked))
        self._queued_bytes += 0 if value is None else len(value)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="state writer")
        return acked

    async def close(self) -> None:
        """Stop sending; records still queued fail (their checkpoint is never committed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queued in [*self._compressing, *self._queue]:
            if not queued.acked.done():
                queued.acked.set_exception(StateError("state writer closed before this record was sent"))
        self._queue.clear()
        self._queued_bytes = 0
        self._compressing = []

    async def _drain(self) -> None:
        while self._queue:
            await self._run_grown()
            run = self._compressing = list(self._queue)
            self._queue.clear()
            self._queued_bytes = 0
            values: list[bytes | Exception | None]
            try:
                values = list(await asyncio.to_thread(_pack_all, [q.value for q in run]))
            except Exception as exc:  # a bug or no memory: the checkpoint fails, nothing is committed
                log.exception("compressing %d state records failed", len(run))
                values = [exc] * len(run)
            for queued, value in zip(run, values, strict=True):
                if isinstance(value, Exception):
                    queued.acked.set_exception(value)
                else:
                    await self._send(queued, value)
            self._compressing = []

    async def _run_grown(self) -> None:
        """Return once the queue stopped growing over a turn of the loop, or holds `RUN_BYTES`.

        Each run costs the loop's thread a few handovers of the GIL (the thread takes it to start, to
        return and to wake the loop), and on a busy machine each handover waits for the scheduler to
        run the other thread: runs of ~10 values (one per 10 ms turn of a commit point) stretched a
        commit point's encoding to twice its CPU time under load (BENCHMARKS.md, "Session J — the
        commit point"). Values sent with turns between them (idle time) still go one run each."""
        while self._queued_bytes < RUN_BYTES:
            queued = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == queued:
                return

    async def _send(self, queued: _Queued, value: bytes | None) -> None:
        try:
            ack = await self.producer.send(
                queued.topic, value=value, key=queued.key, partition=queued.partition)
        except Exception as exc:  # e.g. the record is too large, or the producer was closed
            queued.acked.set_exception(exc)
            return
        ack.add_done_callback(lambda done: _settle(queued.acked, done))


def _pack_all(values: list[bytes | None]) -> list[bytes | None]:
    """`pack_state` of every value (None stays None), in one call that releases the GIL once."""
    # empty values apart: zstandard refuses a run of nothing but empty values
    present: list[bytes | bytearray | memoryview] = [value for value in values if value]
    if present:
        frames = iter(_compressor().multi_compress_to_buffer(present, threads=1))
    return [value if value is None else next(frames).tobytes() if value else pack_state(value)
            for value in values]


def _settle(acked: asyncio.Future[None], done: asyncio.Future[Any]) -> None:
    if acked.done():
        return
    if done.cancelled():
        acked.set_exception(StateError("the state record's send was cancelled"))
    elif (exc := done.exception()) is not None:
        acked.set_exception(exc)
    else:
        acked.set_result(None)
