"""sha256 of executables with a bounded cache keyed by (device, inode, mtime).

A busy host execs the same few binaries thousands of times a minute (sh, git, python), so hashing
each exec would dominate the agent's CPU. A file's identity plus its modification time is a safe
cache key: replacing or rewriting a binary changes the inode or the mtime, so a stale hash is never
served. The cache is an LRU with a fixed number of entries so memory stays bounded however many
distinct binaries run. Files larger than `max_bytes` are not hashed (None) to bound the worst case.
Only regular files are read: the open is non-blocking and anything else (a FIFO someone created in
a watched folder, a device node) gets None, so a hostile file can never stall the agent's loop.
Files are read with raw descriptors (no buffered file object per hash: this runs for every file
write in a watched folder).

An executable's key can be taken while its process is alive (`procfs` stats `/proc/<pid>/exe` in
the exec snapshot): `sha256_known` then answers from the cache without opening anything, and on a
miss hashes whichever of the given paths still is that very file (same key), so a process that
exited a moment after its exec still gets its image's digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["FileKey", "HashCache", "file_key"]

log = logging.getLogger(__name__)

FileKey = tuple[int, int, int]  # (st_dev, st_ino, st_mtime_ns)
_CHUNK = 1 << 20
_PAST_END = 64 << 10  # read size once past the fstat size (a file still growing, or the EOF check)


class HashCache:
    """LRU of sha256 hex digests by file identity; counts hits and misses for heartbeats."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 256 << 20) -> None:
        self._entries: OrderedDict[FileKey, str | None] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def sha256_of(self, path: str) -> str | None:
        """Digest of the file at `path` (e.g. `/proc/<pid>/exe`), or None if unreadable, too big or
        not a regular file."""
        return self._hash_path(path, None)[1]

    def sha256_known(self, key: FileKey, paths: Sequence[str]) -> str | None:
        """Digest of the file whose `key` was taken earlier: from the cache, else from the first of
        `paths` that still opens to that same file; None if none does (or it is too big)."""
        if self._hit(key):
            return self._entries[key]
        for path in paths:
            found, digest = self._hash_path(path, key)
            if found:
                return digest
        return None

    def _hash_path(self, path: str, key: FileKey | None) -> tuple[bool, str | None]:
        """(whether `path` opened to a regular file — the file of `key`, when given —, its digest)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            log.debug("cannot hash %s: %s", path, exc)
            return False, None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (key is not None and _key_of(st) != key):
                return False, None
            return True, self._digest_open_file(fd, path, st)
        except OSError as exc:
            log.debug("cannot hash %s: %s", path, exc)
            return False, None
        finally:
            os.close(fd)

    def _hit(self, key: FileKey) -> bool:
        """Whether `key` is cached (counted as a hit, and made the most recent entry)."""
        if key not in self._entries:
            return False
        self.hits += 1
        self._entries.move_to_end(key)
        return True

    def _digest_open_file(self, fd: int, path: str, st: os.stat_result) -> str | None:
        key = _key_of(st)
        if self._hit(key):
            return self._entries[key]
        self.misses += 1
        digest = _hash_fd(fd, st.st_size) if st.st_size <= self._max_bytes else None
        if digest is None:
            log.debug("not hashing %s: %d bytes is over the %d byte limit", path, st.st_size, self._max_bytes)
        self._remember(key, digest)
        return digest

    def _remember(self, key: FileKey, digest: str | None) -> None:
        self._entries[key] = digest
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _key_of(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def file_key(path: str, dir_fd: int | None = None) -> FileKey | None:
    """The cache key of the regular file at `path` (following links: `/proc/<pid>/exe`), or None."""
    try:
        st = os.stat(path, dir_fd=dir_fd)
    except OSError:
        return None
    return _key_of(st) if stat.S_ISREG(st.st_mode) else None


def _hash_fd(fd: int, size: int) -> str:
    """sha256 of everything readable from `fd`; reads are sized from `size` (the fstat size) plus one
    byte, since `os.pread` allocates the full request each call (1 MiB per call costs an mmap for a
    256 B file), and the byte that does not come back proves the end: one read for a small file."""
    digest = hashlib.sha256()
    offset = 0
    while True:
        want = min(_CHUNK, size - offset + 1) if offset < size else _PAST_END
        chunk = os.pread(fd, want, offset)
        digest.update(chunk)
        offset += len(chunk)
        if len(chunk) < want:  # a regular file reads short only at its end: no extra read for EOF
            return digest.hexdigest()
