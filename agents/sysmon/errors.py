"""The one exception tree of the Sysmon/EVTX ingestion package.

Bad *records* are data, not exceptions: they become typed skips counted per reason (see
`agents.sysmon.mapping.Skip`). Exceptions are kept for what the caller must decide about:

    SysmonError              root; never raised itself
    └── InputFileError       a path cannot be opened at all (missing, a directory, no permission)
        └── FollowError      follow mode was asked for an input it cannot follow (.evtx, .gz)
"""

from __future__ import annotations

from pathlib import Path


class SysmonError(Exception):
    """Root of this package's errors."""


class InputFileError(SysmonError):
    """An input path cannot be opened; carries the path so the CLI can name it."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class FollowError(InputFileError):
    """Follow mode only works on plain JSON Lines files that grow by appending."""
