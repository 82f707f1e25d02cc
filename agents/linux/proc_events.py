"""Process fork/exec/exit from the kernel's process-events connector (netlink, `CN_IDX_PROC`).

Why the connector: it is in every mainstream kernel since 2.6.15, needs no eBPF toolchain and no
kernel headers, and tells us about every fork, exec and exit as it happens, including processes
that live for a millisecond, which a /proc poll misses. It needs CAP_NET_ADMIN (root) and the
initial network namespace; when it is refused, `open_connector` raises `ConnectorUnavailable` and
the source falls back to `proc_poll.py`.

Wire format (include/uapi/linux/connector.h, cn_proc.h), native byte order:
  nlmsghdr  : len u32, type u16, flags u16, seq u32, pid u32             (16 bytes)
  cn_msg    : idx u32, val u32, seq u32, ack u32, len u16, flags u16      (20 bytes)
  proc_event: what u32, cpu u32, timestamp_ns u64 (CLOCK_MONOTONIC), then a union by `what`.
The parser is a pure function over bytes so it is tested without a kernel.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from agents.linux.errors import ConnectorUnavailable, ProcessGone
from agents.linux.procfs import ProcessSnapshot, read_snapshot

__all__ = [
    "ConnectorUnavailable",
    "ExecEvent",
    "ExitEvent",
    "ForkEvent",
    "KernelProcEvent",
    "ProcConnector",
    "parse_datagram",
]

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2

PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEAD = struct.Struct("=IIQ")
_FORK = struct.Struct("=IIII")  # parent_pid, parent_tgid, child_pid, child_tgid
_EXEC = struct.Struct("=II")  # process_pid, process_tgid
_EXIT = struct.Struct("=IIII")  # process_pid, process_tgid, exit_code, exit_signal
_HEADERS = _NLMSGHDR.size + _CN_MSG.size
_RECV_BYTES = 64 * 1024
_SOCKET_RCVBUF = 4 << 20  # bursts of forks (a build) must not overflow the socket (ENOBUFS)


@dataclass(frozen=True, slots=True)
class ForkEvent:
    """A new process (thread-group leader); threads are filtered out by the parser."""

    parent_tgid: int
    child_tgid: int
    monotonic_ns: int


@dataclass(frozen=True, slots=True)
class ExecEvent:
    """A process replaced its image; `snapshot` is /proc read the moment the message was received
    (None if the process had already exited), because short-lived processes do not wait for us."""

    tgid: int
    monotonic_ns: int
    snapshot: ProcessSnapshot | None = None


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """A process ended; `exit_code` as a shell sees it: the exit status, or -N when killed by signal N."""

    tgid: int
    exit_code: int
    monotonic_ns: int


KernelProcEvent = ForkEvent | ExecEvent | ExitEvent


def parse_datagram(data: bytes) -> list[KernelProcEvent]:
    """Every fork/exec/exit of whole processes in one netlink datagram; anything else is ignored."""
    events: list[KernelProcEvent] = []
    offset = 0
    while offset + _HEADERS + _EVENT_HEAD.size <= len(data):
        msg_len = _NLMSGHDR.unpack_from(data, offset)[0]
        if msg_len < _HEADERS or offset + msg_len > len(data):
            break  # truncated or corrupt: stop rather than misread
        event = _parse_proc_event(data, offset + _HEADERS, offset + msg_len)
        if event is not None:
            events.append(event)
        offset += (msg_len + 3) & ~3  # NLMSG_ALIGN
    return events


def _parse_proc_event(data: bytes, start: int, end: int) -> KernelProcEvent | None:
    what, _cpu, ts_ns = _EVENT_HEAD.unpack_from(data, start)
    body = start + _EVENT_HEAD.size
    if what == PROC_EVENT_FORK and body + _FORK.size <= end:
        _ppid, parent_tgid, child_pid, child_tgid = _FORK.unpack_from(data, body)
        return ForkEvent(parent_tgid, child_tgid, ts_ns) if child_pid == child_tgid else None
    if what == PROC_EVENT_EXEC and body + _EXEC.size <= end:
        _pid, tgid = _EXEC.unpack_from(data, body)
        return ExecEvent(tgid, ts_ns)
    if what == PROC_EVENT_EXIT and body + _EXIT.size <= end:
        pid, tgid, status, _signal = _EXIT.unpack_from(data, body)
        return ExitEvent(tgid, decode_wait_status(status), ts_ns) if pid == tgid else None
    return None


def decode_wait_status(status: int) -> int:
    """wait(2) status -> exit code, or the negated signal number for a process killed by a signal."""
    signal_number = status & 0x7F
    return (status >> 8) & 0xFF if signal_number == 0 else -signal_number


def _control_message(op: int) -> bytes:
    payload = struct.pack("=I", op)
    cn_msg = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn_msg), NLMSG_DONE, 0, 0, os.getpid()) + cn_msg


class ProcConnector:
    """A subscribed connector socket read from the asyncio loop without a thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.overruns = 0  # ENOBUFS: the kernel dropped messages because we were too slow

    @classmethod
    def open(cls) -> ProcConnector:
        """Bind and subscribe; raise `ConnectorUnavailable` with the kernel's reason."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as exc:
            raise ConnectorUnavailable(f"netlink connector socket: {exc}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_RCVBUF)
            sock.bind((0, CN_IDX_PROC))  # port 0: the kernel assigns a unique port id
            sock.send(_control_message(PROC_CN_MCAST_LISTEN))
        except OSError as exc:
            sock.close()
            raise ConnectorUnavailable(f"netlink connector subscribe: {exc}") from exc
        sock.setblocking(False)
        return cls(sock)

    def close(self) -> None:
        """Unsubscribe (best effort) and close the socket."""
        try:
            self._sock.send(_control_message(PROC_CN_MCAST_IGNORE))
        except OSError:
            pass  # closing anyway; the kernel drops the subscription with the socket
        self._sock.close()

    def read_ready(self, capture: bool = False) -> list[KernelProcEvent]:
        """Drain every datagram queued now (non-blocking); `capture` snapshots /proc per exec."""
        events: list[KernelProcEvent] = []
        while True:
            try:
                data = self._sock.recv(_RECV_BYTES)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # the kernel dropped messages while we were busy: say so, go on
                log.warning("process connector overrun (%s): some process events were lost", exc)
                continue
            parsed = parse_datagram(data)
            if capture:
                parsed = [_with_snapshot(e) if isinstance(e, ExecEvent) else e for e in parsed]
            events.extend(parsed)

    def _read_and_capture(
        self, pending: collections.deque[list[KernelProcEvent]], ready: asyncio.Event
    ) -> None:
        """Reader callback: drain the socket, reading /proc for each exec *now*, before it exits."""
        batch = self.read_ready(capture=True)
        if batch:
            pending.append(batch)
            ready.set()

    async def stream(self, coalesce_s: float = 0.02) -> AsyncIterator[list[KernelProcEvent]]:
        """Yield events in kernel order until cancelled, at most one batch per `coalesce_s`.

        /proc is read in the reader callback as each message arrives (short-lived processes do not
        wait); only the rest of the work is grouped, so a burst costs one pass downstream.
        """
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        pending: collections.deque[list[KernelProcEvent]] = collections.deque()
        loop.add_reader(self._sock.fileno(), self._read_and_capture, pending, ready)
        try:
            while True:
                await ready.wait()
                await asyncio.sleep(coalesce_s)
                ready.clear()
                batch: list[KernelProcEvent] = []
                while pending:
                    batch.extend(pending.popleft())
                yield batch
        finally:
            loop.remove_reader(self._sock.fileno())


def _with_snapshot(event: ExecEvent) -> ExecEvent:
    try:
        return ExecEvent(event.tgid, event.monotonic_ns, read_snapshot(event.tgid))
    except ProcessGone:
        return event
