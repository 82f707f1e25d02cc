"""What the worker writes, as plain (topic, key, value) records: signed decisions and dead letters.

Pure, so the rules "every verdict and command leaves signed", "a verdict is keyed by its artifact
(the compacted blocklist keeps one per file)" and "a dead letter keeps the raw bytes and where they
came from" are tested without a broker. The stream shell only sends what this module returns.
A signed record is dumped to JSON once (`schemas.signing.signed_json`): the same bytes as signing a
copy of the model and encoding the signed copy, without the copies and the second dump. A decision
the policy made is not dumped at all: the alert's JSON bytes and a command's or verdict's JSON
values, from which each was validated, are held for it (`pipeline.incident.WRITTEN`, `VALUES`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pipeline.incident import VALUES, WRITTEN
from pipeline.policy import Decision
from schemas.alerts import Alert
from schemas.codec import encode
from schemas.commands import Command
from schemas.deadletter import DeadLetter
from schemas.signing import SigningKey, signed_json, signed_json_of
from schemas.verdicts import Verdict

__all__ = ["OutRecord", "OutputTopics", "SourceCoordinates", "dead_letter", "decision_records"]


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce."""

    topic: str
    key: bytes
    value: bytes | None  # None: a tombstone


@dataclass(frozen=True, slots=True)
class OutputTopics:
    """Where each kind of decision goes."""

    alerts: str
    verdicts: str
    commands: str
    dlq: str


@dataclass(frozen=True, slots=True)
class SourceCoordinates:
    """Where a consumed record came from (for dead letters and log lines)."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def decision_records(decisions: Iterable[Decision], topics: OutputTopics, key: SigningKey) -> list[OutRecord]:
    """Alerts as they are; verdicts and commands signed with the fleet key (one JSON dump each:
    `schemas.signing.signed_json`, the bytes `encode(sign_command(...))` would give)."""
    return [_record(decision, topics, key) for decision in decisions]


def _record(decision: Decision, topics: OutputTopics, key: SigningKey) -> OutRecord:
    if type(decision) is Command:  # the policy's own records first (their exact types), then any subclass
        return OutRecord(topics.commands, decision.device_id.encode(), _signed(decision, key))
    if isinstance(decision, Alert):
        return OutRecord(
            topics.alerts, decision.device_id.encode(), WRITTEN.take(decision) or encode(decision)
        )
    if isinstance(decision, Verdict):
        return OutRecord(topics.verdicts, decision.artifact_id.encode(), _signed(decision, key))
    if isinstance(decision, Command):
        return OutRecord(topics.commands, decision.device_id.encode(), _signed(decision, key))
    raise TypeError(f"not a decision: {type(decision).__name__}")


def _signed(decision: Verdict | Command, key: SigningKey) -> bytes:
    """Signed from the JSON values the policy validated it from when they are held, else dumped once."""
    values = VALUES.take(decision)
    return signed_json(decision, key) if values is None else signed_json_of(values, type(decision), key)


def dead_letter(
    raw: bytes | None,
    key: bytes | None,
    error: Exception,
    where: SourceCoordinates,
    topics: OutputTopics,
    now: datetime,
) -> OutRecord:
    """The DLQ record for a rejected input record, keyed like the source record (usually device_id)."""
    letter = DeadLetter.for_record(
        raw or b"", error, topic=where.topic, partition=where.partition, offset=where.offset, now=now, key=key
    )
    return OutRecord(topics.dlq, key or b"", encode(letter))
