"""Audit records on `ringfence.audit.v1`: who did what to the fleet from the SOC console, and when.

Lifting a verdict unblocks a file everywhere; switching a group to audit turns blocking off for it.
Such changes must be attributable after the fact, so every state-changing request the console
receives — accepted, refused for lack of authentication, or failed — leaves one record here (key:
the actor), naming the record it published (topic and key) when there was one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.common import SCHEMA_VERSION, Contract, Identifier, SchemaVersion, ShortText, UtcTimestamp

ANONYMOUS = "anonymous"
"""The actor of a request that carried no valid credentials."""


class AuditAction(StrEnum):
    """The state-changing actions the console offers."""

    LIFT_VERDICT = "lift_verdict"
    RESTORE_FILE = "restore_file"
    SET_GROUP_MODE = "set_group_mode"
    SET_DEVICE_MODE = "set_device_mode"  # a signed per-device override (or its removal)
    MARK_FALSE_POSITIVE = "mark_false_positive"


class AuditOutcome(StrEnum):
    """How the request ended."""

    ACCEPTED = "accepted"  # the record was published
    DENIED = "denied"  # no valid credentials: nothing was done
    REJECTED = "rejected"  # authenticated, but the request was invalid: nothing was done
    FAILED = "failed"  # valid, but publishing failed (e.g. broker unreachable, no signing key)


class AuditRecord(Contract):
    """One state-changing request (key: actor)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    audit_id: Identifier
    actor: ShortText
    action: AuditAction
    outcome: AuditOutcome
    target: ShortText  # what the action was about: artifact sha256, device/sha256, group, alert id
    alert_id: Identifier | None = None
    published_topic: Annotated[str, StringConstraints(max_length=249)] | None = None
    published_key: ShortText | None = None
    record_id: ShortText | None = None  # command_id, update_id, or the verdict's artifact id
    reason: ShortText = ""  # the analyst's reason, or why it was denied / rejected / failed
    client: Annotated[str, StringConstraints(max_length=256)] | None = None  # remote address
    details: Annotated[dict[ShortText, ShortText], Field(max_length=32)] = Field(default_factory=dict)
    ts: UtcTimestamp
