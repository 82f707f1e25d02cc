"""Follow the verdict topic (the fleet blocklist) into the local `Blocklist`, verifying every record.

Why no consumer group: every device must read *every* verdict, so a group (which splits partitions
among its members) is the wrong tool, and joining one costs each agent a rebalance. The follower
assigns itself all partitions, starts from the beginning the first time (the compacted topic is
the whole list) and afterwards from the offsets saved with the blocklist, then follows (the
reconnecting loop is `agents.topic_follower.TopicFollower`, shared with the other followers).

Each record is decoded and checked with `schemas.signing.check_verdict` (signature, known key,
validity window) before it can change anything. A refused record (forged, unknown key, expired,
undecodable, keyed under another artifact) changes nothing and is reported as an `apply_verdict`
ActionResult with outcome `refused`. A tombstone (value None) cannot carry a signature: it lifts
the verdict for its key, which is what the topic contract says; Kafka ACLs limit who may write.

`VerdictHandler` is the pure part (record in, blocklist change and reports out), tested without a
broker; `VerdictFollower` is the thin aiokafka shell. Nothing is global: many followers, each with
its own consumer, blocklist and clock, can run in one process (the fan-out benchmark runs 200).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agents.action_reporter import Reporter, action_result
from agents.blocklist import Blocklist, Change, Clock, utc_now
from agents.enforcement_errors import StateError
from agents.topic_follower import (
    ConsumerFactory,
    TopicFollower,
    check_topic_still_exists,
    kafka_consumer_factory,
    partitions_of,
    seek_saved,
)
from schemas.actions import ActionKind, Outcome
from schemas.codec import decode
from schemas.errors import ContractError, ValidationFailed
from schemas.signing import DEFAULT_MAX_SKEW, Keyring, check_verdict
from schemas.verdicts import Verdict

__all__ = [
    "AppliedVerdict",
    "ConsumerFactory",
    "VerdictFollower",
    "VerdictHandler",
    "VerdictRecord",
    "check_topic_still_exists",
    "kafka_consumer_factory",
    "partitions_of",
]

log = logging.getLogger(__name__)

_SHA256_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """One record of the verdict topic, as the handler needs it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: tombstone
    timestamp_ms: int  # the record's Kafka timestamp (producer create time)


@dataclass(frozen=True, slots=True)
class AppliedVerdict:
    """An authentic record this device applied (passed to `on_applied` callbacks)."""

    artifact_id: str
    change: Change
    blocked: bool  # whether the artifact is blocked on this device now
    verdict: Verdict | None  # None for a tombstone
    partition: int
    offset: int
    record_ts_ms: int  # when the record was produced (Kafka timestamp)
    applied_at: datetime  # the follower's clock when the blocklist changed


AppliedCallback = Callable[[AppliedVerdict], None]


class VerdictHandler:
    """Checks one record and applies it to the blocklist; reports changes and refusals."""

    def __init__(self, *, device_id: str, group: str | None, blocklist: Blocklist, keyring: Keyring,
                 reporter: Reporter, clock: Clock = utc_now,
                 max_skew: timedelta = DEFAULT_MAX_SKEW,
                 on_applied: Sequence[AppliedCallback] = ()) -> None:
        self.device_id = device_id
        self.group = group
        self.blocklist = blocklist
        self.keyring = keyring  # replaceable: key rotation hands in a new keyring
        self._reporter = reporter
        self._clock = clock
        self._max_skew = max_skew
        self._on_applied = list(on_applied)
        self.refused = 0

    def add_callback(self, callback: AppliedCallback) -> None:
        self._on_applied.append(callback)

    def handle(self, record: VerdictRecord) -> AppliedVerdict | None:
        """Apply one record; None when it was refused (and reported)."""
        now = self._clock()
        if record.value is None:
            return self._tombstone(record, now)
        try:
            verdict = self._checked(record, now)
        except ContractError as exc:
            self._refuse(record, exc, now)
            return None
        if verdict.applies_to(self.device_id, self.group):
            change = self.blocklist.apply(verdict, partition=record.partition, offset=record.offset, now=now)
        else:  # the latest decision for this artifact is not ours: whatever we had no longer holds
            change = self.blocklist.remove(verdict.artifact_id, partition=record.partition,
                                           offset=record.offset)
        applied = self._applied(record, verdict.artifact_id, change, verdict, now)
        if _worth_reporting(verdict, change, in_scope=verdict.applies_to(self.device_id, self.group)):
            self._report_applied(applied)
        return applied

    def _checked(self, record: VerdictRecord, now: datetime) -> Verdict:
        verdict = decode(Verdict, record.value or b"")
        key = _text(record.key)
        if key != verdict.artifact_id:
            raise ValidationFailed(f"record key {key!r} is not the verdict's artifact_id",
                                   record_id=verdict.artifact_id)
        check_verdict(verdict, keyring=self.keyring, now=now, max_skew=self._max_skew)
        return verdict

    def _tombstone(self, record: VerdictRecord, now: datetime) -> AppliedVerdict | None:
        key = _text(record.key)
        if key is None or len(key) != 64 or not set(key) <= _SHA256_CHARS:
            self._refuse(record, ValidationFailed(f"tombstone key {key!r} is not a sha256"), now)
            return None
        change = self.blocklist.remove(key, partition=record.partition, offset=record.offset)
        applied = self._applied(record, key, change, None, now)
        if change is not Change.UNCHANGED:
            self._report_applied(applied)
        return applied

    def _applied(self, record: VerdictRecord, artifact_id: str, change: Change, verdict: Verdict | None,
                 now: datetime) -> AppliedVerdict:
        applied = AppliedVerdict(
            artifact_id=artifact_id, change=change, blocked=self.blocklist.get(artifact_id) is not None,
            verdict=verdict, partition=record.partition, offset=record.offset,
            record_ts_ms=record.timestamp_ms, applied_at=now,
        )
        log.debug("verdict %s at %d/%d: %s", artifact_id, record.partition, record.offset, change)
        for callback in self._on_applied:
            try:
                callback(applied)
            except Exception:  # a consumer of the notification must not stop the blocklist
                log.exception("on_applied callback failed for verdict %s", artifact_id)
        return applied

    def _report_applied(self, applied: AppliedVerdict) -> None:
        verdict = applied.verdict
        what = f"{verdict.disposition} verdict ({verdict.source})" if verdict else "tombstone"
        reason = f"{applied.change}: {what} at {applied.partition}/{applied.offset}"
        self._reporter.report(action_result(
            self.device_id, ActionKind.APPLY_VERDICT, Outcome.SUCCEEDED, now=applied.applied_at,
            since=verdict.issued_at if verdict else None, artifact_id=applied.artifact_id, reason=reason,
        ))

    def report_dropped(self, artifact_id: str, now: datetime) -> None:
        """A resync found no record for an artifact we blocked: it was lifted while we were away."""
        log.info("device %s: %s no longer on the fleet blocklist (resync)", self.device_id, artifact_id)
        self._reporter.report(action_result(
            self.device_id, ActionKind.APPLY_VERDICT, Outcome.SUCCEEDED, now=now, artifact_id=artifact_id,
            reason=f"{Change.UNBLOCKED}: not on the verdict topic any more (resync after a long absence)",
        ))

    def _refuse(self, record: VerdictRecord, exc: ContractError, now: datetime) -> None:
        self.refused += 1
        self.blocklist.advance(record.partition, record.offset)
        key = _text(record.key)
        artifact = key if key and len(key) == 64 and set(key) <= _SHA256_CHARS else None
        log.warning("verdict refused at %d/%d (key %r): %s", record.partition, record.offset, key, exc)
        self._reporter.report(action_result(
            self.device_id, ActionKind.APPLY_VERDICT, Outcome.REFUSED, now=now, artifact_id=artifact,
            reason=str(exc)[:4096], error_class=exc.error_class,
        ))


