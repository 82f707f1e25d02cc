"""Policy updates on `ringfence.policy.v1` (compacted): analyst changes to modes and exclusions.

Why a topic: the SOC console switches a device group between audit and block and turns a false
positive into an exclusion while workers are running; a compacted topic keyed by *what* changes
(`group_mode:<group>`, `exclusion:<id>`) holds the current policy, every worker reads it whole at
start and follows it, and the history stays reviewable. `fold()` turns updates into the policy
document `pipeline.policy.PolicyConfig.from_dict` reads (`group_modes`, `exclusions` with `id`,
`kind`, `pattern`, `scope`, `expires_ms`, `version`), so the pipeline needs no second parser.

Mode changes (`group_mode`, `device_mode`) are also followed by the agents, which switch their own
enforcement between audit and block: so the console signs them with the fleet key (`key_id`,
`signature`; `schemas.signing.sign_policy_update`) and an agent applies only one that passes
`schemas.signing.check_policy_update`, so a forged record cannot turn a device's blocking off.
Exclusions are read by the fleet service only and need no signature; in production only the
console's and the pipeline's Kafka principals may write this topic. Who made each change is also
recorded on `ringfence.audit.v1` (see `schemas.audit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from schemas.common import (
    SCHEMA_VERSION,
    Contract,
    DeviceId,
    Identifier,
    KeyId,
    Mode,
    SchemaVersion,
    ShortText,
    Signature,
    UtcTimestamp,
)
from schemas.devices import GroupName
from schemas.verdicts import Scope

ExclusionPattern = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class ExclusionMatch(StrEnum):
    """What an exclusion matches (the values of `pipeline.policy.ExclusionKind`)."""

    HASH = "hash"  # sha256 of the image
    PATH = "path"  # glob over the image path
    SIGNER = "signer"  # signer name of the image


class GroupModeChange(Contract):
    """Set the enforcement mode of one device group."""

    kind: Literal["group_mode"] = "group_mode"
    group: GroupName
    mode: Mode


class DeviceModeChange(Contract):
    """Set (or, with `mode` None, clear) one device's own mode, which wins over its group's."""

    kind: Literal["device_mode"] = "device_mode"
    device_id: DeviceId
    mode: Mode | None  # None: the device follows its group's mode again


class ExclusionChange(Contract):
    """Add (or replace, same id with a higher version) a scoped, possibly expiring exclusion."""

    kind: Literal["exclusion"] = "exclusion"
    exclusion_id: Identifier
    match: ExclusionMatch
    pattern: ExclusionPattern
    scope: Scope  # fleet, group:<name> or device:<id>
    expires_at: UtcTimestamp | None = None  # None: until removed
    version: Annotated[int, Field(strict=True, ge=1, le=1 << 31)] = 1
    alert_id: Identifier | None = None  # the false positive that motivated it


PolicyChange = Annotated[GroupModeChange | DeviceModeChange | ExclusionChange, Field(discriminator="kind")]


class PolicyUpdate(Contract):
    """One analyst change to the fleet policy (key: `PolicyUpdate.key`)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    update_id: Identifier
    change: PolicyChange
    actor: ShortText  # who asked for it (the console's authenticated analyst)
    reason: ShortText = ""
    issued_at: UtcTimestamp
    key_id: KeyId | None = None  # set by signing (mode changes: agents act only on signed ones)
    signature: Signature | None = None  # set by signing; covers every other field

    @property
    def key(self) -> str:
        """The compaction key: the latest update per key is the current state of that setting."""
        if isinstance(self.change, GroupModeChange):
            return f"group_mode:{self.change.group}"
        if isinstance(self.change, DeviceModeChange):
            return f"device_mode:{self.change.device_id}"
        return f"exclusion:{self.change.exclusion_id}"


def fold(document: Mapping[str, Any], update: PolicyUpdate) -> dict[str, Any]:
    """`document` (a policy document for `PolicyConfig.from_dict`) with `update` applied; pure."""
    result = dict(document)
    change = update.change
    if isinstance(change, GroupModeChange):
        result["group_modes"] = {**dict(document.get("group_modes", {})), change.group: change.mode.value}
        return result
    if isinstance(change, DeviceModeChange):
        modes = {k: v for k, v in dict(document.get("device_modes", {})).items() if k != change.device_id}
        if change.mode is not None:
            modes[change.device_id] = change.mode.value
        result["device_modes"] = modes
        return result
    kept = [e for e in document.get("exclusions", ()) if str(e.get("id")) != change.exclusion_id]
    result["exclusions"] = [*kept, {
        "id": change.exclusion_id, "kind": change.match.value, "pattern": change.pattern,
        "scope": change.scope, "version": change.version,
        "expires_ms": None if change.expires_at is None else int(change.expires_at.timestamp() * 1000),
    }]
    return result
