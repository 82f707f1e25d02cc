"""Policy: what the fleet does about a malicious tree — modes, exclusions, and the decisions.

- **Modes** (as Tetragon's monitoring vs enforcement): `audit` or `block` per device group, with
  per-device overrides; devices without a group use `default_mode` (audit unless configured).
- **Exclusions** by hash, path glob or signer, scoped to the fleet, a group or a device, optionally
  expiring. They are matched against the subtree's root, the scored process and the artifact; a
  matching active exclusion suppresses the incident and is counted under its id (`suppressed`).
- **Decisions** are the contract records themselves: an `Alert` always; in block mode also a
  `kill_process_tree` `Command` for the subtree's root, and, when the subtree contains a file that
  is not one of the operating system's own tools (a shell, LOLBin, office app... is never blocked
  fleet-wide), a `quarantine_file` `Command` and a `malicious` `Verdict` for its sha256.
- **Audit emits the Alert only** (mode=audit, actions listed with `audited=True` so an analyst sees
  what block mode would have done). It emits no verdict, not even `suspicious`: the verdict topic is
  the fleet blocklist, and audit must not change what any agent does. The commands and verdict it
  lists are not built (`incident.audit_record`), so only the alert's own contract can refuse it.
- **Idempotent**: the alert id is a hash of (device, root process_key, tactic, model version);
  command ids and nonces derive from the alert id, so a redelivered event reproduces the same ids.
Commands and verdicts leave here unsigned; the stream shell signs them with the fleet key.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
from collections import Counter as Tally
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pipeline.errors import PolicyError
from pipeline.incident import (
    VALUES,
    Incident,
    Subject,
    alert_id_for,
    alert_record,
    audit_record,
    ms_text,
    sha256_text,
    stable_id,
    utc,
    utc_text,
)
from schemas.alerts import Alert
from schemas.commands import Command, CommandAction
from schemas.common import SCHEMA_VERSION, Mode
from schemas.verdicts import FLEET, ArtifactType, Disposition, Verdict, VerdictSource

Decision = Alert | Verdict | Command
SignedT = TypeVar("SignedT", Command, Verdict)


class ExclusionKind(StrEnum):
    """What an exclusion matches."""

    HASH = "hash"  # sha256 of the image, exact (case-insensitive)
    PATH = "path"  # glob over the image path (case-insensitive on Windows paths)
    SIGNER = "signer"  # signer name of the image, exact (case-insensitive)


@dataclass(frozen=True, slots=True)
class Exclusion:
    """One scoped, versioned, possibly expiring exclusion."""

    exclusion_id: str
    kind: ExclusionKind
    pattern: str
    scope: str = "fleet"  # "fleet", "group:<name>" or "device:<id>"
    expires_ms: int | None = None  # epoch ms after which it no longer applies
    version: int = 1

    def __post_init__(self) -> None:
        kind, _, name = self.scope.partition(":")
        if not self.exclusion_id or not self.pattern:
            raise PolicyError(f"exclusion {self.exclusion_id!r} needs an id and a pattern")
        if not (self.scope == "fleet" or (kind in ("group", "device") and name)):
            raise PolicyError(
                f"exclusion {self.exclusion_id}: scope {self.scope!r} is not fleet/group:X/device:X"
            )

    def active(self, now_ms: int) -> bool:
        """Not expired at `now_ms`."""
        return self.expires_ms is None or now_ms < self.expires_ms

    def covers(self, device_id: str, group: str | None) -> bool:
        """Whether the scope includes this device."""
        kind, _, name = self.scope.partition(":")
        return (
            kind == "fleet" or (kind == "group" and name == group) or (kind == "device" and name == device_id)
        )

    def matches(self, subject: Subject) -> bool:
        """Whether the image described by `subject` is excluded."""
        if self.kind is ExclusionKind.HASH:
            return subject.sha256 is not None and subject.sha256.lower() == self.pattern.lower()
        if self.kind is ExclusionKind.SIGNER:
            return subject.signer is not None and subject.signer.lower() == self.pattern.lower()
        if "\\" in subject.image or ":" in subject.image[:3]:
            return fnmatch.fnmatchcase(
                subject.image.lower().replace("/", "\\"), self.pattern.lower().replace("/", "\\")
            )
        return fnmatch.fnmatchcase(subject.image, self.pattern)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Modes, groups and exclusions; build with `from_dict` from a policy document."""

    default_mode: Mode = Mode.AUDIT
    group_modes: Mapping[str, Mode] = field(default_factory=dict)
    device_modes: Mapping[str, Mode] = field(default_factory=dict)  # per-device overrides
    device_groups: Mapping[str, str] = field(default_factory=dict)
    exclusions: tuple[Exclusion, ...] = ()
    command_ttl_ms: int = 24 * 3600 * 1000
    verdict_ttl_ms: int | None = None  # None: a verdict holds until lifted
    enforce_provisional: bool = True  # let a provisional model's alerts act in block mode

    def group_of(self, device_id: str) -> str | None:
        """The device's group, if it has one."""
        return self.device_groups.get(device_id)

    def mode_for(self, device_id: str) -> Mode:
        """Device override, else its group's mode, else the default."""
        if device_id in self.device_modes:
            return self.device_modes[device_id]
        group = self.group_of(device_id)
        return self.group_modes.get(group, self.default_mode) if group else self.default_mode

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """Parse a policy document; PolicyError names what is wrong."""
        try:
            return cls(
                default_mode=Mode(data.get("default_mode", "audit")),
                group_modes={str(k): Mode(v) for k, v in data.get("group_modes", {}).items()},
                device_modes={str(k): Mode(v) for k, v in data.get("device_modes", {}).items()},
                device_groups={str(k): str(v) for k, v in data.get("device_groups", {}).items()},
                exclusions=tuple(_exclusion(e) for e in data.get("exclusions", ())),
                command_ttl_ms=int(data.get("command_ttl_ms", 24 * 3600 * 1000)),
                verdict_ttl_ms=None if data.get("verdict_ttl_ms") is None else int(data["verdict_ttl_ms"]),
                enforce_provisional=bool(data.get("enforce_provisional", True)),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PolicyError(f"invalid policy: {exc}") from exc


def _exclusion(raw: Mapping[str, Any]) -> Exclusion:
    expires = raw.get("expires_ms")
    return Exclusion(
        str(raw["id"]),
        ExclusionKind(raw["kind"]),
        str(raw["pattern"]),
        str(raw.get("scope", "fleet")),
        None if expires is None else int(expires),
        int(raw.get("version", 1)),
    )


def _nonce(*parts: str) -> str:
    digest = hashlib.sha256(("nonce\x1f" + "\x1f".join(parts)).encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Policy:
    """Decides what an incident yields; counts suppressions per exclusion id."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.suppressed: Tally[str] = Tally()

    def update(self, config: PolicyConfig) -> None:
        """Replace modes, groups and exclusions (e.g. from `ringfence.policy.v1`); counters are kept."""
        self.config = config

    def excluded_by(self, incident: Incident, now_ms: int) -> Exclusion | None:
        """The first active, in-scope exclusion matching the root, scored process or artifact."""
        if not self.config.exclusions:
            return None
        group = self.config.group_of(incident.device_id)
        subjects = [incident.root.subject, incident.scored.subject]
        if incident.artifact is not None:
            subjects.append(incident.artifact.subject)
        for exclusion in self.config.exclusions:
            if exclusion.active(now_ms) and exclusion.covers(incident.device_id, group):
                if any(exclusion.matches(s) for s in subjects):
                    return exclusion
        return None

    def decide(self, incident: Incident, now_ms: int) -> list[Decision]:
        """Alert (+ commands and verdict in block mode), or nothing when an exclusion applies."""
        exclusion = self.excluded_by(incident, now_ms)
        if exclusion is not None:
            self.suppressed[exclusion.exclusion_id] += 1
            return []
        mode = self.config.mode_for(incident.device_id)
        provisional = "provisional" in incident.model_version
        enforce = mode is Mode.BLOCK and (self.config.enforce_provisional or not provisional)
        alert_id, now = alert_id_for(incident), utc(now_ms)
        if not enforce:  # the alert lists what block mode would do; nothing else is built for it
            return [audit_record(incident, alert_id, mode, now)]
        commands = self._commands(incident, alert_id, now_ms, now)
        verdicts = self._verdicts(incident, alert_id, now_ms, now)
        return [alert_record(incident, alert_id, mode, commands, verdicts, True, now), *commands, *verdicts]

    def _commands(self, incident: Incident, alert_id: str, now_ms: int, issued: datetime) -> list[Command]:
        """Kill the root's tree; quarantine the artifact when there is one. Each command is written as
        its JSON values in the contract's field order (one dict, no merge) and validated from them."""
        times = (utc_text(issued), ms_text(now_ms + self.config.command_ttl_ms))
        root, artifact = incident.root, incident.artifact
        head = (SCHEMA_VERSION, incident.device_id, alert_id, incident.name)
        kill = (root.key, root.pid, root.image or None, None, None)
        commands = [_command(head, times, _KILL, root.key, kill)]
        if artifact is not None:
            target = artifact.image
            where = (None, None, None, target, sha256_text(artifact.sha256))
            commands.append(_command(head, times, _QUARANTINE, target, where))
        return commands

    def _verdicts(self, incident: Incident, alert_id: str, now_ms: int, issued: datetime) -> list[Verdict]:
        artifact = incident.artifact
        if artifact is None or artifact.sha256 is None:
            return []
        ttl = self.config.verdict_ttl_ms
        name = incident.name
        return [
            _written(Verdict, {
                "schema_version": SCHEMA_VERSION, "artifact_id": artifact.sha256.lower(),
                "artifact_type": ArtifactType.FILE.value, "disposition": Disposition.MALICIOUS.value,
                "scope": FLEET, "reason": f"{name} on {incident.device_id} (score {incident.score:.3f}, "
                f"model {incident.model_version})", "source": VerdictSource.ML.value, "alert_id": alert_id,
                "detection_name": name, "model_version": incident.model_version,
                "feature_version": incident.feature_version, "issued_at": utc_text(issued),
                "expires_at": None if ttl is None else ms_text(now_ms + ttl), "key_id": None,
                "signature": None,
            })
        ]  # fmt: skip


_KILL, _QUARANTINE = CommandAction.KILL_PROCESS_TREE.value, CommandAction.QUARANTINE_FILE.value


def _command(
    head: tuple[str, str, str, str],
    times: tuple[str, str],
    action: str,
    target: str,
    where: tuple[str | None, int | None, str | None, str | None, str | None],
) -> Command:
    """One command of an alert: `head` = (schema version, device, alert id, reason), `where` = (process_key,
    pid, image, path, sha256); its id and nonce derive from (alert id, action, target): redelivery
    reproduces them."""
    version, device_id, alert_id, reason = head
    process_key, pid, image, path, sha256 = where
    return _written(Command, {
        "schema_version": version, "command_id": stable_id(alert_id, action, target), "device_id": device_id,
        "action": action, "process_key": process_key, "pid": pid, "image": image, "path": path,
        "sha256": sha256, "alert_id": alert_id, "reason": reason, "nonce": _nonce(alert_id, action, target),
        "issued_at": times[0], "expires_at": times[1], "key_id": None, "signature": None,
    })  # fmt: skip


def _written(kind: type[SignedT], values: dict[str, Any]) -> SignedT:
    """A command or verdict validated from its JSON values, which are kept for signing (`VALUES`).

    The values are given as the contract's dump writes them (times as text, enums as their values,
    sha256 lower-cased, every field in order), so the fleet key signs them as they are:
    `schemas.signing.signed_json_of` gives the bytes `signed_json(model)` would
    (tests/unit/test_incident_json.py).
    """
    record: SignedT = kind.__pydantic_validator__.validate_python(values)  # `model_validate`, one call less
    VALUES.keep(record, values)
    return record
