"""The console's state-changing actions as pure functions: request in, record to publish out.

Each action yields one `Outgoing` record (topic, key, encoded value) and the facts its audit record
needs; the console publishes it and then the `AuditRecord` built by `audit_record`. Verdicts and
commands are signed here with the fleet key, exactly as the pipeline signs its own, so agents apply
an analyst's lift or restore with the same checks as any other record; so is a group's mode switch,
which the group's agents follow (`agents.mode_follower`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pipeline.soc.errors import ActionRejected
from pipeline.soc.settings import ConsoleTopics
from schemas.alerts import Alert, AlertAction
from schemas.audit import AuditAction, AuditOutcome, AuditRecord
from schemas.codec import encode
from schemas.commands import CommandAction, new_command
from schemas.common import Identifier, Mode, Sha256Hex
from schemas.policy_updates import (
    DeviceModeChange,
    ExclusionChange,
    ExclusionMatch,
    GroupModeChange,
    PolicyUpdate,
)
from schemas.signing import SigningKey, sign_command, sign_policy_update, sign_verdict
from schemas.verdicts import Disposition, Verdict, VerdictSource

Reason = Annotated[str, StringConstraints(max_length=1024, strip_whitespace=True)]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LiftRequest(_Request):
    """POST /api/verdicts/{sha256}/lift"""

    reason: Reason = ""
    alert_id: Identifier | None = None


class RestoreRequest(_Request):
    """POST /api/commands/restore"""

    device_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
    sha256: Sha256Hex
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    reason: Reason = ""
    alert_id: Identifier | None = None


class GroupModeRequest(_Request):
    """POST /api/groups/{group}/mode"""

    mode: Mode
    reason: Reason = ""


class DeviceModeRequest(_Request):
    """POST /api/devices/{device_id}/mode (mode null: the device follows its group again)"""

    mode: Mode | None
    reason: Reason = ""


class FpScope(StrEnum):
    """How far a false-positive exclusion reaches."""

    DEVICE = "device"
    GROUP = "group"
    FLEET = "fleet"


class FalsePositiveRequest(_Request):
    """POST /api/alerts/{alert_id}/false-positive"""

    match: ExclusionMatch = ExclusionMatch.HASH
    scope: FpScope = FpScope.DEVICE
    expires_hours: Annotated[int, Field(ge=1, le=24 * 3650)] = 24 * 30
    reason: Reason = ""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to publish, and what its audit record says about it."""

    action: AuditAction
    topic: str
    key: str
    value: bytes
    record_id: str
    target: str
    alert_id: str | None = None


def lift_verdict(sha256: str, request: LiftRequest, *, actor: str, key: SigningKey, now: datetime,
                 topics: ConsoleTopics) -> Outgoing:
    """A signed fleet-wide `lifted` verdict for the artifact (key: its sha256)."""
    verdict = sign_verdict(Verdict(
        artifact_id=sha256, disposition=Disposition.LIFTED, source=VerdictSource.ANALYST,
        reason=_reason(actor, request.reason), alert_id=request.alert_id, issued_at=now,
    ), key)
    return Outgoing(AuditAction.LIFT_VERDICT, topics.verdicts, verdict.artifact_id, encode(verdict),
                    verdict.artifact_id, verdict.artifact_id, request.alert_id)


def restore_file(request: RestoreRequest, *, actor: str, key: SigningKey, now: datetime, ttl: timedelta,
                 topics: ConsoleTopics) -> Outgoing:
    """A signed `restore_file` command for one device (key: the device id)."""
    fields = {"sha256": request.sha256, "reason": _reason(actor, request.reason)[:4096]}
    if request.path:
        fields["path"] = request.path
    if request.alert_id:
        fields["alert_id"] = request.alert_id
    command = sign_command(new_command(device_id=request.device_id, action=CommandAction.RESTORE_FILE,
                                       now=now, ttl=ttl, **fields), key)
    return Outgoing(AuditAction.RESTORE_FILE, topics.commands, command.device_id, encode(command),
                    command.command_id, f"{command.device_id}/{request.sha256}", request.alert_id)


def set_group_mode(group: str, request: GroupModeRequest, *, actor: str, now: datetime,
                   topics: ConsoleTopics, key: SigningKey) -> Outgoing:
    """A signed policy update switching `group` to audit or block: the fleet service and the
    group's agents both apply a mode switch only when it carries a valid fleet signature."""
    change = GroupModeChange(group=_group(group), mode=request.mode)
    update = sign_policy_update(PolicyUpdate(update_id=secrets.token_hex(16), change=change, actor=actor,
                                             reason=request.reason, issued_at=now), key)
    return Outgoing(AuditAction.SET_GROUP_MODE, topics.policy, update.key, encode(update),
                    update.update_id, f"group:{change.group}={change.mode.value}")


