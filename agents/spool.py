"""The agent's durable on-disk spool: every event is written here before it is sent, and removed only
after the broker acknowledged it, so a broker outage, an agent crash or a reboot loses nothing.

Why SQLite (WAL) rather than append-only segment files:
- one transaction stores a group of events *and* advances each device's `seq` counter, so a crash
  can never leave an event without its number or a number used twice; with segments we would write
  our own torn-write detection, checksums and a separate counter file with its own crash window;
- trimming after an ack is a `DELETE` of a key range, with no segment compaction to write;
- it is in the standard library (no dependency for the light agent), and its recovery is tested by
  far more than we could test ours.
Durability: `journal_mode=WAL`, `synchronous=FULL` by default (the WAL is fsynced at each commit; a
commit carries a whole group of events, measured at ~0.5 ms here). `normal` trades the last commits
before a power cut for fewer fsyncs; an agent crash loses nothing in either mode. Trims (after an
ack) are never fsynced on their own: losing one to a power cut only means that batch is sent again.

Order: rows get increasing ids; the publisher sends the oldest device's oldest rows first, one
batch at a time, and trims only what was acknowledged, so per-device order holds across restarts.
Cap: `max_bytes` of pending event data. When an append would pass it, `put()` *blocks* the caller
(the sources, through the publisher's queue) and logs it, until acks free room; nothing is ever
dropped silently. One group larger than the whole cap is still admitted into an empty spool, so a
single huge event cannot deadlock the agent. The database file keeps its peak size (SQLite reuses
freed pages), which the cap bounds.

One process at a time: the spool keeps its counters in memory, so a second process on the same
file would reuse seqs. `Spool()` takes an exclusive `flock` on `<file>.lock` (released by the kernel
even on SIGKILL) and raises `SpoolLocked` when another process holds it.

Records are stored as the exact JSON the publisher sends (`agents.batch_codec`), so sending splices
them into a batch without decoding. `earlier_last_id` is the last row written by an earlier process:
rows up to it may come from another agent version, and the publisher validates them before sending.

    SpoolError        root of this module's errors
    ├── SpoolCorrupt  the database cannot be opened or is not a spool (path in the message)
    ├── SpoolLocked   another process is using this spool (path in the message)
    └── SpoolClosed   used after close()
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agents.batch_codec import encode_with_seq
from schemas.events import BehaviorEvent

__all__ = ["Spool", "SpoolBatch", "SpoolClosed", "SpoolCorrupt", "SpoolError", "SpoolLocked"]

log = logging.getLogger(__name__)

SPOOL_FORMAT = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device_id, id);
CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
"""
_PENDING = "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0), COALESCE(MAX(id), 0) FROM events"
_UPSERT_SEQ = ("INSERT INTO devices (device_id, next_seq) VALUES (?, ?) "
               "ON CONFLICT (device_id) DO UPDATE SET next_seq = excluded.next_seq")


class SpoolError(Exception):
    """Root of the spool's errors."""


class SpoolCorrupt(SpoolError):
    """The spool database cannot be used (corrupt, not a spool, or from a newer format)."""


class SpoolLocked(SpoolError):
    """Another process holds this spool (an agent and an import command on the same folder)."""


class SpoolClosed(SpoolError):
    """The spool was used after `close()`."""


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """The oldest pending events of one device, ready to send; `ack` it once the broker has it."""

    device_id: str
    first_id: int  # lowest row id in the batch (<= `Spool.earlier_last_id`: written by an earlier run)
    last_id: int  # highest row id in the batch (trim key)
    first_seq: int
    last_seq: int
    records: tuple[bytes, ...]  # encoded BehaviorEvents, seq assigned, in order (seqs first_seq + i)

    @property
    def nbytes(self) -> int:
        return sum(len(record) for record in self.records)


