"""Outbound TCP connections attributed to processes, by polling the socket tables.

Why polling: socket tables (sock_diag, or /proc/net/tcp{,6} as a fallback, see `sockets.py`) are
what every kernel has without eBPF or audit rules. Each poll lists the sockets (cost grows with the
number of sockets, not processes) and, only when a new outbound socket appeared, maps its inode to
a process through /proc/<pid>/fd links. A poll lists nothing when the kernel's count of TCP
connects (`ActiveOpens`) has not moved since the last listing: no outbound socket can be new then,
and listing walks the kernel's whole connection hash (the poller's main cost on an idle host).
That scan is bounded: newest PIDs first (the connecting process is usually recent), it stops as
soon as every new inode is found, and it never reads more than `max_fd_reads` links per poll.
Known limits: a connection opened and closed between two polls is missed; sockets in other network
namespaces are not in these tables. Connections present at the first poll predate the agent and are
not reported. A socket is outbound when its local port is not a listening port.
"""

from __future__ import annotations

import logging
import os
import time

from agents.linux.build import UNATTRIBUTED_PROCESS_KEY
from agents.linux.processes import ProcessTracker
from agents.linux.procfs import list_pids
from agents.linux.sockets import SocketRow, active_opens, read_tcp_sockets, select_new_outbound
from schemas.events import BehaviorEvent, NetworkConnect

__all__ = ["ConnectionPoller", "find_socket_owners"]

log = logging.getLogger(__name__)

class ConnectionPoller:
    """Polls the TCP tables and emits network_connect for new outbound sockets."""

    def __init__(self, tracker: ProcessTracker, max_fd_reads: int = 50_000) -> None:
        self._tracker = tracker
        self._max_fd_reads = max_fd_reads
        self._seen: set[int] | None = None
        self._opens: int | None = None  # `ActiveOpens` when the tables were last listed
        self._own_pid = os.getpid()
        self.unattributed = 0

    def poll_once(self) -> list[BehaviorEvent]:
        """One poll; the first only records the sockets that already exist."""
        first = self._seen is None
        opens = active_opens()  # read before listing: a connect made meanwhile moves it again
        if not first and opens is not None and opens == self._opens:
            return []  # no connect() since the last listing
        self._opens = opens
        fresh, connecting = select_new_outbound(read_tcp_sockets(), self._seen or set())
        self._seen = connecting  # forget closed sockets so the set stays small
        if first:
            return []
        if not fresh:
            return []
        owners = find_socket_owners({row.inode for row in fresh}, self._max_fd_reads)
        events: list[BehaviorEvent] = []
        for row in fresh:
            events.extend(self._connect_events(row, owners.get(row.inode)))
        return events

    def _connect_events(self, row: SocketRow, pid: int | None) -> list[BehaviorEvent]:
        if pid == self._own_pid:
            return []  # the agent's own broker connections
        payload = NetworkConnect(dst_ip=row.remote_ip, dst_port=row.remote_port, src_ip=row.local_ip,
                                 src_port=row.local_port, protocol="tcp", outbound=True)
        events = self._tracker.event_by(pid, time.time_ns(), payload)
        if events[-1].process_key == UNATTRIBUTED_PROCESS_KEY:
            self.unattributed += 1
        return events



def find_socket_owners(inodes: set[int], max_fd_reads: int) -> dict[int, int]:
    """inode -> pid for the wanted socket inodes, scanning newest PIDs first within a budget."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, int] = {}
    budget = max_fd_reads
    for pid in sorted(list_pids(), reverse=True):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds[:budget]:
            try:
                inode = wanted.get(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
            if inode is not None and inode not in found:
                found[inode] = pid
        budget -= len(fds)
        if len(found) == len(wanted) or budget <= 0:
            break
    if len(found) < len(wanted):
        log.debug("socket owners not found for %d of %d inodes", len(wanted) - len(found), len(wanted))
    return found
