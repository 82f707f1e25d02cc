"""What enrollment hands a device: its identity file and the fleet's public keyring file.

Why here: `ringfence keys` / `ringfence devices enroll` (pipeline) write these files and
`ringfence-agent` (agents) reads them, and `schemas` is the one package both import.

An identity bundle is a folder:
    identity.json   `DeviceIdentity`: device id, group, mode, Kafka client fields for production
    keyring.json    `KeyringFile`: every fleet public key the device trusts, with `not_after`
                    for a key being rotated out (see `schemas.signing.Keyring`)
    agent.env       the same as RINGFENCE_AGENT_* lines, for a systemd EnvironmentFile
The private signing key never leaves the fleet service; the bundle holds only public material and
Kafka credential *placeholders* (`sasl_password` is null until the operator's secret store fills it).

Rotation: a retired key stays in the keyring with `not_after`, so verdicts it signed before then
keep blocking (the verdict topic is compacted: an old verdict can live for years) while anything it
signs later is refused. Dropping a key from the keyring unblocks every verdict it signed.
Errors are `schemas.errors.KeyMaterialError`, naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, StringConstraints, ValidationError

from schemas.common import Contract, DeviceId, KeyId, Mode, Platform, UtcTimestamp
from schemas.devices import GroupName, PublicKeyText
from schemas.errors import KeyMaterialError
from schemas.keyfiles import public_key_from_text
from schemas.signing import Keyring
from schemas.topics import SaslMechanism, SecurityProtocol

__all__ = [
    "IDENTITY_FILE",
    "KEYRING_FILE",
    "DeviceIdentity",
    "KafkaCredentials",
    "KeyEntry",
    "KeyringFile",
    "identity_settings",
    "load_identity",
    "load_keyring_file",
]

IDENTITY_FILE = "identity.json"
KEYRING_FILE = "keyring.json"
_M = TypeVar("_M", bound=Contract)
_FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class KeyEntry(Contract):
    """One trusted fleet public key."""

    key_id: KeyId
    public_key: PublicKeyText  # raw Ed25519 key, base64url (`schemas.signing.public_key_text`)
    created_at: UtcTimestamp
    not_after: UtcTimestamp | None = None  # records issued later are refused; None: current key


class KeyringFile(Contract):
    """The fleet's public keys as a file (`keyring.json`)."""

    format: Literal["ringfence.keyring.v1"] = "ringfence.keyring.v1"
    keys: Annotated[tuple[KeyEntry, ...], Field(min_length=1)]

    def keyring(self) -> Keyring:
        """The `Keyring` agents verify with; KeyMaterialError on a key that is not Ed25519."""
        return Keyring.of(public_key_from_text(k.public_key, k.key_id, k.not_after) for k in self.keys)

    def to_json(self) -> bytes:
        """Pretty JSON (people read these files)."""
        return self.model_dump_json(indent=2).encode() + b"\n"


class KafkaCredentials(Contract):
    """How this device reaches Kafka in production: TLS + SASL, one principal per device.

    Placeholders: the broker's SASL user is created by the operator (ACLs: write its own records,
    read verdicts and its commands); `sasl_password` stays null in the file and is supplied through
    RINGFENCE_KAFKA_SASL_PASSWORD from the host's secret store.
    """

    bootstrap: str | None = None  # None: RINGFENCE_KAFKA_BOOTSTRAP decides
    security_protocol: SecurityProtocol = "SASL_SSL"
    sasl_mechanism: SaslMechanism | None = "SCRAM-SHA-512"
    sasl_username: str | None = None  # conventionally the device id
    sasl_password: None = None  # never written here (see the class docstring)
    ssl_cafile: str | None = None


class DeviceIdentity(Contract):
    """One enrolled device, as its agent loads it (`identity.json`)."""

    format: Literal["ringfence.identity.v1"] = "ringfence.identity.v1"
    device_id: DeviceId
    group: GroupName
    mode: Mode | None = None  # a per-device override; None: the fleet applies the group's mode
    platform: Platform = Platform.LINUX
    enrolled_at: UtcTimestamp
    keyring_file: _FileName = KEYRING_FILE  # beside identity.json
    kafka: KafkaCredentials = KafkaCredentials()

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"


def load_keyring_file(path: Path) -> KeyringFile:
    """Read and check a `keyring.json`; KeyMaterialError names the file and the problem."""
    return _load(KeyringFile, path)


def load_identity(folder: Path) -> tuple[DeviceIdentity, Path]:
    """The identity in `folder` and the path of its keyring file (which must load too)."""
    identity = _load(DeviceIdentity, folder / IDENTITY_FILE)
    keyring_path = folder / identity.keyring_file
    load_keyring_file(keyring_path).keyring()
    return identity, keyring_path


def identity_settings(folder: Path, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """Agent settings values from the bundle in `folder`, overridden by `explicit` ones.

    For `agents.settings.AgentSettings`: raises ValueError (so settings validation reports it) when
    the bundle cannot be loaded or names another device than an explicitly configured device_id.
    """
    try:
        identity, keyring_path = load_identity(folder)
    except KeyMaterialError as exc:
        raise ValueError(f"identity bundle: {exc}") from None
    configured = explicit.get("device_id")
    if configured and configured != identity.device_id:
        raise ValueError(f"identity bundle {folder} is for device {identity.device_id}, "
                         f"but device_id is set to {configured}")
    from_bundle: dict[str, Any] = {"device_id": identity.device_id, "group": identity.group,
                                   "public_key_path": keyring_path, "enrolled_at": identity.enrolled_at}
    if identity.mode is not None:
        from_bundle["mode"] = from_bundle["mode_override"] = identity.mode.value
    return {**from_bundle, **{k: v for k, v in explicit.items() if v is not None}}


def _load(model: type[_M], path: Path) -> _M:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyMaterialError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "<file>"
        raise KeyMaterialError(f"{path}: {where}: {first['msg']}") from None
