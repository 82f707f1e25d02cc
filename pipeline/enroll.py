"""Fleet keys and device enrollment: who may sign, who is enrolled, and what each device is told.

Why a keys folder and not one key file: rotation. The fleet service signs with one private key
(`signing.pem`, 0600, in a 0700 folder) while `keyring.json` lists every public key agents trust,
each retired one with a `not_after`: during the rotation window both keys verify; afterwards the
old key verifies only what it signed before `not_after`, so the compacted verdict topic (the
fleet blocklist, signed over years) keeps blocking. The old private key is destroyed at rotation.

Enrollment writes a device's identity bundle (see `schemas.identity`) and the `DeviceRecord` the
fleet publishes on the devices topic; the agent's heartbeats then keep the same key current and
restate the enrollment from the bundle, so the latest value per key alone still names the group
and override after compaction. The fleet view (`ringfence devices list`) folds both kinds of
record, in topic order, per device.

    EnrollmentError (pipeline.errors.PipelineError)   a keys folder or bundle cannot be made or read
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from pipeline.errors import PipelineError
from schemas.codec import decode_device_value
from schemas.common import Mode, Platform
from schemas.devices import DeviceRecord, Heartbeat, restates_enrollment
from schemas.errors import ContractError, KeyMaterialError
from schemas.identity import (
    IDENTITY_FILE,
    KEYRING_FILE,
    DeviceIdentity,
    KafkaCredentials,
    KeyEntry,
    KeyringFile,
    load_keyring_file,
)
from schemas.keyfiles import load_private_key, save_private_key
from schemas.signing import SigningKey, public_key_text

__all__ = [
    "AGENT_ENV_FILE",
    "NOT_SEEN_VERSION",
    "SIGNING_KEY_FILE",
    "EnrollmentError",
    "FleetEntry",
    "FleetView",
    "KeysFolder",
    "device_record",
    "issue_identity",
    "write_bundle",
]

SIGNING_KEY_FILE = "signing.pem"
AGENT_ENV_FILE = "agent.env"
NOT_SEEN_VERSION = "not-seen-yet"
"""`DeviceRecord.agent_version` of a device enrolled but never heard from (the field is required)."""


class EnrollmentError(PipelineError):
    """A keys folder or identity bundle cannot be created, read or written."""


# -- fleet keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeysFolder:
    """The fleet's signing key and public keyring in one folder."""

    path: Path

    @property
    def signing_key_path(self) -> Path:
        return self.path / SIGNING_KEY_FILE

    @property
    def keyring_path(self) -> Path:
        return self.path / KEYRING_FILE

    def init(self, now: datetime, *, force: bool = False) -> SigningKey:
        """Create the first signing key and a keyring trusting only it."""
        if self.signing_key_path.exists() and not force:
            raise EnrollmentError(f"{self.signing_key_path} exists; `keys rotate` replaces a key "
                                  "without breaking agents (or pass --force to start over)")
        key = SigningKey.generate()
        self._make_folder()
        self._save(key, KeyringFile(keys=(_entry(key, now),)))
        return key

    def rotate(self, now: datetime, overlap: timedelta) -> tuple[SigningKey, KeyEntry]:
        """A new active key; the old one stays trusted for what it signs until `now + overlap`."""
        if overlap < timedelta(0):
            raise EnrollmentError(f"rotation overlap {overlap} is negative")
        old, keyring = self.signing_key(), self.keyring_file()
        current = next((k for k in keyring.keys if k.key_id == old.key_id), None)
        if current is None:
            raise EnrollmentError(f"{self.keyring_path} does not list the active key {old.key_id}")
        retired = replace_entry(current, not_after=now + overlap)
        kept = [k for k in keyring.keys if k.key_id != old.key_id]
        new = SigningKey.generate()
        self._save(new, KeyringFile(keys=(*kept, retired, _entry(new, now))))
        return new, retired

    def signing_key(self) -> SigningKey:
        """The active private key (refused if others can read it)."""
        try:
            return load_private_key(self.signing_key_path)
        except KeyMaterialError as exc:
            raise EnrollmentError(f"{exc} (run `ringfence keys init` first?)") from None

    def keyring_file(self) -> KeyringFile:
        if not self.keyring_path.exists():
            raise EnrollmentError(f"no fleet keyring at {self.keyring_path} (run `ringfence keys init`)")
        try:
            return load_keyring_file(self.keyring_path)
        except KeyMaterialError as exc:
            raise EnrollmentError(str(exc)) from None

    def _make_folder(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path.chmod(0o700)
        except OSError as exc:
            raise EnrollmentError(f"{self.path}: cannot create the keys folder: {exc.strerror}") from None

    def _save(self, key: SigningKey, keyring: KeyringFile) -> None:
        """Keyring first: an agent given the new keyring before the key signs anything is fine."""
        _atomic_write(self.keyring_path, keyring.to_json(), 0o644)
        staged = self.path / f".{SIGNING_KEY_FILE}.new"
        try:
            save_private_key(key, staged)
            os.replace(staged, self.signing_key_path)
        except (KeyMaterialError, OSError) as exc:
            raise EnrollmentError(f"{self.signing_key_path}: cannot save the signing key: {exc}") from None


def _entry(key: SigningKey, now: datetime, not_after: datetime | None = None) -> KeyEntry:
    public = public_key_text(key.private_key.public_key())
    return KeyEntry(key_id=key.key_id, public_key=public, created_at=now, not_after=not_after)


def replace_entry(entry: KeyEntry, **fields: object) -> KeyEntry:
    """A copy of a keyring entry with some fields changed (validated again)."""
    return KeyEntry.model_validate({**entry.model_dump(), **fields})


# -- enrollment -------------------------------------------------------------------------------------


def issue_identity(device_id: str, *, group: str, mode: Mode | None = None, now: datetime,
                   platform: Platform = Platform.LINUX, bootstrap: str | None = None) -> DeviceIdentity:
    """The identity a newly enrolled device receives (ValueError on a malformed id or group).

    `mode` is a per-device override; without one the device follows its group's mode, so a SOC
    console switching the group between audit and block changes what the worker does for it.
    """
    kafka = KafkaCredentials(bootstrap=bootstrap, sasl_username=device_id)
    return DeviceIdentity(device_id=device_id, group=group, mode=mode, platform=platform, enrolled_at=now,
                          kafka=kafka)


def device_record(identity: DeviceIdentity) -> DeviceRecord:
    """The fleet's record of a device at enrollment (hostname and version arrive with heartbeats).

    Without an override `effective_mode` is audit, the agent's default until it reports its own.
    """
    return DeviceRecord(
        device_id=identity.device_id, hostname=identity.device_id, platform=identity.platform,
        group=identity.group, mode_override=identity.mode, effective_mode=identity.mode or Mode.AUDIT,
        agent_version=NOT_SEEN_VERSION, enrolled_at=identity.enrolled_at, last_seen=identity.enrolled_at,
    )


def write_bundle(out: Path, identity: DeviceIdentity, keyring: KeyringFile, *, force: bool = False) -> None:
    """Write identity.json, keyring.json and agent.env into `out` (0700)."""
    if (out / IDENTITY_FILE).exists() and not force:
        raise EnrollmentError(f"{out / IDENTITY_FILE} exists (pass --force to re-issue it)")
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise EnrollmentError(f"{out}: cannot create the bundle folder: {exc.strerror}") from None
    _atomic_write(out / identity.keyring_file, keyring.to_json(), 0o644)
    _atomic_write(out / AGENT_ENV_FILE, agent_env(identity, out).encode(), 0o644)
    _atomic_write(out / IDENTITY_FILE, identity.to_json(), 0o644)


def agent_env(identity: DeviceIdentity, out: Path) -> str:
    """RINGFENCE_* lines for a systemd EnvironmentFile (Kafka SASL lines left for the operator)."""
    kafka = identity.kafka
    lines = [
        f"# ringfence agent identity for {identity.device_id}, enrolled {identity.enrolled_at.isoformat()}",
        f"RINGFENCE_AGENT_IDENTITY_DIR={out.resolve()}",
        f"RINGFENCE_AGENT_DEVICE_ID={identity.device_id}",
        f"RINGFENCE_AGENT_GROUP={identity.group}",
        (f"RINGFENCE_AGENT_MODE={identity.mode.value}" if identity.mode is not None else
         "# no per-device mode: the fleet applies the group's; the agent's local mode defaults to audit"),
        f"RINGFENCE_AGENT_PUBLIC_KEY_PATH={(out / identity.keyring_file).resolve()}",
        "# production Kafka (TLS + SASL); the password comes from your secret store:",
        f"#RINGFENCE_KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}",
        f"#RINGFENCE_KAFKA_SASL_MECHANISM={kafka.sasl_mechanism or ''}",
        f"#RINGFENCE_KAFKA_SASL_USERNAME={kafka.sasl_username or ''}",
        "#RINGFENCE_KAFKA_SASL_PASSWORD=",
    ]
    if kafka.bootstrap:
        lines.insert(6, f"RINGFENCE_KAFKA_BOOTSTRAP={kafka.bootstrap}")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    try:
        fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(staged, path)
    except OSError as exc:
        raise EnrollmentError(f"{path}: cannot write: {exc.strerror}") from None


# -- the fleet view ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetEntry:
    """One device as `devices list` shows it: enrollment merged with its latest heartbeat."""

    device_id: str
    group: str | None
    mode: Mode  # the agent's own mode once it reported, else the enrolled one
    fleet_mode: Mode | None  # the enrollment's per-device override (None: follows its group, or unknown)
    platform: Platform
    hostname: str
    enrolled_at: datetime | None  # None: the record was compacted away or the device never enrolled
    last_seen: datetime | None  # None: no heartbeat yet
    agent_version: str | None
    blocklist_version: int = 0
    blocklist_size: int = 0
    spooled_events: int = 0


@dataclass
class FleetView:
    """Fold of the devices topic, in order: DeviceRecords, Heartbeats and tombstones per device."""

    devices: dict[str, FleetEntry]
    bad_records: int = 0  # values that are neither contract (logged by the caller)

    @classmethod
    def fold(cls, records: Iterable[tuple[bytes | None, bytes | None]]) -> FleetView:
        """(key, value) pairs in topic order per partition; a None value deletes the device."""
        view = cls({})
        for key, value in records:
            view.apply(key, value)
        return view

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if key is not None:
                self.devices.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            record = decode_device_value(value)
        except ContractError:
            self.bad_records += 1
            return
        old = self.devices.get(record.device_id)
        self.devices[record.device_id] = (_enrolled(record, old) if isinstance(record, DeviceRecord)
                                          else _heard(record, old))

    def rows(self) -> list[FleetEntry]:
        return [self.devices[d] for d in sorted(self.devices)]



def _enrolled(record: DeviceRecord, old: FleetEntry | None) -> FleetEntry:
    heard = record.agent_version != NOT_SEEN_VERSION
    entry = FleetEntry(
        device_id=record.device_id, group=record.group, mode=record.effective_mode,
        fleet_mode=record.mode_override, platform=record.platform, hostname=record.hostname,
        enrolled_at=record.enrolled_at, last_seen=record.last_seen if heard else None,
        agent_version=record.agent_version if heard else None,
        blocklist_version=record.blocklist_version, blocklist_size=record.blocklist_size,
    )
    if old is not None and old.last_seen is not None and (entry.last_seen or old.last_seen) <= old.last_seen:
        entry = replace(entry, mode=old.mode, last_seen=old.last_seen, agent_version=old.agent_version,
                        hostname=old.hostname, blocklist_version=old.blocklist_version,
                        blocklist_size=old.blocklist_size, spooled_events=old.spooled_events)
    return entry


def _heard(beat: Heartbeat, old: FleetEntry | None) -> FleetEntry:
    if old is not None and old.last_seen is not None and beat.ts <= old.last_seen:
        return old
    group = beat.group if beat.group is not None or old is None else old.group
    fleet_mode, enrolled_at = (old.fleet_mode, old.enrolled_at) if old else (None, None)
    if restates_enrollment(beat, enrolled_at):  # the enrollment outlives a compacted DeviceRecord
        fleet_mode, enrolled_at = beat.mode_override, beat.enrolled_at
    return FleetEntry(
        device_id=beat.device_id, group=group,
        mode=beat.mode, fleet_mode=fleet_mode, platform=beat.platform,
        hostname=beat.hostname, enrolled_at=enrolled_at, last_seen=beat.ts,
        agent_version=beat.agent_version, blocklist_version=beat.blocklist_version,
        blocklist_size=beat.blocklist_size, spooled_events=beat.spooled_events,
    )
