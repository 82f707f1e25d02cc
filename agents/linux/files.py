"""File create/write/delete/rename under configured folders, from inotify.

Why inotify: unprivileged, in every kernel, and cheap per event. Its limit is attribution: inotify
says *what* changed, never *who* changed it, so these events carry the fixed marker
`UNATTRIBUTED_PROCESS_KEY` as their process key (the contract requires one). The pipeline still
counts them per device (files dropped into a startup folder, mass renames of ransomware); only the
link to one process is missing. As root on Linux >= 5.17 the live source uses fanotify instead
(`fanwatch.py`), which attributes each event; this watcher is the fallback.

Mapping:
  IN_CREATE (file)         -> file_create; (directory) -> watch it too, and report the files that
                              appeared in it before the watch was in place (a `mkdir -p` + write race)
  IN_CLOSE_WRITE           -> file_write (sha256 when the file is small enough)
  IN_DELETE (file)         -> file_delete
  IN_MOVED_FROM + _TO      -> file_rename (paired by cookie); an unpaired TO is a create (moved in),
                              an unpaired FROM is a delete (moved out), decided after `rename_wait_s`
  IN_Q_OVERFLOW            -> counted and logged: the kernel dropped events
Watches are bounded by `max_watches`; beyond it new folders are logged and not watched. The live
source reads the queue once per tick (`LinuxLiveSource`): a folder created and written within that
tick is watched late, so its files are reported as created (found by a scan) but their first writes
are not.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from agents.linux import inotify
from agents.linux.build import UNATTRIBUTED_PROCESS_KEY, linux_event, wire_text
from agents.linux.hashing import HashCache
from agents.linux.inotify import InotifyEvent, Mask
from schemas.events import BehaviorEvent, FileCreate, FileDelete, FileRename, FileWrite, Payload

__all__ = ["FileWatcher"]

log = logging.getLogger(__name__)

_READ_BYTES = 64 * 1024


class FileWatcher:
    """Recursive inotify watches on `roots`; `read_ready()` maps what is queued."""

    mode = "inotify"

    def __init__(
        self,
        device_id: str,
        roots: Sequence[str],
        *,
        hashes: HashCache | None = None,
        max_watches: int = 8192,
        rename_wait_s: float = 0.5,
    ) -> None:
        self.device_id = device_id
        self._roots = [os.path.abspath(root) for root in roots]
        self._hashes = hashes if hashes is not None else HashCache(max_entries=1024, max_bytes=16 << 20)
        self._max_watches = max_watches
        self._rename_wait_s = rename_wait_s
        self._fd = -1
        self._paths: dict[int, str] = {}  # wd -> directory path
        self._moves: dict[int, tuple[str, bool, float]] = {}  # cookie -> (old path, is_dir, seen at)
        self.overflows = 0
        self.unwatched_dirs = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the inotify descriptor and watch every root recursively."""
        self._fd = inotify.init()
        for root in self._roots:
            if os.path.isdir(root):
                self._watch_tree(root, report=False)
            else:
                log.warning("watch path %s is not a directory; not watched", root)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    @property
    def watch_count(self) -> int:
        return len(self._paths)

    @property
    def has_pending(self) -> bool:
        """A move waits for its partner: `read_ready` must run again within `rename_wait_s`."""
        return bool(self._moves)

    # -- reading --------------------------------------------------------------------------------

    def read_ready(self) -> list[BehaviorEvent]:
        """Map everything the kernel has queued now, plus renames that timed out unpaired. A file
        written several times within one read is hashed once (its content is the same for all)."""
        events: list[BehaviorEvent] = []
        digests: dict[str, str | None] = {}
        while self._fd >= 0:
            try:
                data = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                break
            for raw in inotify.parse_events(data):
                events.extend(self._map(raw, digests))
        events.extend(self.flush_moves(time.monotonic()))
        return events

    # -- mapping --------------------------------------------------------------------------------

    def _map(self, raw: InotifyEvent, digests: dict[str, str | None]) -> list[BehaviorEvent]:
        if raw.mask & Mask.Q_OVERFLOW:
            self.overflows += 1
            log.warning("inotify queue overflow on device %s: file events were lost", self.device_id)
            return []
        if raw.mask & Mask.IGNORED:
            self._paths.pop(raw.wd, None)
            return []
        directory = self._paths.get(raw.wd)
        if directory is None or not raw.name:
            return []
        path = os.path.join(directory, raw.name)
        return self._map_path(raw, path, digests)

    def _map_path(self, raw: InotifyEvent, path: str, digests: dict[str, str | None]) -> list[BehaviorEvent]:
        mask = raw.mask
        if mask & Mask.CREATE:
            return self._watch_tree(path, report=True) if raw.is_dir else [self._created(path)]
        if mask & Mask.CLOSE_WRITE:
            if path not in digests:
                digests[path] = self._hashes.sha256_of(path)
            # bytes_written stays None: inotify does not say how much was written.
            return [self._event(FileWrite(path=wire_text(path), sha256=digests[path]))]
        if mask & Mask.DELETE:
            return [] if raw.is_dir else [self._event(FileDelete(path=wire_text(path)))]
        if mask & Mask.MOVED_FROM:
            self._moves[raw.cookie] = (path, raw.is_dir, time.monotonic())
            return []
        if mask & Mask.MOVED_TO:
            return self._moved_to(raw, path)
        return []

    def _moved_to(self, raw: InotifyEvent, path: str) -> list[BehaviorEvent]:
        pending = self._moves.pop(raw.cookie, None)
        if pending is None:  # moved in from outside the watched tree
            return self._watch_tree(path, report=True) if raw.is_dir else [self._created(path)]
        old_path, is_dir, _seen = pending
        if is_dir:
            self._rename_watched(old_path, path)
        return [self._event(FileRename(path=wire_text(path), old_path=wire_text(old_path)))]

    def flush_moves(self, now: float) -> list[BehaviorEvent]:
        """Moves out of the tree (no matching MOVED_TO within `rename_wait_s`) become deletes."""
        wait_s = self._rename_wait_s
        expired = [cookie for cookie, (_p, _d, seen) in self._moves.items() if now - seen >= wait_s]
        events: list[BehaviorEvent] = []
        for cookie in expired:
            old_path, is_dir, _seen = self._moves.pop(cookie)
            if is_dir:
                self._unwatch_under(old_path)
            events.append(self._event(FileDelete(path=wire_text(old_path))))
        return events

    def _created(self, path: str) -> BehaviorEvent:
        return self._event(FileCreate(path=wire_text(path)))

    def _event(self, payload: Payload) -> BehaviorEvent:
        return linux_event(self.device_id, time.time_ns(), UNATTRIBUTED_PROCESS_KEY, payload)

    # -- watches --------------------------------------------------------------------------------

    def _watch_tree(self, top: str, *, report: bool) -> list[BehaviorEvent]:
        """Watch `top` and its subfolders; with `report`, emit creates for files already inside."""
        events: list[BehaviorEvent] = []
        for directory, subdirs, files in os.walk(top):
            if not self._watch_one(directory):
                subdirs.clear()
                continue
            if report:
                events.extend(self._created(os.path.join(directory, name)) for name in files)
        return events

    def _watch_one(self, directory: str) -> bool:
        if len(self._paths) >= self._max_watches:
            self.unwatched_dirs += 1
            log.warning("not watching %s: %d watches is the configured limit", directory, self._max_watches)
            return False
        try:
            wd = inotify.add_watch(self._fd, directory, Mask.WATCHED | Mask.ONLYDIR | Mask.DONT_FOLLOW)
        except OSError as exc:
            log.warning("cannot watch %s: %s", directory, exc)
            return False
        self._paths[wd] = directory
        return True

    def _rename_watched(self, old: str, new: str) -> None:
        for wd, path in list(self._paths.items()):
            if path == old or path.startswith(old + os.sep):
                self._paths[wd] = new + path[len(old) :]

    def _unwatch_under(self, old: str) -> None:
        for wd, path in list(self._paths.items()):
            if path == old or path.startswith(old + os.sep):
                inotify.remove_watch(self._fd, wd)
                del self._paths[wd]

