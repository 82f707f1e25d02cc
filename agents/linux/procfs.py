"""Read what /proc says about one process, and name it with a PID-reuse-proof `process_key`.

Why a key from the start time: PIDs are recycled (pid_max is often 32768), so a PID alone can name
two different processes within minutes. The kernel's start time of a task never changes for its
life (exec keeps it), so `(device, pid, start time)` names exactly one process. The start time is
`/proc/<pid>/stat` field 22 (clock ticks since boot) plus the boot time from `/proc/stat` `btime`,
both integers, so the key computed now, later, or by another component (the enforcer checking a
PID before it signals) is the same.

Every reader returns `None` (or raises `ProcessGone`) when the process has exited between the
moment we heard of it and the read: that race is normal, not an error.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from agents.linux.errors import ProcessGone
from agents.linux.hashing import FileKey, file_key

__all__ = [
    "ProcessGone",
    "ProcessSnapshot",
    "StatLine",
    "boot_time_ns",
    "make_process_key",
    "process_key_for",
    "read_snapshot",
    "read_stat",
    "start_time_ns_from_ticks",
    "tick_ns",
]

PROC = Path("/proc")
PROCESS_KEY_HEX_CHARS = 32  # 128 bits of sha256: collisions are not a practical concern
_PAGE = 4096
MAX_COMMAND_LINE_BYTES = 32 * 1024  # longer command lines are cut (the pipeline's string limit is 64 KiB)


@dataclass(frozen=True, slots=True)
class StatLine:
    """The fields of /proc/<pid>/stat that the agent uses."""

    pid: int
    comm: str
    ppid: int
    start_ticks: int  # field 22: clock ticks since boot


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    """Everything /proc tells about a process at one instant; fields are None when unreadable."""

    pid: int
    ppid: int
    start_time_ns: int  # wall clock (UTC epoch) of the process start, tick resolution
    comm: str
    exe: str | None
    command_line: str
    uid: int | None
    cwd: str | None
    exe_key: FileKey | None = None  # the executable's (dev, inode, mtime) while the process was alive


@cache
def tick_ns() -> int:
    """Nanoseconds per clock tick (USER_HZ, 100 on every mainstream kernel)."""
    return 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@cache
def boot_time_ns() -> int:
    """Boot time as epoch nanoseconds, from `btime` in /proc/stat (whole seconds, stable)."""
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) * 1_000_000_000
    raise RuntimeError("/proc/stat has no btime line")  # pragma: no cover - every Linux has it


def start_time_ns_from_ticks(start_ticks: int) -> int:
    """Epoch nanoseconds of a process start given its /proc stat start ticks."""
    return boot_time_ns() + start_ticks * tick_ns()


def make_process_key(device_id: str, pid: int, start_time_ns: int) -> str:
    """The contract's Linux process key: sha256 hex prefix of `device:pid:start_time_ns`."""
    digest = hashlib.sha256(f"{device_id}:{pid}:{start_time_ns}".encode())
    return digest.hexdigest()[:PROCESS_KEY_HEX_CHARS]


def parse_stat(pid: int, text: str) -> StatLine:
    """Parse /proc/<pid>/stat; `comm` may contain spaces and parentheses, so split at the last ')'."""
    open_paren, close_paren = text.index("("), text.rindex(")")
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); ppid is field 4, starttime field 22.
    return StatLine(pid=pid, comm=text[open_paren + 1 : close_paren], ppid=int(rest[1]),
                    start_ticks=int(rest[19]))


def read_stat(pid: int) -> StatLine:
    """Read and parse /proc/<pid>/stat or raise `ProcessGone`."""
    try:
        raw = _read_file(f"/proc/{pid}/stat", 4096)
    except OSError as exc:  # ENOENT or ESRCH: exited (and reaped)
        raise ProcessGone(pid) from exc
    return parse_stat(pid, raw.decode("utf-8", "replace"))


def process_key_for(pid: int, device_id: str) -> str | None:
    """The process key of the process that has `pid` now, or None if no such process.

    The enforcer compares this with the key in a command before it signals, so a recycled PID that
    now belongs to another process is never killed.
    """
    try:
        stat = read_stat(pid)
    except ProcessGone:
        return None
    return make_process_key(device_id, pid, start_time_ns_from_ticks(stat.start_ticks))


def read_snapshot(pid: int) -> ProcessSnapshot:
    """Read one process from /proc; raise `ProcessGone` if it has exited.

    Every file is opened relative to one descriptor of /proc/<pid>, so all fields describe the
    same process even if the PID is recycled while we read (and it is fewer path lookups).
    """
    try:
        dir_fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ProcessGone(pid) from exc
    try:
        return _snapshot_at(pid, dir_fd)
    finally:
        os.close(dir_fd)


def _snapshot_at(pid: int, dir_fd: int) -> ProcessSnapshot:
    try:
        stat = parse_stat(pid, _read_file("stat", 4096, dir_fd).decode("utf-8", "replace"))
        uid: int | None = os.fstat(dir_fd).st_uid  # owner of /proc/<pid>: the effective uid
    except OSError as exc:
        raise ProcessGone(pid) from exc
    exe = _read_link("exe", dir_fd)
    if exe is not None and exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    return ProcessSnapshot(
        pid=pid, ppid=stat.ppid, start_time_ns=start_time_ns_from_ticks(stat.start_ticks),
        comm=stat.comm, exe=exe, command_line=_read_cmdline(dir_fd), uid=uid,
        cwd=_read_link("cwd", dir_fd), exe_key=file_key("exe", dir_fd) if exe is not None else None,
    )


def _read_file(path: str, limit: int, dir_fd: int | None = None) -> bytes:
    """Up to `limit` bytes of a (proc) file, with raw syscalls: no buffering layers to set up. A
    read shorter than asked and than a page is the end (proc files fill the buffer they are given,
    some a page per read): no extra read just to see the end (two syscalls less per snapshot)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit and (chunk := os.read(fd, limit - size)):
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < min(limit - size + len(chunk), _PAGE):
                break
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_link(name: str, dir_fd: int) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:  # gone, kernel thread (no exe), or permission
        return None


def _read_cmdline(dir_fd: int) -> str:
    try:
        raw = _read_file("cmdline", MAX_COMMAND_LINE_BYTES, dir_fd)
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def list_pids() -> list[int]:
    """PIDs of all processes visible in /proc (thread groups only, not threads)."""
    return [int(name) for name in os.listdir(PROC) if name.isdigit()]
