"""Follow this device's enforcement mode (audit or block) from signed records on the policy topic.

Why the policy topic: the SOC console switches a device group between audit and block by writing
a `PolicyUpdate` keyed `group_mode:<group>` to the compacted `ringfence.policy.v1` (the fleet
service folds the same record into its policy), and a per-device override is keyed
`device_mode:<device_id>`. The latest record per key is the current setting, so an agent reads
the topic whole at its first start, then follows it, with no consumer group
(`agents.topic_follower.TopicFollower`), exactly as it reads the verdict topic.

Why signatures: turning a device to audit turns its blocking off, so only a record signed with a
fleet key the agent trusts (`schemas.signing.check_policy_update`) may change the mode. A forged,
unsigned, undecodable or mislabelled record for one of this device's two keys, a tombstone (it
cannot carry a signature), and a replay of an older update than the one applied, change nothing
and are reported on the actions topic as `set_mode` / `refused`. An accepted change is reported as
`set_mode` / `succeeded` with the mode before and after. Records for other groups and devices,
and exclusions, are not this agent's business and are skipped unread.

The mode, in the fleet service's order: the device's signed override if one is set, else the
override its enrollment gave it (`mode_override`, from the identity bundle), else its group's
mode, else the configured `mode` (`RINGFENCE_AGENT_MODE`). The applied updates and the followed
position are kept in `mode.db` in the state dir, so an agent restarted while the broker is
unreachable enforces the mode it last had. The position is kept per (topic, group, device):
after a move to another group the topic is read again from the beginning, to find that group's
setting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agents.action_reporter import Reporter, action_result
from agents.blocklist import Clock, SyncMode, utc_now
from agents.enforcement_errors import StateError
from agents.state_store import FollowerStateStore
from agents.topic_follower import ConsumerFactory, TopicFollower, partitions_of, seek_saved
from schemas.actions import ActionKind, Outcome
from schemas.codec import decode, encode
from schemas.common import Mode
from schemas.errors import ContractError, Replayed, ValidationFailed
from schemas.policy_updates import GroupModeChange, PolicyUpdate
from schemas.signing import DEFAULT_MAX_SKEW, Keyring, check_policy_update

__all__ = ["MODE_FILE", "EffectiveMode", "ModeFollower", "ModeHandler", "ModeStore", "effective_mode"]

log = logging.getLogger(__name__)

MODE_FILE = "mode.db"
ModeSwitched = Callable[[Mode, datetime], None]  # (new mode, when the change was issued)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    scope TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (scope, partition));
"""


@dataclass(frozen=True, slots=True)
class EffectiveMode:
    """The mode this device enforces and where it comes from."""

    mode: Mode
    source: str  # "config", or the policy key that set it ("group_mode:lab", "device_mode:ws-1")
    update: PolicyUpdate | None = None


def effective_mode(default: Mode, group: PolicyUpdate | None, device: PolicyUpdate | None,
                   enrolled: Mode | None = None) -> EffectiveMode:
    """The signed device override, else the enrollment's override, else the group's mode, else the
    configured default (pure; the fleet service's order: `pipeline.live_policy`)."""
    mode = getattr(device.change, "mode", None) if device is not None else None
    if device is not None and mode is not None:
        return EffectiveMode(Mode(mode), device.key, device)
    if enrolled is not None:
        return EffectiveMode(Mode(enrolled), "enrollment")
    if group is not None and isinstance(group.change, GroupModeChange):
        return EffectiveMode(group.change.mode, group.key, group)
    return EffectiveMode(default, "config")


