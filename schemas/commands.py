"""Commands for one device on `ringfence.commands.v1`: kill this tree, quarantine or restore this file.

A command makes an endpoint destroy something, so it is signed (see `schemas.signing`), addressed
to exactly one device, valid for a bounded time and carries a nonce so it runs at most once. The
agent calls `schemas.signing.check_command` before acting; this module only defines the shape and
which fields each action needs.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import StringConstraints, model_validator

from schemas.common import (
    SCHEMA_VERSION,
    Contract,
    DeviceId,
    Identifier,
    KeyId,
    NonEmptyText,
    Pid,
    SchemaVersion,
    Sha256Hex,
    ShortText,
    Signature,
    Text,
    UtcTimestamp,
)

Nonce = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{16,128}$")]

DEFAULT_COMMAND_TTL = timedelta(hours=24)


class CommandAction(StrEnum):
    """What a device is told to do; a closed set, each with its required fields (see `Command`)."""

    KILL_PROCESS_TREE = "kill_process_tree"  # needs process_key; the agent checks its start time
    QUARANTINE_FILE = "quarantine_file"  # needs path and sha256 (the file must still hash to it)
    RESTORE_FILE = "restore_file"  # needs sha256 of a quarantined file; path optional (original)


_REQUIRED: dict[CommandAction, tuple[str, ...]] = {
    CommandAction.KILL_PROCESS_TREE: ("process_key",),
    CommandAction.QUARANTINE_FILE: ("path", "sha256"),
    CommandAction.RESTORE_FILE: ("sha256",),
}


class Command(Contract):
    """One signed instruction to one device (key: device_id)."""

    forward_compatible: ClassVar[bool] = False  # signed: never ignore a field (see schemas/README.md)

    schema_version: SchemaVersion = SCHEMA_VERSION
    command_id: Identifier
    device_id: DeviceId  # the only device that may act on it
    action: CommandAction
    process_key: Identifier | None = None
    pid: Pid | None = None  # hint only: the agent resolves process_key, never trusts a bare pid
    image: Text | None = None
    path: NonEmptyText | None = None
    sha256: Sha256Hex | None = None
    alert_id: Identifier | None = None
    reason: ShortText = ""
    nonce: Nonce
    issued_at: UtcTimestamp
    expires_at: UtcTimestamp
    key_id: KeyId | None = None  # set by signing
    signature: Signature | None = None  # set by signing; covers every other field

    @model_validator(mode="after")
    def _complete(self) -> Command:
        """Each action has the fields it needs, and the validity window is not empty."""
        missing = [name for name in _REQUIRED[self.action] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.action} needs {', '.join(missing)}")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self


def new_nonce() -> str:
    """A fresh random nonce (128 bits, base64url)."""
    return secrets.token_urlsafe(16)


def new_command(
    *, device_id: str, action: CommandAction, now: datetime, ttl: timedelta = DEFAULT_COMMAND_TTL,
    **fields: object,
) -> Command:
    """An unsigned command with a fresh id and nonce, valid from `now` for `ttl`."""
    return Command.model_validate({
        "command_id": secrets.token_hex(16), "device_id": device_id, "action": action,
        "nonce": new_nonce(), "issued_at": now, "expires_at": now + ttl, **fields,
    })
