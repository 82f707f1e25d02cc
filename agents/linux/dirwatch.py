"""What the two file collectors share: folders watched one by one, a queue read in one loop, hashing.

The inotify watcher (`files.py`) and the fanotify watcher (`fanwatch.py`) differ in how the kernel
names a folder (a watch descriptor, or a file handle), in what an event says (fanotify adds the pid)
and so in how an event becomes `BehaviorEvent`s; everything else is the same and lives here:
- the folders: each root walked and watched folder by folder, up to `max_watches` (beyond, a folder
  is logged and counted in `unwatched_dirs`), the files found in a folder that appeared later
  reported as created, folder renames and removals followed in the key -> path map;
- the queue: read until the kernel has nothing more (non-blocking), every record mapped in order;
- file writes: hashed once per read however many times the file was written within it.
A subclass says how to watch one folder (`_watch_key`), how to parse a read (`_parse`), how to map a
record (`_map`) and how to report a file found in a new folder (`_created`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

from agents.linux.hashing import HashCache
from schemas.events import BehaviorEvent

__all__ = ["Digests", "DirWatcher"]

log = logging.getLogger(__name__)

_READ_BYTES = 64 * 1024

Key = TypeVar("Key", bound=Hashable)  # how the kernel names a watched folder
Record = TypeVar("Record")  # one parsed event of the queue
Digests = dict[str, str | None]  # path -> sha256 within one read


class DirWatcher(Generic[Key, Record]):
    """Folders watched recursively under `roots`, and the read loop of their event queue."""

    mode = ""

    def __init__(self, device_id: str, roots: Sequence[str], hashes: HashCache | None,
                 max_watches: int) -> None:
        self.device_id = device_id
        self._roots = [os.path.abspath(root) for root in roots]
        self._hashes = hashes if hashes is not None else HashCache(max_entries=1024, max_bytes=16 << 20)
        self._max_watches = max_watches
        self._fd = -1
        self._dirs: dict[Key, str] = {}  # watched folder -> its path
        self.overflows = 0
        self.unwatched_dirs = 0

    # -- to implement ---------------------------------------------------------------------------

    def _watch_key(self, directory: str) -> Key:
        """Watch one folder and return its key; raise OSError (or the collector's error) if refused."""
        raise NotImplementedError

    def _parse(self, data: bytes) -> Sequence[Record]:
        raise NotImplementedError

    def _map(self, record: Record, digests: Digests) -> list[BehaviorEvent]:
        raise NotImplementedError

    def _created(self, path: str) -> list[BehaviorEvent]:
        """A file found in a folder that was just watched (who wrote it is not known)."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    @property
    def watch_count(self) -> int:
        return len(self._dirs)

    def _watch_roots(self) -> None:
        for root in self._roots:
            if os.path.isdir(root):
                self._watch_tree(root, report=False)
            else:
                log.warning("watch path %s is not a directory; not watched", root)

    def _read_queue(self) -> list[BehaviorEvent]:
        """Map every record queued now, in order (a file written several times is hashed once)."""
        events: list[BehaviorEvent] = []
        digests: Digests = {}
        while self._fd >= 0:
            try:
                data = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                break
            for record in self._parse(data):
                events.extend(self._map(record, digests))
        return events

    def _digest(self, path: str, digests: Digests) -> str | None:
        if path not in digests:
            digests[path] = self._hashes.sha256_of(path)
        return digests[path]

    def _overflowed(self) -> list[BehaviorEvent]:
        self.overflows += 1
        log.warning("%s queue overflow on device %s: file events were lost", self.mode, self.device_id)
        return []

    def _watch_tree(self, top: str, *, report: bool) -> list[BehaviorEvent]:
        """Watch `top` and its subfolders; with `report`, emit creates for files already inside."""
        events: list[BehaviorEvent] = []
        for directory, subdirs, files in os.walk(top):
            if not self._watch_one(directory):
                subdirs.clear()
                continue
            if report:
                for name in files:
                    events += self._created(os.path.join(directory, name))
        return events

    def _watch_one(self, directory: str) -> bool:
        if len(self._dirs) >= self._max_watches:
            self.unwatched_dirs += 1
            log.warning("not watching %s: %d watches is the configured limit", directory, self._max_watches)
            return False
        try:
            key = self._watch_key(directory)
        except OSError as exc:
            log.warning("cannot watch %s: %s", directory, exc)
            return False
        self._dirs[key] = directory
        return True

    def _rename_watched(self, old: str, new: str) -> None:
        for key in self._keys_under(old):
            self._dirs[key] = new + self._dirs[key][len(old) :]

    def _keys_under(self, top: str) -> list[Key]:
        """The watched folders at or below `top`."""
        return [key for key, path in self._dirs.items() if path == top or path.startswith(top + os.sep)]
