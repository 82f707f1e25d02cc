"""Fallback process collector: diff the PIDs in /proc, every `proc_poll_interval_s` of the live source.

Used when the netlink connector is refused (not root, a container without CAP_NET_ADMIN or outside
the initial network namespace). It is honest about its limits: a process that starts and exits
between two polls is never seen, there is no exit code, and the parent link is the `ppid` at poll
time (a re-parented orphan points at its new parent). Each poll costs one `listdir` of /proc plus a
few small reads per *new* process, so its cost grows with churn, not with the number of processes.
The first poll only records what already runs: those processes predate the agent.
"""

from __future__ import annotations

import logging
import os
import time

from agents.linux.processes import ProcessTracker
from agents.linux.procfs import ProcessGone, list_pids, read_snapshot
from schemas.events import BehaviorEvent

__all__ = ["ProcPoller"]

log = logging.getLogger(__name__)


class ProcPoller:
    """Turns the difference between two /proc listings into process_start / process_end events."""

    def __init__(self, tracker: ProcessTracker) -> None:
        self._tracker = tracker
        self._seen: set[int] | None = None
        self._own_pid = os.getpid()

    def poll_once(self) -> list[BehaviorEvent]:
        """One diff; the first call only takes the baseline and returns nothing."""
        current = set(list_pids())
        previous, self._seen = self._seen, current
        if previous is None:
            return []
        events: list[BehaviorEvent] = []
        now_ns = time.monotonic_ns()
        for pid in sorted(previous - current):
            events.extend(self._tracker.on_exit(pid, None, now_ns))
        for pid in sorted(current - previous):  # ascending pid ~ creation order, parents first
            events.extend(self._appeared(pid))
        return events

    def _appeared(self, pid: int) -> list[BehaviorEvent]:
        if pid == self._own_pid:
            return []
        try:
            snap = read_snapshot(pid)
        except ProcessGone:
            return []  # came and went between listdir and read: invisible to a poller
        return self._tracker.on_appeared(snap)
