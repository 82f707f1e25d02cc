"""Types shared by every contract: the frozen base model, ids, hashes, times, platform and mode.

One definition of "what a device id or a sha256 looks like" keeps the topics consistent: a verdict's
artifact id is exactly the sha256 an event carried, lower-cased once, here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

SCHEMA_VERSION = "1.0"
"""The version this code writes, for every contract. Readers accept any 1.x (see schemas/README.md)."""

MAX_TEXT_CHARS = 1 << 20
"""Static ceiling for one free-text field; `schemas.codec.Limits` applies a tighter, configurable one."""

_INT64_MAX = (1 << 63) - 1
_UINT32_MAX = (1 << 32) - 1
_EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)

SchemaVersion = Annotated[str, StringConstraints(pattern=r"^1\.[0-9]{1,4}$")]
"""major.minor; only major 1 is this contract (the codec reports other majors as UnsupportedVersion)."""
DeviceId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
"""An opaque printable-ASCII id: event ids, Sysmon ProcessGuids, hashed Linux process keys."""
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$", to_lower=True)]
"""Lower-cased on input: Sysmon reports upper-case hashes, verdicts are keyed by lower-case."""
KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
"""Names the Ed25519 key a verdict or command was signed with (see `schemas.signing.Keyring`)."""
Signature = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{86}$")]
"""Ed25519 signature (64 bytes), base64url without padding."""
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
ShortText = Annotated[str, StringConstraints(max_length=4096)]
Seq = Annotated[int, Field(strict=True, ge=0, le=_INT64_MAX)]
"""Integers are strict: 1.0, "1" and true are not numbers here (huge JSON ints arrive as floats)."""
Pid = Annotated[int, Field(strict=True, ge=0, le=_UINT32_MAX)]
Port = Annotated[int, Field(strict=True, ge=0, le=65535)]
UInt32 = Annotated[int, Field(strict=True, ge=0, le=_UINT32_MAX)]
Count = Annotated[int, Field(strict=True, ge=0, le=_INT64_MAX)]
Int64 = Annotated[int, Field(strict=True, ge=-(1 << 63), le=_INT64_MAX)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
EventTime = Annotated[AwareDatetime, Field(ge=_EARLIEST, lt=_LATEST)]
"""Device clock, timezone-aware (naive input is rejected), years 1990..2099; kept as sent (hot path)."""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """`UtcTimestamp`'s text, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (in UTC), without `strftime` (the fleet
    service writes several per alert; strftime does not pad years below 1000, so those go to it)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if not 1000 <= value.year <= 9999:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond:06d}Z"
    )


UtcTimestamp = Annotated[
    AwareDatetime,
    Field(ge=_EARLIEST, lt=_LATEST),
    AfterValidator(_to_utc),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
]
"""Fleet-side time: normalised to UTC and always written `YYYY-MM-DDTHH:MM:SS.ffffffZ`, so signed
bytes never depend on the offset or precision a sender happened to use."""


class Platform(StrEnum):
    """Operating system family of the reporting device."""

    WINDOWS = "windows"
    LINUX = "linux"


class Mode(StrEnum):
    """Enforcement mode of a device or group (as Tetragon's monitoring vs enforcement)."""

    AUDIT = "audit"  # alert, act on nothing; actions are reported as `audited`
    BLOCK = "block"  # kill, quarantine and block


class Contract(BaseModel):
    """Base of our wire models: immutable, and unknown fields are an error (see schemas/README.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    forward_compatible: ClassVar[bool] = True
    """Whether the codec drops unknown fields of a newer minor version (False for signed contracts:
    a field we cannot see may restrict what the signer meant, so we must not act without it)."""
