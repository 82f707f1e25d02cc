"""A micro-batch's predict on a second core while the worker goes on with the next records, when it pays.

Why: the worker is one Python thread; the compiled trees' predict (`pipeline._ctrees`) needs no
Python, so `Detector.start_flush` runs it on a thread of its own while the caller works on the
records that follow, then `Detector.finish_flush` decides: the same decisions as `Detector.flush`,
emitted a few records later.

What the caller does meanwhile (`WorkAhead`, the worker's and `bench.core_replay`'s `work_one`): it
takes the next records into the trees, in order, as long as each is of a device the flush does not
hold (`PendingFlush.clear`: the devices of its rows and those whose eviction it owes; deciding and
evicting read only those forests, so the flush decides as if they came after it) and no micro-batch
is due after it (that flush comes next, where the synchronous worker would make it). From the first
record it may not take, it only decodes ahead (decoding touches no tree). Taking ahead is the
worker's own work done in its turn; decoding ahead is not (until session AE it was all the worker
did: each record decoded ~0.6 us an event ahead covered the predict only with ~30 records left in
the poll, and was cache-cold when taken).

It pays only when a core is free. On a machine whose cores are all busy the thread waits for one,
the caller ends up scoring the rows itself (`Forest.predict_start` never waits for the thread), and
the thread's start, the context switches and the records decoded long before their turn (cache-cold
when taken) make the flush dearer than a plain one (measured on the shared 2-vCPU VM: BENCHMARKS.md,
Pipeline, "Session J — scoring overlapped"). So `FlushOverlap` decodes ahead only for as long as the
predict takes on a free core (`PREDICT_S_START`, `PREDICT_S_PER_ROW`; records taken are not bounded
by it), and when the thread has not finished by then, it flushes synchronously for the next flushes
(4, 8, ... up to `MAX_BACKOFF`) before trying again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from pipeline.detect import Detector
from pipeline.policy import Decision

log = logging.getLogger(__name__)

__all__ = [
    "DECODED", "DECODE_AHEAD", "MAX_BACKOFF", "NOTHING", "PREDICT_S_PER_ROW", "PREDICT_S_START", "TAKEN",
    "FlushOverlap", "WorkAhead",
]  # fmt: skip

NOTHING, DECODED, TAKEN = 0, 1, 2  # what one call of `FlushOverlap.flush`'s `work_one` did

DECODE_AHEAD = 32  # records decoded at most while one micro-batch is scored on the C trees' thread
PREDICT_S_PER_ROW = 6e-6  # ... and for no longer than its predict takes on a free core (measured
PREDICT_S_START = 2e-4  # here: 45-90 rows ready in 140-420 us from the start, the thread's start included)
MAX_BACKOFF = 256  # synchronous flushes at most between two tries when the thread found no core


class FlushOverlap:
    """Flushes a `Detector`, overlapped with `decode_one` calls while that pays (see the module)."""

    def __init__(self) -> None:
        self.ready = 0  # flushes whose scores were ready when the caller came for them
        self.starved = 0  # flushes whose thread had not finished when its time was up
        self.synchronous = 0  # flushes made synchronously after a starved one
        self._backoff = 0
        self._skip = 0

    def flush(self, detector: Detector, now_ms: int, work_one: Callable[[bool], int]) -> list[Decision]:
        """`detector.flush(now_ms)`'s decisions; while its predict runs, `work_one(may_decode)` is called:
        it takes the next record into the trees when that cannot change the flush (a device it does not
        hold: `PendingFlush.clear`) and returns `TAKEN`; else, when `may_decode`, it decodes one ahead
        and returns `DECODED`; else, or when there is nothing left, `NOTHING`. The time budget bounds
        decoding ahead only: a record taken is work done in its turn, never done twice or cache-cold."""
        if self._skip:
            self._skip -= 1
            self.synchronous += 1
            return detector.flush(now_ms)
        pending = detector.start_flush(now_ms)
        if pending is None:
            return []
        until = time.perf_counter() + PREDICT_S_START + len(pending.rows) * PREDICT_S_PER_ROW
        out_of_time = False
        try:
            while not pending.done():
                in_time = time.perf_counter() < until
                did = work_one(in_time)
                if not did:
                    out_of_time = not in_time
                    break
        except Exception:  # (the worker's never raises) working ahead stops; what it was on waits its turn
            log.exception("working ahead of a flush failed; the record is taken again in its turn")
        except BaseException:  # interrupted: the trees must not stay locked
            detector.finish_flush(pending)
            raise
        self._note(pending.done(), out_of_time)
        return detector.finish_flush(pending)

    def _note(self, finished: bool, out_of_time: bool) -> None:
        if finished:
            self.ready += 1
            self._backoff = 0
        elif out_of_time:  # not for lack of records to decode: the thread had no core
            self.starved += 1
            self._backoff = min(max(2 * self._backoff, 4), MAX_BACKOFF)
            self._skip = self._backoff


D = TypeVar("D")


class WorkAhead(Generic[D]):
    """`FlushOverlap.flush`'s `work_one` over the records after a due flush: `decoded[first:end]`.

    Each call takes the next record (`decode(i)`, kept in `decoded[i]`, then `take(i, decoded[i])`:
    None when it may not be taken now, True when taken, False when taken and taking must stop, e.g.
    because a micro-batch is due after it) and returns `TAKEN`; once one could not be taken, or taking
    had to stop, it only decodes ahead (up to `DECODE_AHEAD` records from there, when `may_decode`) and
    returns `DECODED`, or `NOTHING`. A record taken is `None` in `decoded` again; one decoded ahead waits
    there for its turn. `at` is the first record neither taken nor looked at."""

    def __init__(self, decoded: list[D | None], first: int, end: int, decode: Callable[[int], D],
                 take: Callable[[int, D], bool | None]) -> None:
        self.decoded, self.at, self.end = decoded, first, end
        self.decode, self.take, self.taking = decode, take, True

    def __call__(self, may_decode: bool) -> int:
        decoded, at = self.decoded, self.at
        if self.taking:
            if at < self.end:
                item = decoded[at]
                if item is None:
                    item = decoded[at] = self.decode(at)
                go_on = self.take(at, item)
                if go_on is not None:
                    decoded[at], self.at = None, at + 1
                    if not go_on:
                        self._only_decode(at + 1)
                    return TAKEN
            self._only_decode(at)
        if not may_decode:
            return NOTHING
        while at < self.end and decoded[at] is not None:  # decoded during an earlier flush, or just now
            at += 1
        self.at = at
        if at >= self.end:
            return NOTHING
        decoded[at] = self.decode(at)
        return DECODED

    def _only_decode(self, at: int) -> None:
        """No more taking: decode at most `DECODE_AHEAD` records from `at` on."""
        self.taking, self.end = False, min(self.end, at + DECODE_AHEAD)