def set_device_mode(device_id: str, request: DeviceModeRequest, *, actor: str, key: SigningKey,
                    now: datetime, topics: ConsoleTopics) -> Outgoing:
    """A signed policy update giving one device its own mode (or clearing it); it wins over the
    group's mode and the enrollment's, on the device and in the fleet service."""
    change = DeviceModeChange(device_id=_device(device_id), mode=request.mode)
    update = sign_policy_update(PolicyUpdate(update_id=secrets.token_hex(16), change=change, actor=actor,
                                             reason=request.reason, issued_at=now), key)
    mode = change.mode.value if change.mode is not None else "group"
    return Outgoing(AuditAction.SET_DEVICE_MODE, topics.policy, update.key, encode(update),
                    update.update_id, f"device:{change.device_id}={mode}")


def false_positive(alert: Alert, request: FalsePositiveRequest, *, group: str | None, actor: str,
                   now: datetime, max_days: int, topics: ConsoleTopics) -> Outgoing:
    """A scoped, expiring exclusion for the alert's artifact (by hash or by path)."""
    if request.expires_hours > max_days * 24:
        raise ActionRejected(f"an exclusion may last at most {max_days} days", alert_id=alert.alert_id)
    pattern = alert.artifact_sha256 if request.match is ExclusionMatch.HASH else alert.artifact_path
    if not pattern or request.match is ExclusionMatch.SIGNER:
        raise ActionRejected(f"the alert names no artifact {request.match.value} to exclude",
                             alert_id=alert.alert_id)
    change = ExclusionChange(
        exclusion_id=f"fp-{secrets.token_hex(8)}", match=request.match, pattern=pattern,
        scope=_scope(alert, request.scope, group), expires_at=now + timedelta(hours=request.expires_hours),
        alert_id=alert.alert_id,
    )
    update = PolicyUpdate(update_id=secrets.token_hex(16), change=change, actor=actor,
                          reason=request.reason or f"false positive {alert.detection_name}", issued_at=now)
    return Outgoing(AuditAction.MARK_FALSE_POSITIVE, topics.policy, update.key, encode(update),
                    update.update_id, f"{change.scope} {change.match.value} {pattern}", alert.alert_id)


def _scope(alert: Alert, scope: FpScope, group: str | None) -> str:
    if scope is FpScope.DEVICE:
        return f"device:{alert.device_id}"
    if scope is FpScope.GROUP:
        if group is None:
            raise ActionRejected("the device is in no group; choose device or fleet scope",
                                 alert_id=alert.alert_id, device_id=alert.device_id)
        return f"group:{group}"
    return "fleet"


def _group(group: str) -> str:
    try:
        return GroupModeChange.model_validate({"group": group, "mode": "audit"}).group
    except ValueError:
        raise ActionRejected(f"{group[:64]!r} is not a group name") from None


def _device(device_id: str) -> str:
    try:
        return DeviceModeChange.model_validate({"device_id": device_id, "mode": None}).device_id
    except ValueError:
        raise ActionRejected(f"{device_id[:64]!r} is not a device id") from None


def _reason(actor: str, reason: str) -> str:
    return f"{actor} via console" + (f": {reason}" if reason else "")


def quarantined_files(alert: Alert) -> list[tuple[str, str]]:
    """(path, sha256) of each file the alert's actions quarantined, for the restore buttons."""
    hashes = {node.image: node.sha256 for node in alert.process_tree.nodes if node.image and node.sha256}
    found = []
    for action in alert.actions:
        if action.action is AlertAction.QUARANTINE_FILE:
            sha256 = hashes.get(action.target) or alert.artifact_sha256
            if sha256:
                found.append((action.target, sha256))
    return found


def audit_record(*, actor: str, action: AuditAction, outcome: AuditOutcome, target: str, now: datetime,
                 outgoing: Outgoing | None = None, reason: str = "", client: str | None = None,
                 alert_id: str | None = None) -> AuditRecord:
    """The audit record of one request (accepted with what it published, or why it was not)."""
    return AuditRecord(
        audit_id=secrets.token_hex(16), actor=actor[:4096], action=action, outcome=outcome,
        target=target[:4096], alert_id=(outgoing.alert_id if outgoing else alert_id),
        published_topic=outgoing.topic if outgoing else None,
        published_key=outgoing.key if outgoing else None,
        record_id=outgoing.record_id if outgoing else None,
        reason=reason[:4096], client=client[:256] if client else None, ts=now,
    )

