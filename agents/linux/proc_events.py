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

Two sockets, because waking up is what the agent pays for (BENCHMARKS.md, "Agent"): a process
costs three messages (fork, exec, exit), arriving a few hundred microseconds apart, so reading
them as they come wakes the agent two or three times per process. Only the exec is urgent (/proc
must be read before a short-lived process is gone). So a second subscription, the *doorbell*,
carries a classic BPF socket filter that keeps only exec messages; the agent waits on it, and when
it rings, snapshots /proc for the announced execs and drains the full stream (forks, execs, exits in
kernel order) from the first socket, which nothing else wakes on. Forks and exits without a later
exec are read by the live source's timer (`LinuxLiveConfig.netlink_drain_s`). Without socket
filters the full stream is the one waited on, as before.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

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
_SO_ATTACH_FILTER = 26
_SO_RCVBUFFORCE = 33
_BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K
_MAX_EARLY = 4096  # exec snapshots waiting for their message on the full stream
_NOT_RUNG: Any = object()


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
    """Subscribed, non-blocking connector sockets; the live source reads them from a reader callback
    on `fileno()` (the doorbell when there is one) and from its tick (`read_ready(capture=True)`)."""

    def __init__(self, sock: socket.socket, doorbell: socket.socket | None = None) -> None:
        self._sock = sock
        self._doorbell = doorbell
        self._early: dict[tuple[int, int], ProcessSnapshot | None] = {}  # (tgid, ts) -> /proc at the bell
        self.overruns = 0  # ENOBUFS: the kernel dropped messages because we were too slow

    @classmethod
    def open(cls) -> ProcConnector:
        """Bind and subscribe; raise `ConnectorUnavailable` with the kernel's reason. The exec
        doorbell is optional: without it (no socket filters) every message wakes the reader."""
        sock = _subscribe(exec_only=False)
        try:
            doorbell: socket.socket | None = _subscribe(exec_only=True)
        except ConnectorUnavailable as exc:
            log.info("process events: no exec-only doorbell (%s); every message wakes the agent", exc)
            doorbell = None
        return cls(sock, doorbell)

    @property
    def has_doorbell(self) -> bool:
        """True when only execs wake the reader: forks and exits must also be read on a timer."""
        return self._doorbell is not None

    def fileno(self) -> int:
        """The socket to wake on: the exec doorbell, or the full stream without one."""
        return (self._doorbell or self._sock).fileno()

    def close(self) -> None:
        """Unsubscribe (best effort) and close the sockets."""
        for sock in (self._doorbell, self._sock):
            if sock is None:
                continue
            try:
                sock.send(_control_message(PROC_CN_MCAST_IGNORE))
            except OSError:
                pass  # closing anyway; the kernel drops the subscription with the socket
            sock.close()

    def read_ready(self, capture: bool = False) -> list[KernelProcEvent]:
        """Drain every datagram queued now (non-blocking), in kernel order; `capture` snapshots /proc
        per exec (read when its doorbell rang if it did, so a process that exited since is still seen)."""
        if capture and self._doorbell is not None:
            self._ring(self._doorbell)
        events: list[KernelProcEvent] = []
        for data in self._drain(self._sock):
            parsed = parse_datagram(data)
            if capture:
                parsed = [self._captured(e) if isinstance(e, ExecEvent) else e for e in parsed]
            events.extend(parsed)
        return events

    def _ring(self, doorbell: socket.socket) -> None:
        """Snapshot /proc for each exec the doorbell announced, before short-lived processes go."""
        for data in self._drain(doorbell):
            for event in parse_datagram(data):
                if isinstance(event, ExecEvent):
                    self._early[(event.tgid, event.monotonic_ns)] = _with_snapshot(event).snapshot
        while len(self._early) > _MAX_EARLY:  # the full stream overran: those execs never come
            del self._early[next(iter(self._early))]

    def _captured(self, event: ExecEvent) -> ExecEvent:
        snap = self._early.pop((event.tgid, event.monotonic_ns), _NOT_RUNG)
        if snap is _NOT_RUNG:
            return _with_snapshot(event)
        return ExecEvent(event.tgid, event.monotonic_ns, snap) if snap is not None else event

    def _drain(self, sock: socket.socket) -> list[bytes]:
        datagrams: list[bytes] = []
        while True:
            try:
                datagrams.append(sock.recv(_RECV_BYTES))
            except BlockingIOError:
                return datagrams
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                if sock is self._sock:
                    self.overruns += 1  # the kernel dropped messages while we were busy: say so, go on
                    log.warning("process connector overrun (%s): some process events were lost", exc)


def _subscribe(exec_only: bool) -> socket.socket:
    """A bound, subscribed, non-blocking connector socket; `exec_only` filters in the kernel."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except OSError as exc:
        raise ConnectorUnavailable(f"netlink connector socket: {exc}") from exc
    try:
        _set_receive_buffer(sock, 64 << 10 if exec_only else _SOCKET_RCVBUF)
        if exec_only:
            _attach_exec_filter(sock)
        sock.bind((0, CN_IDX_PROC))  # port 0: the kernel assigns a unique port id
        sock.send(_control_message(PROC_CN_MCAST_LISTEN))
    except OSError as exc:
        sock.close()
        raise ConnectorUnavailable(f"netlink connector subscribe: {exc}") from exc
    sock.setblocking(False)
    return sock


def _set_receive_buffer(sock: socket.socket, size: int) -> None:
    """As root, past `net.core.rmem_max` (SO_RCVBUFFORCE); otherwise up to it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _attach_exec_filter(sock: socket.socket) -> None:
    """A classic BPF socket filter keeping only PROC_EVENT_EXEC messages (BPF loads big-endian, the
    message is in host order: the constant is the host-order bytes read big-endian)."""
    exec_word = int.from_bytes(struct.pack("=I", PROC_EVENT_EXEC), "big")
    program = [(_BPF_LD_W_ABS, 0, 0, _HEADERS), (_BPF_JEQ_K, 0, 1, exec_word),
               (_BPF_RET_K, 0, 0, 0xFFFFFFFF), (_BPF_RET_K, 0, 0, 0)]
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(code))  # struct sock_fprog, native layout
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)  # the kernel copies the program


def _with_snapshot(event: ExecEvent) -> ExecEvent:
    try:
        return ExecEvent(event.tgid, event.monotonic_ns, read_snapshot(event.tgid))
    except ProcessGone:
        return event
