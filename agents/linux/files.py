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

import os
import time
from collections.abc import Sequence

from agents.linux import inotify
from agents.linux.build import UNATTRIBUTED_PROCESS_KEY, linux_event, wire_text
from agents.linux.dirwatch import Digests, DirWatcher
from agents.linux.hashing import HashCache
from agents.linux.inotify import InotifyEvent, Mask
from schemas.events import BehaviorEvent, FileCreate, FileDelete, FileRename, FileWrite, Payload

__all__ = ["FileWatcher"]


class FileWatcher(DirWatcher[int, InotifyEvent]):
    """Recursive inotify watches on `roots` (keyed by watch descriptor); `read_ready()` maps what is
    queued (the read loop, folder walking and hashing are `DirWatcher`'s)."""

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
        super().__init__(device_id, roots, hashes, max_watches)
        self._rename_wait_s = rename_wait_s
        self._moves: dict[int, tuple[str, bool, float]] = {}  # cookie -> (old path, is_dir, seen at)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the inotify descriptor and watch every root recursively."""
        self._fd = inotify.init()
        self._watch_roots()

    @property
    def has_pending(self) -> bool:
        """A move waits for its partner: `read_ready` must run again within `rename_wait_s`."""
        return bool(self._moves)

    # -- reading --------------------------------------------------------------------------------

    def read_ready(self) -> list[BehaviorEvent]:
        """Map everything the kernel has queued now, plus renames that timed out unpaired. A file
        written several times within one read is hashed once (its content is the same for all)."""
        return self._read_queue() + self.flush_moves(time.monotonic())

    # -- mapping --------------------------------------------------------------------------------

    def _parse(self, data: bytes) -> list[InotifyEvent]:
        return inotify.parse_events(data)

    def _map(self, raw: InotifyEvent, digests: Digests) -> list[BehaviorEvent]:
        if raw.mask & Mask.Q_OVERFLOW:
            return self._overflowed()
        if raw.mask & Mask.IGNORED:
            self._dirs.pop(raw.wd, None)
            return []
        directory = self._dirs.get(raw.wd)
        if directory is None or not raw.name:
            return []
        path = os.path.join(directory, raw.name)
        return self._map_path(raw, path, digests)

    def _map_path(self, raw: InotifyEvent, path: str, digests: Digests) -> list[BehaviorEvent]:
        mask = raw.mask
        if mask & Mask.CREATE:
            return self._watch_tree(path, report=True) if raw.is_dir else self._created(path)
        if mask & Mask.CLOSE_WRITE:
            # bytes_written stays None: inotify does not say how much was written.
            return [self._event(FileWrite(path=wire_text(path), sha256=self._digest(path, digests)))]
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
            return self._watch_tree(path, report=True) if raw.is_dir else self._created(path)
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

    def _created(self, path: str) -> list[BehaviorEvent]:
        return [self._event(FileCreate(path=wire_text(path)))]

    def _event(self, payload: Payload) -> BehaviorEvent:
        return linux_event(self.device_id, time.time_ns(), UNATTRIBUTED_PROCESS_KEY, payload)

    # -- watches --------------------------------------------------------------------------------

    def _watch_key(self, directory: str) -> int:
        return inotify.add_watch(self._fd, directory, Mask.WATCHED | Mask.ONLYDIR | Mask.DONT_FOLLOW)

    def _unwatch_under(self, old: str) -> None:
        for wd in self._keys_under(old):
            inotify.remove_watch(self._fd, wd)
            del self._dirs[wd]
