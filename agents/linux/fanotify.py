"""A minimal fanotify(7) binding over libc with ctypes, in "directory file handle + name" mode.

Why fanotify beside inotify: every fanotify event carries the pid of the process that caused it, so
file events can be attributed to a process (inotify never says who). Why this mode
(`FAN_REPORT_DFID_NAME`, Linux >= 5.9): only the file-handle modes report create, delete and rename,
and with the directory's handle plus the entry's name every event resolves to a path from a table of
the watched directories' handles, without opening anything. Renames use `FAN_RENAME` (Linux >= 5.17):
old and new name in one event, so there is no cookie pairing and no wait for a partner.
Needs CAP_SYS_ADMIN (root); `open_group` raises `FanotifyUnavailable` with the kernel's reason
otherwise, and the caller falls back to inotify.

Wire format (include/uapi/linux/fanotify.h), native byte order:
  fanotify_event_metadata: event_len u32, vers u8, reserved u8, metadata_len u16, mask u64,
                           fd s32, pid s32                                         (24 bytes)
  then info records: info_type u8, pad u8, len u16, fsid (2 x s32),
                     file_handle: handle_bytes u32, handle_type s32, f_handle[handle_bytes],
                     and for the *_DFID_NAME types the entry name, NUL-terminated and padded.
The parser is a pure function over bytes so it is tested without a kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass
from functools import cache

from agents.linux.errors import FanotifyError, FanotifyUnavailable

__all__ = ["DirEntry", "FanEvent", "Mask", "add_mark", "dir_key", "open_group", "parse_events"]

# fanotify_init flags
_FAN_CLOEXEC = 0x1
_FAN_NONBLOCK = 0x2
_FAN_REPORT_DIR_FID = 0x400
_FAN_REPORT_NAME = 0x800
# fanotify_mark flags
_FAN_MARK_ADD = 0x1
_FAN_MARK_DONT_FOLLOW = 0x4
_FAN_MARK_ONLYDIR = 0x8
_AT_FDCWD = -100
_MAX_HANDLE_SZ = 128

_METADATA = struct.Struct("=IBBHQii")
_INFO_HEADER = struct.Struct("=BBH")
_HANDLE_HEADER = struct.Struct("=Ii")  # handle_bytes, handle_type
_FSID_BYTES = 8
_METADATA_VERSION = 3

INFO_DFID_NAME = 2
INFO_DFID = 3
INFO_OLD_DFID_NAME = 10
INFO_NEW_DFID_NAME = 12


class Mask:
    """fanotify event bits (linux/fanotify.h) the agent uses."""

    CLOSE_WRITE = 0x00000008
    CREATE = 0x00000100
    DELETE = 0x00000200
    Q_OVERFLOW = 0x00004000
    EVENT_ON_CHILD = 0x08000000
    RENAME = 0x10000000
    ONDIR = 0x40000000
    WATCHED = CLOSE_WRITE | CREATE | DELETE | RENAME | ONDIR | EVENT_ON_CHILD


@dataclass(frozen=True, slots=True)
class DirEntry:
    """A name in a directory, the directory given by its `dir_key` (fsid + file handle)."""

    dir_key: bytes
    name: str


@dataclass(frozen=True, slots=True)
class FanEvent:
    """One event: what happened (`mask`, possibly several merged bits), who (`pid`), where.

    `entry` is the file concerned (for a rename: its new name); `old` is a rename's old name.
    """

    mask: int
    pid: int
    entry: DirEntry | None
    old: DirEntry | None = None

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & Mask.ONDIR)


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                   ctypes.c_char_p]
    libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    return libc


def open_group() -> int:
    """A non-blocking notification group reporting directory handles and names.

    Raises `FanotifyUnavailable` when the kernel refuses (not root: EPERM; a kernel older than
    5.9 or without CONFIG_FANOTIFY: EINVAL/ENOSYS).
    """
    try:
        libc = _libc()
        fd = int(libc.fanotify_init(_FAN_CLOEXEC | _FAN_NONBLOCK | _FAN_REPORT_DIR_FID | _FAN_REPORT_NAME,
                                    os.O_RDONLY | os.O_CLOEXEC))
    except (OSError, AttributeError) as exc:  # no libc symbol: a libc without fanotify
        raise FanotifyUnavailable(f"fanotify_init: {exc}") from exc
    if fd < 0:
        err = ctypes.get_errno()
        raise FanotifyUnavailable(f"fanotify_init: {os.strerror(err)}")
    return fd


def add_mark(fd: int, path: str, mask: int = Mask.WATCHED) -> None:
    """Watch a directory (and events on its children); raises `FanotifyError` with errno and path."""
    flags = _FAN_MARK_ADD | _FAN_MARK_ONLYDIR | _FAN_MARK_DONT_FOLLOW
    if int(_libc().fanotify_mark(fd, flags, mask, _AT_FDCWD, os.fsencode(path))) < 0:
        err = ctypes.get_errno()
        raise FanotifyError(err, os.strerror(err), path)


def dir_key(path: str) -> bytes:
    """The key events use for directory `path`: its filesystem id and file handle, as the kernel
    reports them (so a handle from an event can be looked up in a table built with this)."""
    buffer = ctypes.create_string_buffer(_HANDLE_HEADER.size + _MAX_HANDLE_SZ)
    _HANDLE_HEADER.pack_into(buffer, 0, _MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    if int(_libc().name_to_handle_at(_AT_FDCWD, os.fsencode(path), buffer, ctypes.byref(mount_id), 0)) < 0:
        err = ctypes.get_errno()
        raise FanotifyError(err, f"name_to_handle_at: {os.strerror(err)}", path)
    size, handle_type = _HANDLE_HEADER.unpack_from(buffer, 0)
    fsid = struct.pack("=Q", os.statvfs(path).f_fsid)  # glibc folds the two s32 halves into one u64
    return _key(fsid, handle_type, buffer.raw[_HANDLE_HEADER.size : _HANDLE_HEADER.size + size])


def _key(fsid: bytes, handle_type: int, handle: bytes) -> bytes:
    return fsid + struct.pack("=i", handle_type) + handle


def parse_events(data: bytes) -> list[FanEvent]:
    """Decode the events of one read(2); records of an unknown layout are skipped, never misread."""
    events: list[FanEvent] = []
    offset = 0
    while offset + _METADATA.size <= len(data):
        event_len, version, _reserved, meta_len, mask, _fd, pid = _METADATA.unpack_from(data, offset)
        if event_len < _METADATA.size or offset + event_len > len(data):
            break  # truncated or corrupt: stop rather than misread
        if version == _METADATA_VERSION and meta_len >= _METADATA.size:
            entry, old = _parse_info(data, offset + meta_len, offset + event_len)
            events.append(FanEvent(mask, pid, entry, old))
        offset += event_len
    return events


def _parse_info(data: bytes, start: int, end: int) -> tuple[DirEntry | None, DirEntry | None]:
    entry: DirEntry | None = None
    old: DirEntry | None = None
    while start + _INFO_HEADER.size <= end:
        info_type, _pad, length = _INFO_HEADER.unpack_from(data, start)
        if length < _INFO_HEADER.size or start + length > end:
            break
        record = _parse_record(data, start + _INFO_HEADER.size, start + length)
        if record is not None and info_type in (INFO_DFID_NAME, INFO_DFID, INFO_NEW_DFID_NAME):
            entry = record
        elif record is not None and info_type == INFO_OLD_DFID_NAME:
            old = record
        start += length
    return entry, old


def _parse_record(data: bytes, start: int, end: int) -> DirEntry | None:
    """fsid, file handle and (optional) name of one info record."""
    handle_start = start + _FSID_BYTES + _HANDLE_HEADER.size
    if handle_start > end:
        return None
    size, handle_type = _HANDLE_HEADER.unpack_from(data, start + _FSID_BYTES)
    if handle_start + size > end:
        return None
    key = _key(data[start : start + _FSID_BYTES], handle_type, data[handle_start : handle_start + size])
    raw_name = data[handle_start + size : end].split(b"\0", 1)[0]
    return DirEntry(key, os.fsdecode(raw_name))
