"""Devices on `ringfence.devices.v1` (compacted): enrollment record and heartbeats, one key per device.

The fleet needs to know which devices exist, which group and mode each is in and whether each is
current on the blocklist; a heartbeat is the device's periodic claim, the DeviceRecord is the
fleet's merged view (what the SOC console lists). Only public information: no credentials.

Both share the `device_id` key on a compacted topic, so after compaction only the latest of them
survives. An enrolled agent's heartbeat therefore restates its enrollment from the identity bundle
(`enrolled_at`, `group`, `mode_override`): the latest record per key alone says which group the
device is in and whether it has its own mode. A heartbeat without `enrolled_at` (an agent run
without a bundle, or an older agent) says nothing about the override; readers keep what they had.
A heartbeat restating an enrollment older than the record they hold is stale (the device has not
installed its re-issued bundle yet) and does not undo the newer enrollment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from schemas.common import (
    SCHEMA_VERSION,
    Contract,
    Count,
    DeviceId,
    Mode,
    Platform,
    SchemaVersion,
    ShortText,
    UtcTimestamp,
)

GroupName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Version = Annotated[str, StringConstraints(min_length=1, max_length=64)]
PublicKeyText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")]
"""A raw 32-byte Ed25519 public key, base64url without padding."""


class Heartbeat(Contract):
    """What a device says about itself, periodically (key: device_id)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    device_id: DeviceId
    hostname: ShortText
    platform: Platform
    os_version: ShortText | None = None
    group: GroupName | None = None
    mode: Mode  # the mode the agent is enforcing right now
    enrolled_at: UtcTimestamp | None = None  # from the identity bundle; set: the two fields below restate it
    mode_override: Mode | None = None  # the enrollment's per-device mode (None: the group's mode)
    agent_version: Version
    blocklist_version: Count = 0  # highest verdict-topic offset applied (+1), per the agent's reading
    blocklist_size: Count = 0  # artifacts currently blocked
    spooled_events: Count = 0  # events waiting on local disk for the broker
    ts: UtcTimestamp


class DeviceRecord(Contract):
    """The fleet's view of one enrolled device (key: device_id; the topic is compacted)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    device_id: DeviceId
    hostname: ShortText
    platform: Platform
    os_version: ShortText | None = None
    group: GroupName | None = None
    mode_override: Mode | None = None  # per-device override of the group's mode
    effective_mode: Mode
    agent_version: Version
    public_key: PublicKeyText | None = None  # the device's own key (enrollment), when it has one
    enrolled_at: UtcTimestamp
    last_seen: UtcTimestamp
    blocklist_version: Count = 0
    blocklist_size: Count = 0

    def seen(self, heartbeat: Heartbeat) -> DeviceRecord:
        """This record updated with a newer heartbeat (older ones change nothing)."""
        if heartbeat.device_id != self.device_id or heartbeat.ts <= self.last_seen:
            return self
        return self.model_copy(update={
            "hostname": heartbeat.hostname, "os_version": heartbeat.os_version, "group": heartbeat.group,
            "agent_version": heartbeat.agent_version, "last_seen": heartbeat.ts,
            "blocklist_version": heartbeat.blocklist_version, "blocklist_size": heartbeat.blocklist_size,
            **({"mode_override": heartbeat.mode_override} if restates_enrollment(heartbeat, self.enrolled_at)
               else {}),
        })


def restates_enrollment(heartbeat: Heartbeat, known: datetime | None) -> bool:
    """Whether `heartbeat` carries an enrollment at least as new as the one `known` (None: none known)."""
    return heartbeat.enrolled_at is not None and (known is None or heartbeat.enrolled_at >= known)
