"""Report what enforcement did (or refused, or would have done) on the actions topic.

Every kill, quarantine, restore, applied verdict and refusal ends in one `ActionResult`, so the
SOC sees containment happen and the fan-out benchmark can time it. Reporting must never hold up
enforcement: `report()` is synchronous and only queues; a sender task publishes in order, keyed by
device_id, with acks=all and idempotence (the publisher's producer factory), and retries with
backoff while the broker is away. The queue is bounded (`max_pending`); when it is full the oldest
result is dropped and counted, because a kill must not wait for a report.

Many agents in one process (the fan-out benchmark) may share one reporter: the key is each
result's own device_id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from contextlib import suppress
from datetime import datetime
from typing import Any, Protocol

from agents.publisher import Producer, ProducerFactory
from agents.telemetry import TraceContext, current, headers_kwargs
from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.codec import encode

__all__ = ["KafkaActionReporter", "Reporter", "action_result"]

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where ActionResults go; must return at once and never raise."""

    def report(self, result: ActionResult) -> None: ...


def action_result(
    device_id: str, action: ActionKind, outcome: Outcome, *, now: datetime,
    since: datetime | None = None, **fields: Any,
) -> ActionResult:
    """An ActionResult with a fresh id, `ts=now` and `latency_ms` from `since` (when given) to now."""
    latency_ms = max(0.0, (now - since).total_seconds() * 1000) if since is not None else None
    return ActionResult(result_id=secrets.token_hex(16), device_id=device_id, action=action,
                        outcome=outcome, latency_ms=latency_ms, ts=now, **fields)


class KafkaActionReporter:
    """Queues results and publishes them from `run()`; `close()` flushes for a bounded time."""

    def __init__(self, producer_factory: ProducerFactory, topic: str, *, max_pending: int = 10_000,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.topic = topic
        self.sent = 0
        self.dropped = 0
        self._factory = producer_factory
        self._pending: deque[ActionResult] = deque()
        self._traces: dict[str, TraceContext] = {}  # result_id -> trace it was reported in (W3C)
        self._max_pending = max_pending
        self._wakeup = asyncio.Event()
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._producer: Producer | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def report(self, result: ActionResult) -> None:
        """Queue one result (dropping the oldest queued one when full)."""
        if len(self._pending) >= self._max_pending:
            lost = self._pending.popleft()
            self._traces.pop(lost.result_id, None)
            self.dropped += 1
            log.warning("actions queue full: dropped result %s (%s %s of device %s)", lost.result_id,
                        lost.action, lost.outcome, lost.device_id)
        self._pending.append(result)
        if (trace := current()) is not None:
            self._traces[result.result_id] = trace
        self._wakeup.set()

    async def run(self) -> None:
        """Publish queued results until cancelled."""
        backoff_s = self._backoff[0]
        try:
            while True:
                if not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                try:
                    await self._send(self._pending[0])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker away or producer broken: keep the result, retry
                    log.warning("action result not sent (%s: %s); %d queued, retry in %.1fs",
                                type(exc).__name__, exc, len(self._pending), backoff_s)
                    await self._drop_producer()
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, self._backoff[1])
                    continue
                self._traces.pop(self._pending.popleft().result_id, None)
                self.sent += 1
                backoff_s = self._backoff[0]
        finally:
            await self._drop_producer()

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the queue to drain (while `run` is running); True if it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._pending and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self._pending

    async def _send(self, result: ActionResult) -> None:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                with suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        await self._producer.send_and_wait(self.topic, value=encode(result), key=result.device_id.encode(),
                                           **headers_kwargs(self._traces.get(result.result_id)))

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with suppress(Exception):
                await producer.stop()
