"""A micro-batch's predict on a second core while the worker decodes the next records, when it pays.

Why: the worker is one Python thread; the compiled trees' predict (`pipeline._ctrees`) needs no
Python, so `Detector.start_flush` runs it on a thread of its own while the caller decodes the
records that follow (decoding touches no tree), then `Detector.finish_flush` decides: the same
decisions as `Detector.flush`, emitted a few records' decoding later.

It pays only when a core is free. On a machine whose cores are all busy the thread waits for one,
the caller ends up scoring the rows itself (`Forest.predict_start` never waits for the thread), and
the thread's start, the context switches and the records decoded long before their turn (cache-cold
when taken) make the flush dearer than a plain one (measured on the shared 2-vCPU VM: BENCHMARKS.md,
Pipeline, "Session J — scoring overlapped"). So `FlushOverlap` decodes ahead only for as long as the
predict takes on a free core (`PREDICT_S_START`, `PREDICT_S_PER_ROW`), and when the thread has not
finished by then, it flushes synchronously for the next flushes (4, 8, ... up to `MAX_BACKOFF`)
before trying again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pipeline.detect import Detector
from pipeline.policy import Decision

log = logging.getLogger(__name__)

__all__ = ["DECODE_AHEAD", "MAX_BACKOFF", "PREDICT_S_PER_ROW", "PREDICT_S_START", "FlushOverlap"]

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

    def flush(self, detector: Detector, now_ms: int, decode_one: Callable[[], bool]) -> list[Decision]:
        """`detector.flush(now_ms)`'s decisions; while its predict runs, `decode_one()` is called
        (it decodes one more record and returns False when there is none to decode)."""
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
                if time.perf_counter() >= until:
                    out_of_time = True
                    break
                if not decode_one():
                    break
        except Exception:  # (the worker's never raises) decoding ahead stops; the record is decoded again
            log.exception("decoding ahead of a flush failed; the record is decoded again in its turn")
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
