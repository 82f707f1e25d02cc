"""Report what enforcement did (or refused, or would have done) on the actions topic.

Every kill, quarantine, restore, applied verdict and refusal ends in one `ActionResult`, so the
SOC sees containment happen and the fan-out benchmark can time it. Reporting must never hold up
enforcement: `report()` is synchronous and only queues; a sender task publishes in order, keyed by
device_id, with acks=all and idempotence (the publisher's producer factory), and retries with
backoff while the broker is away. The queue is `agents.action_outbox.ActionOutbox`: with a `path`
(the agent's state dir) a result is on disk before `report()` returns and is deleted only once the
broker acknowledged it, so an outage followed by a crash or reboot loses nothing (at least once;
`result_id` identifies duplicates). It is bounded (`max_pending`): when full, the oldest successful
apply_verdict report goes first, then the oldest of any kind, counted in `dropped`, because a kill
must not wait for a report.

Many agents in one process (the fan-out benchmark) may share one reporter: the key is each
result's own device_id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from agents.action_outbox import ActionOutbox, Pending
from agents.blocklist import SyncMode
from agents.publisher import Producer, ProducerFactory
from agents.telemetry import current, headers_kwargs, parse_traceparent
from schemas.actions import ActionKind, ActionResult, Outcome

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
    """Queues results durably (`ActionOutbox`) and publishes them from `run()`; `close()` saves."""

    def __init__(self, producer_factory: ProducerFactory, topic: str, *, max_pending: int = 10_000,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0, path: Path | None = None,
                 sync: SyncMode = "full") -> None:
        self.topic = topic
        self.sent = 0
        self.outbox = ActionOutbox(path, max_pending=max_pending, sync=sync)
        self._factory = producer_factory
        self._wakeup = asyncio.Event()
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._producer: Producer | None = None

    @property
    def pending(self) -> int:
        return len(self.outbox)

    @property
    def dropped(self) -> int:
        return self.outbox.dropped

    def report(self, result: ActionResult) -> None:
        """Queue one result (persisted; the outbox's bound decides what goes when it is full)."""
        trace = current()
        self.outbox.add(result, trace.traceparent if trace is not None else None)
        self._wakeup.set()

    async def run(self) -> None:
        """Publish queued results, oldest first, until cancelled."""
        backoff_s = self._backoff[0]
        try:
            while True:
                head = self.outbox.head()
                if not head:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                try:
                    await self._send_all(head)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker away or producer broken: keep the results, retry
                    log.warning("action result not sent (%s: %s); %d queued, retry in %.1fs",
                                type(exc).__name__, exc, self.pending, backoff_s)
                    await self._drop_producer()
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, self._backoff[1])
                    continue
                backoff_s = self._backoff[0]
        finally:
            await self._drop_producer()

    async def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the queue to drain (while `run` is running); True if it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.pending and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self.pending

    def close(self) -> None:
        """Save what is still queued (sent after the next start) and close the outbox."""
        if self.pending:
            log.info("action reporter: %d results not yet sent are kept for the next start", self.pending)
        self.outbox.close()

    async def _send_all(self, head: list[Pending]) -> None:
        for pending in head:  # one at a time: order kept, and each is forgotten once acknowledged
            sending = asyncio.ensure_future(self._send(pending))
            try:
                await asyncio.shield(sending)
            except asyncio.CancelledError:  # stopping: a result already on its way gets a moment for its
                await _settle(sending)      # ack, so a clean stop does not send it again at the next start
                if sending.done() and not sending.cancelled() and sending.exception() is None:
                    self.outbox.remove(pending)
                raise
            self.outbox.remove(pending)
            self.sent += 1

    async def _send(self, pending: Pending) -> None:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                with suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        await self._producer.send_and_wait(self.topic, value=pending.value, key=pending.key,
                                           **headers_kwargs(parse_traceparent(pending.traceparent)))

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with suppress(Exception):
                await producer.stop()


STOP_GRACE_S = 2.0  # on stop, how long a send already under way may take to be acknowledged


async def _settle(sending: asyncio.Future[None]) -> None:
    """Wait up to STOP_GRACE_S for `sending` (its failure or a second cancel just ends the wait)."""
    with suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(sending), STOP_GRACE_S)
    if not sending.done():
        sending.cancel()