def _worth_reporting(verdict: Verdict, change: Change, *, in_scope: bool) -> bool:
    """Every in-scope verdict is reported once; re-reading an unchanged block (a resync, a replay
    after a crash) is not news, and an out-of-scope verdict matters only if it lifted our block."""
    if not in_scope:
        return change is Change.UNBLOCKED
    return change is not Change.UNCHANGED or not verdict.blocks


def _text(key: bytes | None) -> str | None:
    if key is None:
        return None
    return key.decode("utf-8", "replace").lower()


class VerdictFollower(TopicFollower):
    """Follows every partition of the verdict topic into the blocklist (the loop: `TopicFollower`)."""

    kind = "verdict"

    def __init__(self, handler: VerdictHandler, consumer_factory: ConsumerFactory, topic: str, *,
                 clock: Clock = utc_now, max_offline: timedelta = timedelta(days=25),
                 fetch_timeout_ms: int = 500, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0) -> None:
        super().__init__(consumer_factory, topic, device_id=handler.device_id,
                         fetch_timeout_ms=fetch_timeout_ms, max_records=1000,
                         backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s)
        self.handler = handler
        self.caught_up_at: datetime | None = None
        self._clock = clock
        self._max_offline = max_offline  # below the topic's delete.retention.ms (tombstones kept)

    @property
    def blocklist(self) -> Blocklist:
        return self.handler.blocklist

    async def _assign(self, consumer: Any) -> list[Any]:
        from aiokafka.structs import TopicPartition

        numbers = await partitions_of(consumer, self.topic)
        partitions = [TopicPartition(self.topic, n) for n in numbers]
        self._maybe_resync()
        resumed = await seek_saved(consumer, partitions, self.blocklist.positions)
        log.info("verdict follower of device %s: %s partitions %s, %d from saved offsets, %d entries",
                 self.handler.device_id, self.topic, numbers, resumed, len(self.blocklist))
        return partitions

    async def _on_batch(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        for tp, records in batch.items():
            self._handle_all(tp.partition, records)
        self._commit()

    def _maybe_resync(self) -> None:
        last = self.blocklist.last_caught_up_at
        if self.blocklist.positions and last is not None and self._clock() - last > self._max_offline:
            log.warning("device %s last caught up with %s at %s: re-reading it whole (tombstones of a "
                        "longer absence may be gone)", self.handler.device_id, self.topic, last.isoformat())
            self.blocklist.begin_resync()

    def _handle_all(self, partition: int, records: Sequence[Any]) -> None:
        for msg in records:
            record = VerdictRecord(partition, msg.offset, msg.key, msg.value, msg.timestamp)
            try:
                self.handler.handle(record)
            except Exception:  # a bug on one record must not stop the list (nor loop on it)
                log.exception("verdict %s[%d] offset %d could not be handled; skipped",
                              self.topic, partition, msg.offset)
                self.blocklist.advance(partition, msg.offset)

    def _commit(self) -> None:
        try:
            self.blocklist.commit()
        except StateError as exc:  # enforcement goes on from memory; the next commit retries
            log.error("device %s: %s", self.handler.device_id, exc)

    def _on_caught_up(self) -> None:
        now = self._clock()
        for artifact_id in self.blocklist.caught_up(now):
            self.handler.report_dropped(artifact_id, now)
        self._commit()
        self.caught_up_at = now
        log.info("device %s: blocklist caught up with %s at version %d (%d entries)",
                 self.handler.device_id, self.topic, self.blocklist.version, len(self.blocklist))
