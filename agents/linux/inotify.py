"""A minimal inotify(7) binding over libc with ctypes: init, add/remove watch, parse events.

Why ctypes and not a package: three libc calls are the whole API, and the agent must stay light.
The parser is a pure function over the bytes read from the inotify descriptor.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass
from functools import cache

from agents.linux.errors import InotifyError

__all__ = ["InotifyError", "InotifyEvent", "Mask", "add_watch", "init", "parse_events", "remove_watch"]

_HEADER = struct.Struct("=iIII")  # wd, mask, cookie, len


class Mask:
    """inotify event bits (linux/inotify.h)."""

    MODIFY = 0x00000002
    CLOSE_WRITE = 0x00000008
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    ISDIR = 0x40000000
    WATCHED = CLOSE_WRITE | MOVED_FROM | MOVED_TO | CREATE | DELETE


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    wd: int
    mask: int
    cookie: int
    name: str

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & Mask.ISDIR)


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def init() -> int:
    """A non-blocking, close-on-exec inotify descriptor."""
    fd = int(_libc().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise InotifyError(err, f"inotify_init1: {os.strerror(err)}")
    return fd


def add_watch(fd: int, path: str, mask: int) -> int:
    """Watch a directory; returns the watch descriptor."""
    wd = int(_libc().inotify_add_watch(fd, os.fsencode(path), ctypes.c_uint32(mask)))
    if wd < 0:
        err = ctypes.get_errno()
        raise InotifyError(err, os.strerror(err), path)
    return wd


def remove_watch(fd: int, wd: int) -> None:
    """Stop a watch; a watch the kernel already dropped is not an error."""
    _libc().inotify_rm_watch(fd, wd)


def parse_events(data: bytes) -> list[InotifyEvent]:
    """Decode the variable-length records of one read(2)."""
    events: list[InotifyEvent] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, cookie, name_len = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        raw_name = data[start : start + name_len].split(b"\0", 1)[0]
        events.append(InotifyEvent(wd, mask, cookie, os.fsdecode(raw_name)))
        offset = start + name_len
    return events