class ModeStore(FollowerStateStore):
    """Applied mode updates (latest per key) and the followed positions, in one SQLite file."""

    WHAT = "mode state"

    def __init__(self, path: Path | None, *, sync: SyncMode = "full") -> None:
        super().__init__(path, _SCHEMA, sync=sync)

    def get(self, key: str) -> PolicyUpdate | None:
        row = self._db.execute("SELECT value FROM updates WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return decode(PolicyUpdate, bytes(row[0]))
        except ContractError as exc:  # written by us: only a damaged file gets here
            log.error("%s: saved mode update %s unreadable, ignored: %s", self.path, key, exc)
            return None

    def save(self, update: PolicyUpdate) -> None:
        """Record an accepted update, durably, before the enforcer switches."""
        self._write("INSERT OR REPLACE INTO updates VALUES (?, ?)", (update.key, encode(update)))


class ModeHandler:
    """Checks one policy record for this device's keys and applies it; reports switches and refusals."""

    def __init__(self, *, device_id: str, group: str, default: Mode, keyring: Keyring, store: ModeStore,
                 reporter: Reporter, clock: Clock = utc_now, max_skew: timedelta = DEFAULT_MAX_SKEW,
                 on_switch: ModeSwitched | None = None, enrolled: Mode | None = None) -> None:
        self.device_id = device_id
        self.group = group
        self.default = Mode(default)
        self.enrolled = Mode(enrolled) if enrolled is not None else None  # the bundle's own mode
        self.keyring = keyring  # replaceable: key rotation hands in a new keyring
        self.store = store
        self.refused = 0
        self.on_switch = on_switch
        self._group_key, self._device_key = f"group_mode:{group}", f"device_mode:{device_id}"
        self._reporter = reporter
        self._clock = clock
        self._max_skew = max_skew

    def current(self) -> EffectiveMode:
        """The mode to enforce now, from the saved updates."""
        return effective_mode(self.default, self.store.get(self._group_key), self.store.get(self._device_key),
                              self.enrolled)

    def is_mine(self, key: bytes | None) -> bool:
        return _text(key) in (self._group_key, self._device_key)

    def handle(self, key: bytes | None, value: bytes | None) -> EffectiveMode | None:
        """Apply one record for this device's keys; the new mode, or None (unchanged or refused)."""
        name, now = _text(key) or "", self._clock()
        try:
            update = self._checked(name, value, now)
        except ContractError as exc:
            self._refuse(name, value, exc, now)
            return None
        if update is None:
            return None
        before = self.current()
        self.store.save(update)
        after = self.current()
        self._report_applied(update, before, after, now)
        if after.mode is not before.mode and self.on_switch is not None:
            self.on_switch(after.mode, update.issued_at)
        return after

    def _checked(self, name: str, value: bytes | None, now: datetime) -> PolicyUpdate | None:
        if value is None:
            raise ValidationFailed(f"tombstone for {name}: unsigned, it cannot change the mode")
        update = decode(PolicyUpdate, value)
        if update.key != name:
            raise ValidationFailed(f"record key {name!r} is not the update's key {update.key!r}",
                                   record_id=update.update_id)
        check_policy_update(update, keyring=self.keyring, now=now, max_skew=self._max_skew)
        applied = self.store.get(name)
        if applied is not None and applied.update_id == update.update_id:
            return None  # read again (a restart before the position was saved): already applied
        if applied is not None and update.issued_at <= applied.issued_at:
            raise Replayed(f"update {update.update_id} is not newer than the applied {applied.update_id} "
                           f"({applied.issued_at.isoformat()})", record_id=update.update_id)
        return update

    def _report_applied(self, update: PolicyUpdate, before: EffectiveMode, after: EffectiveMode,
                        now: datetime) -> None:
        what = f"{update.key}={getattr(update.change, 'mode', None) or 'cleared'}"
        verb = "switched" if after.mode is not before.mode else "stays"
        reason = (f"mode {before.mode} -> {after.mode} ({verb}; now from {after.source}): {what} by "
                  f"{update.actor}, update {update.update_id}")
        if update.reason:
            reason += f": {update.reason}"
        log.warning("device %s: %s", self.device_id, reason)
        self._reporter.report(action_result(
            self.device_id, ActionKind.SET_MODE, Outcome.SUCCEEDED, now=now, since=update.issued_at,
            reason=reason[:4096]))

    def _refuse(self, name: str, value: bytes | None, exc: ContractError, now: datetime) -> None:
        self.refused += 1
        log.warning("device %s: mode change %s refused (mode stays %s): %s", self.device_id, name,
                    self.current().mode, exc)
        self._reporter.report(action_result(
            self.device_id, ActionKind.SET_MODE, Outcome.REFUSED, now=now,
            reason=f"{name}: {exc}"[:4096], error_class=exc.error_class))


def _text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")


class ModeFollower(TopicFollower):
    """Follows every partition of the policy topic for this device's two mode keys."""

    kind = "mode"

    def __init__(self, handler: ModeHandler, consumer_factory: ConsumerFactory, topic: str, *,
                 fetch_timeout_ms: int = 500, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0) -> None:
        super().__init__(consumer_factory, topic, device_id=handler.device_id,
                         fetch_timeout_ms=fetch_timeout_ms, max_records=1000,
                         backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s)
        self.handler = handler
        self.scope = f"{topic}|{handler.group}|{handler.device_id}"

    async def _assign(self, consumer: Any) -> list[Any]:
        from aiokafka.structs import TopicPartition

        numbers = await partitions_of(consumer, self.topic)
        partitions = [TopicPartition(self.topic, n) for n in numbers]
        await seek_saved(consumer, partitions, self.handler.store.positions(self.scope))
        log.info("mode follower of device %s (group %s): %s partitions %s, mode %s", self.device_id,
                 self.handler.group, self.topic, numbers, self.handler.current().mode)
        return partitions

    async def _on_batch(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        for tp, records in batch.items():
            for msg in records:
                self._one(tp.partition, msg)
            if records:
                self.handler.store.save_position(self.scope, tp.partition, records[-1].offset + 1)

    def _one(self, partition: int, msg: Any) -> None:
        if not self.handler.is_mine(msg.key):
            return
        try:
            self.handler.handle(msg.key, msg.value)
        except StateError:
            raise  # cannot save the mode: stop and read it again rather than lose it
        except Exception:  # a bug on one record must not stop the follower
            log.exception("mode update %s[%d] offset %d could not be handled; skipped", self.topic,
                          partition, msg.offset)
