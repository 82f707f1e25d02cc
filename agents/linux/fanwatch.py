"""File create/write/delete/rename under configured folders from fanotify, attributed to processes.

The same events as the inotify watcher (`files.py`), but each carries the `process_key` of the
process that caused it: fanotify reports the pid with every event and the process tracker turns it
into a key (announcing the process first if the consumer never heard of it). A pid the tracker
cannot resolve (the process exited before it was ever seen, or predates the agent and is gone)
gives the `UNATTRIBUTED_PROCESS_KEY` marker, as inotify events always do.

Order matters for attribution: a process that writes a file and exits must still be in the tracker
when its write is mapped. The kernel queues the close-write before the exit notification (files
are closed before exit is reported), so the live source holds back the exits of each batch of
process messages, drains this watcher, and only then applies them (`LinuxLiveSource`): the write is
attributed to the right process, not to a pid that may already be recycled, and stamped no later
than the process's end.

Mapping (fanotify merges consecutive events of one file by one process into one mask):
  FAN_CREATE (file)          -> file_create; (directory) -> mark it too, and report the files that
                                appeared in it before the mark was in place (a `mkdir -p` + write race)
  FAN_CLOSE_WRITE            -> file_write (sha256 when the file is small enough)
  FAN_DELETE (file)          -> file_delete
  FAN_RENAME                 -> file_rename; into the tree from outside: a create; out of it: a delete
  FAN_Q_OVERFLOW             -> counted and logged: the kernel dropped events
Directories are marked one by one (inode marks, like inotify watches), bounded by `max_watches`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from agents.linux import fanotify
from agents.linux.build import UNATTRIBUTED_PROCESS_KEY, wire_text
from agents.linux.dirwatch import Digests, DirWatcher
from agents.linux.errors import FanotifyError, FanotifyUnavailable
from agents.linux.fanotify import DirEntry, FanEvent, Mask
from agents.linux.hashing import HashCache
from agents.linux.processes import ProcessTracker
from schemas.events import BehaviorEvent, FileCreate, FileDelete, FileRename, FileWrite, Payload

__all__ = ["FanotifyWatcher"]


class FanotifyWatcher(DirWatcher[bytes, FanEvent]):
    """fanotify marks on `roots` and their subfolders (keyed by fsid + file handle); `read_ready()`
    maps what is queued (the read loop, folder walking and hashing are `DirWatcher`'s)."""

    mode = "fanotify"

    def __init__(
        self,
        tracker: ProcessTracker,
        roots: Sequence[str],
        *,
        hashes: HashCache | None = None,
        max_watches: int = 8192,
    ) -> None:
        super().__init__(tracker.device_id, roots, hashes, max_watches)
        self._tracker = tracker
        self.unattributed = 0
        self._now_ns = 0  # the time stamped on the events of the current read
        self._ended_ns: Mapping[int, int] = {}  # and the end times of processes known to be gone

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the group and mark every root recursively; `FanotifyUnavailable` if refused."""
        self._fd = fanotify.open_group()
        self._probe_marks()
        self._watch_roots()

    def _probe_marks(self) -> None:
        """Mark the first root now, so a kernel that opens a group but cannot watch what we need
        (FAN_RENAME is Linux >= 5.17; a filesystem without file handles) is refused as a whole."""
        root = next((root for root in self._roots if os.path.isdir(root)), None)
        if root is None:
            return
        try:
            fanotify.add_mark(self._fd, root)
            fanotify.dir_key(root)
        except (FanotifyError, OSError) as exc:
            self.close()
            raise FanotifyUnavailable(f"cannot watch {root}: {exc.strerror or exc} "
                                      "(fanotify here needs FAN_RENAME, Linux >= 5.17)") from exc

    @property
    def has_pending(self) -> bool:
        """Nothing waits for a timeout here (renames arrive whole)."""
        return False

    # -- reading --------------------------------------------------------------------------------

    def read_ready(self, ended_ns: Mapping[int, int] | None = None) -> list[BehaviorEvent]:
        """Map everything the kernel has queued now. A file written several times within one read
        is hashed once (its content is the same for all of them by now).

        fanotify events carry no time, so they are stamped when read; `ended_ns` (pid -> end time)
        names processes known to have ended: their events are stamped no later than their end.
        """
        self._now_ns = time.time_ns()
        self._ended_ns = ended_ns or {}
        return self._read_queue()

    # -- mapping --------------------------------------------------------------------------------

    def _parse(self, data: bytes) -> list[FanEvent]:
        return fanotify.parse_events(data)

    def _map(self, raw: FanEvent, digests: Digests) -> list[BehaviorEvent]:
        if raw.mask & Mask.Q_OVERFLOW:
            return self._overflowed()
        if raw.mask & Mask.RENAME:
            return self._renamed(raw)
        path = self._path(raw.entry)
        if path is None:
            return []
        events: list[BehaviorEvent] = []
        if raw.mask & Mask.CREATE:
            events += self._watch_tree(path, report=True) if raw.is_dir else self._created(path, raw.pid)
        if raw.mask & Mask.CLOSE_WRITE and not raw.is_dir:
            # bytes_written stays None: fanotify does not say how much was written.
            sha256 = self._digest(path, digests)
            events += self._event(FileWrite(path=wire_text(path), sha256=sha256), raw.pid)
        if raw.mask & Mask.DELETE:
            if raw.is_dir:
                self._forget_under(path)
            else:
                events += self._event(FileDelete(path=wire_text(path)), raw.pid)
        return events

    def _renamed(self, raw: FanEvent) -> list[BehaviorEvent]:
        old, new = self._path(raw.old), self._path(raw.entry)
        if old is not None and new is not None:
            if raw.is_dir:
                self._rename_watched(old, new)
            return self._event(FileRename(path=wire_text(new), old_path=wire_text(old)), raw.pid)
        if old is not None:  # moved out of the watched tree
            if raw.is_dir:
                self._forget_under(old)
            return self._event(FileDelete(path=wire_text(old)), raw.pid)
        if new is not None:  # moved in from outside
            return self._watch_tree(new, report=True) if raw.is_dir else self._created(new, raw.pid)
        return []

    def _path(self, entry: DirEntry | None) -> str | None:
        if entry is None or not entry.name:
            return None
        directory = self._dirs.get(entry.dir_key)
        return os.path.join(directory, entry.name) if directory is not None else None

    def _created(self, path: str, pid: int = 0) -> list[BehaviorEvent]:
        """pid 0 (unattributed): a file found in a new folder, written before the mark was in place."""
        return self._event(FileCreate(path=wire_text(path)), pid)

    def _event(self, payload: Payload, pid: int) -> list[BehaviorEvent]:
        ended_ns = self._ended_ns.get(pid)
        ts_ns = self._now_ns if ended_ns is None else min(self._now_ns, ended_ns)
        events = self._tracker.event_by(pid, ts_ns, payload)
        if events[-1].process_key == UNATTRIBUTED_PROCESS_KEY:
            self.unattributed += 1
        return events

    # -- marks ----------------------------------------------------------------------------------

    def _watch_key(self, directory: str) -> bytes:
        fanotify.add_mark(self._fd, directory)
        return fanotify.dir_key(directory)

    def _forget_under(self, old: str) -> None:
        """A folder left the tree (deleted: its marks went with it; moved out: its events are no
        longer resolvable to a path here, so they are dropped)."""
        for key in self._keys_under(old):
            del self._dirs[key]
