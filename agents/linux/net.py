"""Outbound TCP connections attributed to processes, by polling /proc/net/tcp{,6}.

Why polling: the socket tables are the one interface every kernel has without eBPF or audit rules.
Each poll reads the two tables (cost grows with the number of sockets, not processes) and, only
when a new outbound socket appeared, maps its inode to a process through /proc/<pid>/fd links.
That scan is bounded: newest PIDs first (the connecting process is usually recent), it stops as
soon as every new inode is found, and it never reads more than `max_fd_reads` links per poll.
Known limits: a connection opened and closed between two polls is missed; sockets in other network
namespaces are not in these tables. Connections present at the first poll predate the agent and are
not reported. A socket is outbound when its local port is not a listening port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from agents.linux.build import UNATTRIBUTED_PROCESS_KEY, linux_event
from agents.linux.processes import ProcessTracker
from agents.linux.procfs import PROC, list_pids
from schemas.events import BehaviorEvent, NetworkConnect

__all__ = ["ConnectionPoller", "SocketRow", "parse_table", "scan_tables"]

log = logging.getLogger(__name__)

TCP_ESTABLISHED = 0x01
TCP_SYN_SENT = 0x02
TCP_LISTEN = 0x0A


@dataclass(frozen=True, slots=True)
class SocketRow:
    """One line of /proc/net/tcp or tcp6."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: int
    inode: int


def _decode_ip(hex_addr: str) -> str:
    """Kernel hex (32-bit words in host order) -> printable address; v4-mapped v6 -> v4."""
    raw = bytes.fromhex(hex_addr)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def parse_table(text: str) -> list[SocketRow]:
    """Parse one /proc/net/tcp{,6} file; malformed lines are skipped."""
    rows: list[SocketRow] = []
    for line in text.splitlines()[1:]:
        row = _parse_line(line.split())
        if row is not None:
            rows.append(row)
    return rows


def _parse_line(fields: list[str]) -> SocketRow | None:
    if len(fields) < 10:
        return None
    try:
        local_ip, local_port = fields[1].split(":")
        remote_ip, remote_port = fields[2].split(":")
        return SocketRow(_decode_ip(local_ip), int(local_port, 16), _decode_ip(remote_ip),
                         int(remote_port, 16), int(fields[3], 16), int(fields[9]))
    except ValueError:
        return None


def scan_tables(texts: Iterable[str], seen: set[int]) -> tuple[list[SocketRow], set[int]]:
    """New outbound sockets and the inodes of all connecting sockets, decoding only what is new.

    The tables list every socket of the host (hundreds on a busy one, polled every second), so
    addresses are decoded only for connecting sockets not seen before.
    """
    listening: set[int] = set()
    connecting: set[int] = set()
    candidates: list[list[str]] = []
    for text in texts:
        for line in text.splitlines()[1:]:
            fields = line.split(maxsplit=10)
            if len(fields) < 10:
                continue
            state = fields[3]
            if state == "0A":
                listening.add(int(fields[1].rpartition(":")[2], 16))
            elif state in ("01", "02") and fields[9].isdigit():
                inode = int(fields[9])
                connecting.add(inode)
                if inode and inode not in seen:
                    candidates.append(fields)
    rows = [row for row in map(_parse_line, candidates) if row is not None]
    return [row for row in rows if row.local_port not in listening], connecting


class ConnectionPoller:
    """Polls the TCP tables and emits network_connect for new outbound sockets."""

    def __init__(self, tracker: ProcessTracker, interval_s: float = 1.0, max_fd_reads: int = 50_000) -> None:
        self._tracker = tracker
        self._interval_s = interval_s
        self._max_fd_reads = max_fd_reads
        self._seen: set[int] | None = None
        self._own_pid = os.getpid()
        self.unattributed = 0

    def poll_once(self) -> list[BehaviorEvent]:
        """One poll; the first only records the sockets that already exist."""
        first = self._seen is None
        fresh, connecting = scan_tables(_read_tables(), self._seen or set())
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
        proc, before = self._tracker.actor(pid) if pid is not None else (None, [])
        if proc is None:
            self.unattributed += 1
        payload = NetworkConnect(dst_ip=row.remote_ip, dst_port=row.remote_port, src_ip=row.local_ip,
                                 src_port=row.local_port, protocol="tcp", outbound=True)
        event = linux_event(self._tracker.device_id, time.time_ns(),
                            proc.key if proc else UNATTRIBUTED_PROCESS_KEY, payload,
                            parent_process_key=proc.parent_key if proc else None,
                            image=proc.image if proc else None)
        return [*before, event]

    async def stream(self) -> AsyncIterator[list[BehaviorEvent]]:
        """Yield the events of each poll until cancelled."""
        while True:
            batch = self.poll_once()
            if batch:
                yield batch
            await asyncio.sleep(self._interval_s)


def _read_tables() -> list[str]:
    texts: list[str] = []
    for name in ("tcp", "tcp6"):
        try:
            texts.append((PROC / "net" / name).read_text())
        except OSError:
            continue  # IPv6 disabled, or /proc/net not mounted
    return texts


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
