"""The one exception tree of the live Linux source.

    LinuxSourceError          root; never raised itself
    ├── ConnectorUnavailable  the kernel refused the process-events connector -> /proc polling is used
    ├── InotifyError          an inotify call failed (errno and path set, as OSError)
    ├── FanotifyUnavailable   the kernel refused fanotify (not root, too old) -> inotify is used
    ├── FanotifyError         a fanotify call failed (errno and path set, as OSError)
    └── ProcessGone           a process exited before /proc could be read (a normal race, not a fault)
"""

from __future__ import annotations

__all__ = [
    "ConnectorUnavailable", "FanotifyError", "FanotifyUnavailable", "InotifyError", "LinuxSourceError",
    "ProcessGone",
]


class LinuxSourceError(Exception):
    """Root of this package's errors."""


class ConnectorUnavailable(LinuxSourceError):
    """The process-events connector is refused (not root, a container, no CONFIG_PROC_EVENTS)."""


class InotifyError(LinuxSourceError, OSError):
    """An inotify call failed; `errno` and `filename` say which and where."""


class FanotifyUnavailable(LinuxSourceError):
    """fanotify is refused (not root, a kernel without FAN_REPORT_DFID_NAME or FAN_RENAME)."""


class FanotifyError(LinuxSourceError, OSError):
    """A fanotify call failed; `errno` and `filename` say which and where."""


class ProcessGone(LinuxSourceError):
    """The process exited (or never existed) before /proc could be read."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} is gone")
        self.pid = pid
