"""The one exception tree of enforcement (blocklist, followers, kill, quarantine).

Enforcement reports failures as `ActionResult`s; these exceptions carry what the report needs
(`error_class`, the path or artifact concerned) from the place a failure happens to the place that
reports it. Kill outcomes are values (`agents.proctree.KillReport`), not exceptions: a process that
is already gone is an answer, not an error.

    EnforcementError          root; never raised itself
    ├── StateError            the local state (blocklist, offsets, nonces) cannot be read or written
    ├── KeyringError          no fleet public key could be loaded: nothing could be verified
    └── QuarantineError       a quarantine or restore could not be done (path, sha256 set)
        ├── ContentMismatch   the file does not hash to the sha256 the command named
        ├── NotQuarantined    no quarantined item has that sha256
        └── DestinationExists restoring would overwrite a file that is there now
"""

from __future__ import annotations

__all__ = [
    "ContentMismatch",
    "DestinationExists",
    "EnforcementError",
    "KeyringError",
    "NotQuarantined",
    "QuarantineError",
    "StateError",
]


class EnforcementError(Exception):
    """Root of enforcement errors."""

    @property
    def error_class(self) -> str:
        """Short class name, as written into ActionResult.error_class."""
        return type(self).__name__


class StateError(EnforcementError):
    """The agent's local enforcement state could not be opened, read or written."""


class KeyringError(EnforcementError):
    """The fleet's public key(s) could not be loaded."""


class QuarantineError(EnforcementError):
    """A quarantine or restore failed; `path` and `sha256` say which file."""

    def __init__(self, message: str, *, path: str | None = None, sha256: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.sha256 = sha256


class ContentMismatch(QuarantineError):
    """The file's content is not the one the command named (changed, replaced, or wrong path)."""


class NotQuarantined(QuarantineError):
    """There is no quarantined file with that sha256."""


class DestinationExists(QuarantineError):
    """A file exists where a restore would write: never overwritten."""
