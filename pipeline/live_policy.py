"""The policy a running worker applies, from three sources: a file, the policy topic, the devices topic.

- the **policy file** (YAML or JSON, `PolicyConfig.from_dict`'s document) is the operator's base:
  default mode, group modes, per-device overrides, exclusions, TTLs;
- **policy updates** (`ringfence.policy.v1`, compacted, latest per key) are the SOC console's
  changes, folded over the file with `schemas.policy_updates.fold`; a tombstone withdraws one.
  Given a `keyring`, a group or device mode update must carry a valid fleet signature (as the
  agents require, `agents.mode_follower`), so worker and agents never disagree on a forged one;
- the **devices topic** (`ringfence.devices.v1`) says which group each device is in and whether
  enrollment gave it its own mode (`DeviceRecord.mode_override`). Records and heartbeats share the
  device's key on a compacted topic, so an enrolled agent's heartbeat restates its enrollment
  (`enrolled_at`, group, `mode_override`): whichever survives compaction is enough. A heartbeat
  without `enrolled_at` may move a device to another group but leaves its override alone.

A per-device mode in the policy file wins over the device's enrollment override: the file is the
operator's last word. Device lookups are live views, so a device record changes decisions without
rebuilding the policy; a file or update change rebuilds the `PolicyConfig` (cheap, rare). Pure:
bytes in, values out; the shell feeds the records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.errors import PolicyError
from pipeline.policy import PolicyConfig
from schemas.codec import decode, decode_device_value
from schemas.common import Mode
from schemas.devices import DeviceRecord, restates_enrollment
from schemas.errors import ContractError
from schemas.policy_updates import DeviceModeChange, GroupModeChange, PolicyUpdate, fold
from schemas.signing import Keyring, verify

__all__ = ["DeviceDirectory", "DeviceEntry", "LivePolicy", "load_policy_document"]

log = logging.getLogger(__name__)
V = TypeVar("V")
_MODE_KEYS = ("group_mode:", "device_mode:")


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """What the policy needs to know about one device."""

    group: str | None = None
    mode_override: Mode | None = None
    enrolled_at: datetime | None = None  # of the enrollment the two fields above come from


class _View(Mapping[str, V]):
    """A read-only live view of one field of the directory (entries whose field is set)."""

    def __init__(self, entries: dict[str, DeviceEntry], field: str) -> None:
        self._entries, self._field = entries, field

    def __getitem__(self, device_id: str) -> V:
        entry = self._entries.get(device_id)
        value: V | None = None if entry is None else getattr(entry, self._field)
        if value is None:
            raise KeyError(device_id)
        return value

    def __iter__(self) -> Iterator[str]:
        return (d for d, e in self._entries.items() if getattr(e, self._field) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Overlay(Mapping[str, V]):
    """`first` where it has the key, else `second` (the policy file over the devices topic)."""

    def __init__(self, first: Mapping[str, V], second: Mapping[str, V]) -> None:
        self._first, self._second = first, second

    def __getitem__(self, device_id: str) -> V:
        return self._first[device_id] if device_id in self._first else self._second[device_id]

    def __iter__(self) -> Iterator[str]:
        yield from self._first
        yield from (d for d in self._second if d not in self._first)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class DeviceDirectory:
    """device id -> group and enrollment mode override, folded from the devices topic in order."""

    def __init__(self) -> None:
        self.entries: dict[str, DeviceEntry] = {}
        self.bad_records = 0  # values that are neither a DeviceRecord nor a Heartbeat
        self.groups: Mapping[str, str] = _View(self.entries, "group")
        self.modes: Mapping[str, Mode] = _View(self.entries, "mode_override")

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record; a tombstone (None value) forgets the device."""
        if value is None:
            if key is not None:
                self.entries.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            record = decode_device_value(value)
        except ContractError as exc:
            self.bad_records += 1
            log.warning("devices topic: unreadable record (key %r): %s", key, exc)
            return
        old = self.entries.get(record.device_id, DeviceEntry())
        if isinstance(record, DeviceRecord) or restates_enrollment(record, old.enrolled_at):
            enrolled_at = record.enrolled_at
            self.entries[record.device_id] = DeviceEntry(record.group, record.mode_override, enrolled_at)
        elif record.group is not None:
            self.entries[record.device_id] = replace(old, group=record.group)
        else:
            self.entries.setdefault(record.device_id, old)



def load_policy_document(path: Path) -> dict[str, Any]:
    """Read a policy file (YAML or JSON); PolicyError names the file and the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the policy must be a mapping, not {type(data).__name__}")
    try:
        PolicyConfig.from_dict(data)  # refuse a bad file now, not at the first alert
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None
    return data


class LivePolicy:
    """Builds the current `PolicyConfig` from the file document, the updates and the directory."""

    def __init__(
        self, directory: DeviceDirectory, *, command_ttl_ms: int, verdict_ttl_ms: int | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.directory = directory
        self.keyring = keyring  # given: mode updates must be signed by one of these keys, as agents require
        self.document: dict[str, Any] = {}
        self.updates: dict[str, PolicyUpdate] = {}  # latest per compaction key
        self.bad_updates = 0
        self._defaults: dict[str, Any] = {"command_ttl_ms": command_ttl_ms, "verdict_ttl_ms": verdict_ttl_ms}

    def set_document(self, document: Mapping[str, Any]) -> None:
        """Replace the file's document (already checked by `load_policy_document`)."""
        self.document = dict(document)

    def apply_update(self, key: bytes | None, value: bytes | None) -> bool:
        """Fold one policy-topic record; True when the policy changed."""
        name = None if key is None else key.decode("utf-8", "replace")
        if value is None:
            if self.keyring is not None and name is not None and name.startswith(_MODE_KEYS):
                self.bad_updates += 1  # unsigned: it cannot undo a signed mode switch (agents agree)
                log.warning("policy topic: tombstone for %s refused: mode changes must be signed", name)
                return False
            return name is not None and self.updates.pop(name, None) is not None
        try:
            update = decode(PolicyUpdate, value)
        except ContractError as exc:
            self.bad_updates += 1
            log.warning("policy topic: unreadable update (key %r): %s", name, exc)
            return False
        if self.keyring is not None and isinstance(update.change, GroupModeChange | DeviceModeChange):
            try:
                verify(update, self.keyring)
            except ContractError as exc:
                self.bad_updates += 1
                log.warning("policy topic: mode update %s refused: %s", update.update_id, exc)
                return False
        candidate = {**self.updates, update.key: update}
        try:
            self._build(candidate)
        except PolicyError as exc:
            self.bad_updates += 1
            log.warning("policy topic: update %s refused: %s", update.update_id, exc)
            return False
        self.updates = candidate
        return True

    def config(self) -> PolicyConfig:
        """The policy to apply now (PolicyError only if the file document itself became invalid)."""
        return self._build(self.updates)

    def _build(self, updates: Mapping[str, PolicyUpdate]) -> PolicyConfig:
        document: dict[str, Any] = {**self._defaults, **self.document}
        for update in sorted(updates.values(), key=lambda u: u.issued_at):
            document = fold(document, update)
        config = PolicyConfig.from_dict(document)
        return replace(
            config,
            device_groups=_Overlay(config.device_groups, self.directory.groups),
            device_modes=_Overlay(config.device_modes, self.directory.modes),
        )
