"""The one exception tree of the contracts: every failure to read, check or trust a record.

Callers (the pipeline's decode stage, the agent's command handler) catch `ContractError` once and
turn it into a dead-letter record or a refused action; each error carries *where* it happened
(field path, device, event) so that record is useful without re-parsing the input.

    ContractError                 root; never raised itself
    ├── DecodeError               not JSON, invalid UTF-8, too deep, not an object
    │   └── DuplicateKey          an object repeats a key (RFC 7493 forbids it; parsers disagree)
    ├── LimitExceeded             record bytes, events per batch or string length over `Limits`
    ├── UnsupportedVersion        schema_version major is not ours
    ├── ValidationFailed          the JSON does not satisfy the contract; `issues` lists every problem
    │   ├── UnknownKind           payload.kind is not one we know
    │   └── DeviceMismatch        a batch carries an event of another device
    ├── SignatureError            missing, malformed or wrong signature
    │   └── UnknownKey            signed by a key_id the keyring does not hold
    ├── Rejected                  authentic, but must not be acted upon
    │   ├── Expired               past expires_at (or issued in the future beyond skew)
    │   ├── WrongTarget           a command for another device
    │   └── Replayed              a nonce already seen
    └── KeyMaterialError          a key file is missing, unreadable, too open or not Ed25519
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a record: where (dotted path), what kind (`type`) and a message."""

    path: str
    type: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<record>'}: {self.message} [{self.type}]"


class ContractError(Exception):
    """Root of every contracts error; carries the location and ids known at the point of failure."""

    def __init__(
        self,
        message: str,
        *,
        field_path: str | None = None,
        device_id: str | None = None,
        event_id: str | None = None,
        record_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field_path = field_path
        self.device_id = device_id
        self.event_id = event_id
        self.record_id = record_id  # command_id, verdict artifact id, ... for non-event records

    @property
    def error_class(self) -> str:
        """Short class name, as written into dead-letter records."""
        return type(self).__name__

    def context(self) -> dict[str, str]:
        """The known location/ids, for structured logs and dead letters."""
        items = {
            "field_path": self.field_path, "device_id": self.device_id,
            "event_id": self.event_id, "record_id": self.record_id,
        }
        return {key: value for key, value in items.items() if value is not None}

    def __str__(self) -> str:
        context = " ".join(f"{key}={value}" for key, value in self.context().items())
        return f"{self.message} ({context})" if context else self.message


class DecodeError(ContractError):
    """The bytes are not a JSON object we can read."""


class DuplicateKey(DecodeError):
    """A JSON object repeats a key; different parsers would keep different values."""


class LimitExceeded(ContractError):
    """A configured size limit was exceeded; `limit` names it (e.g. `max_record_bytes`)."""

    def __init__(self, message: str, *, limit: str, actual: int, maximum: int, **context: str | None) -> None:
        super().__init__(message, **context)
        self.limit = limit
        self.actual = actual
        self.maximum = maximum


class UnsupportedVersion(ContractError):
    """The record's schema major version is not one this code reads."""

    def __init__(self, message: str, *, version: str, **context: str | None) -> None:
        super().__init__(message, **context)
        self.version = version


class ValidationFailed(ContractError):
    """The record does not satisfy the contract; `issues` holds every problem, `field_path` the first."""

    def __init__(self, message: str, *, issues: tuple[Issue, ...] = (), **context: str | None) -> None:
        super().__init__(message, **context)
        self.issues = issues


class UnknownKind(ValidationFailed):
    """A payload `kind` this version does not know (never ignored: it would silently lose behaviour)."""


class DeviceMismatch(ValidationFailed):
    """A batch contains an event whose device_id differs from the batch's (and the record key's)."""


class SignatureError(ContractError):
    """The signature is missing, malformed or does not verify under the named key."""

    def __init__(self, message: str, *, key_id: str | None = None, **context: str | None) -> None:
        super().__init__(message, **context)
        self.key_id = key_id


class UnknownKey(SignatureError):
    """Signed with a key_id this keyring does not hold (never trusted, rotated out, or forged)."""


class Rejected(ContractError):
    """Authentic but not to be acted upon now, here, or again."""


class Expired(Rejected):
    """Outside its validity window: past `expires_at`, or issued too far in the future."""


class WrongTarget(Rejected):
    """A command addressed to another device."""


class Replayed(Rejected):
    """A command nonce this device has already accepted."""


class KeyMaterialError(ContractError):
    """A key file or key text could not be used (missing, wrong type, readable by others)."""