class Spool:
    """A single-process SQLite spool; methods are synchronous and fast, `put` adds backpressure."""

    def __init__(self, path: Path, *, max_bytes: int = 256 << 20,
                 sync: Literal["full", "normal"] = "full") -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._sync = "FULL" if sync == "full" else "NORMAL"
        self._lock_fd: int | None = _lock(path)
        try:
            self._db: sqlite3.Connection | None = _open(path, self._sync)
        except BaseException:
            self._unlock()
            raise
        self._next_seq: dict[str, int] = dict(self._conn.execute("SELECT device_id, next_seq FROM devices"))
        count, size, last_id = self._conn.execute(_PENDING).fetchone()
        self.pending_events: int = count
        self.pending_bytes: int = size
        self.earlier_last_id: int = last_id  # rows up to here were written before this process opened it
        self._room_freed = asyncio.Event()  # set by ack(); producers blocked on the cap wait on it
        self.blocked_count = 0  # how many times producers had to wait for room
        if count:
            log.info("spool %s reopened with %d pending events (%d bytes)", path, count, size)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise SpoolClosed(f"spool {self.path} is closed")
        return self._db

    def close(self) -> None:
        """Close the database; pending events stay on disk for the next run."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def next_seq(self, device_id: str) -> int:
        """The seq the next event of `device_id` will get."""
        return self._next_seq.get(device_id, 0)

    # -- writing --------------------------------------------------------------------------------

    def append(self, events: Sequence[BehaviorEvent]) -> list[BehaviorEvent]:
        """Number the events per device and store them in one transaction; returns them numbered."""
        numbered, rows, counters = self._number(events)
        self._commit(rows, counters)
        return numbered

    async def put(self, events: Sequence[BehaviorEvent]) -> None:
        """`append`, but first wait (blocking the caller, never dropping) until the cap has room.
        Returns nothing: the numbered events are only written (no numbered copies are built)."""
        rows, counters = self._rows(events)
        size = sum(len(row[2]) for row in rows)
        if not self.has_room_for(size):
            await self._wait_for_room(size)
            rows, counters = self._rows(events)  # another writer may have numbered meanwhile
        self._commit(rows, counters)

    def has_room_for(self, nbytes: int) -> bool:
        """True if `nbytes` more fit under the cap (an empty spool always admits one group)."""
        return self.pending_events == 0 or self.pending_bytes + nbytes <= self.max_bytes

    async def _wait_for_room(self, nbytes: int) -> None:
        self.blocked_count += 1
        log.warning("spool %s full (%d events, %d of %d bytes): producers wait for the broker",
                    self.path, self.pending_events, self.pending_bytes, self.max_bytes)
        while not self.has_room_for(nbytes):
            self._room_freed.clear()
            await self._room_freed.wait()
        log.info("spool %s has room again (%d bytes pending)", self.path, self.pending_bytes)

    def _number(
        self, events: Sequence[BehaviorEvent]
    ) -> tuple[list[BehaviorEvent], list[tuple[str, int, bytes]], dict[str, int]]:
        """`_rows`, plus the numbered events themselves."""
        rows, counters = self._rows(events)
        numbered = [event.model_copy(update={"seq": row[1]}) for event, row in zip(events, rows, strict=True)]
        return numbered, rows, counters

    def _rows(self, events: Sequence[BehaviorEvent]) -> tuple[list[tuple[str, int, bytes]], dict[str, int]]:
        """Assign each device's next seqs and encode (pure: nothing changes until `_commit`)."""
        counters: dict[str, int] = {}
        rows: list[tuple[str, int, bytes]] = []
        for event in events:
            seq = counters.get(event.device_id, self._next_seq.get(event.device_id, 0))
            counters[event.device_id] = seq + 1
            rows.append((event.device_id, seq, encode_with_seq(event, seq)))
        return rows, counters

    def _commit(self, rows: list[tuple[str, int, bytes]], counters: dict[str, int]) -> None:
        if not rows:
            return
        conn = self._conn
        with conn:  # one transaction: events and counters commit together or not at all
            conn.executemany("INSERT INTO events (device_id, seq, data) VALUES (?, ?, ?)", rows)
            conn.executemany(_UPSERT_SEQ, counters.items())
        self._next_seq.update(counters)
        self.pending_events += len(rows)
        self.pending_bytes += sum(len(row[2]) for row in rows)

    # -- reading and trimming -------------------------------------------------------------------

    def peek(self, max_events: int, max_bytes: int) -> SpoolBatch | None:
        """The oldest pending device's oldest events (at least one, then up to both limits)."""
        conn = self._conn
        oldest = conn.execute("SELECT device_id FROM events ORDER BY id LIMIT 1").fetchone()
        if oldest is None:
            return None
        device_id: str = oldest[0]
        cursor = conn.execute("SELECT id, seq, data FROM events WHERE device_id = ? ORDER BY id LIMIT ?",
                              (device_id, max_events))
        rows: list[tuple[int, int, bytes]] = []
        size = 0
        for row in cursor:
            if rows and size + len(row[2]) > max_bytes:
                break
            rows.append(row)
            size += len(row[2])
        cursor.close()
        return SpoolBatch(device_id, rows[0][0], rows[-1][0], rows[0][1], rows[-1][1],
                          tuple(row[2] for row in rows))

    def ack(self, batch: SpoolBatch) -> None:
        """Trim a batch the broker acknowledged; wakes producers waiting for room."""
        conn = self._conn
        conn.execute("PRAGMA synchronous=NORMAL")  # a trim lost to a power cut only means a resend
        try:
            with conn:
                deleted = conn.execute("DELETE FROM events WHERE device_id = ? AND id <= ?",
                                       (batch.device_id, batch.last_id)).rowcount
        finally:
            conn.execute(f"PRAGMA synchronous={self._sync}")
        self.pending_events -= deleted
        self.pending_bytes = max(0, self.pending_bytes - batch.nbytes)
        self._room_freed.set()


def _lock(path: Path) -> int:
    """An exclusive, non-blocking flock on `<path>.lock`; its descriptor stays open while we hold it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLocked(f"spool {path} is in use by another process (lock {lock_path})") from None
    return fd


def _open(path: Path, sync: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.executescript(_SCHEMA)
        _check_format(conn, path)
    except sqlite3.DatabaseError as exc:
        raise SpoolCorrupt(f"spool {path} cannot be opened: {exc}") from exc
    return conn


def _check_format(conn: sqlite3.Connection, path: Path) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    if row is None:
        with conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (SPOOL_FORMAT,))
    elif row[0] != SPOOL_FORMAT:
        raise SpoolCorrupt(f"spool {path} has format {row[0]}, this agent writes {SPOOL_FORMAT}")
