"""The fleet blocklist as one device holds it: artifact sha256 -> the verdict that blocks it.

Why a local copy: the verdict topic *is* the fleet blocklist, but an agent must keep blocking when
the broker is unreachable, including right after a restart. So every change is kept in a small
SQLite file in the agent's state dir, together with how far the verdict topic was read (the next
offset per partition): state and position are committed in one transaction, so after a crash the
agent resumes exactly where its saved state ends (records applied after the last commit are read
and applied again, which is idempotent).

Only authentic, in-scope verdicts reach `apply` (the follower checks signatures first). The rules:
- `malicious` -> blocked (replacing any earlier verdict for the same artifact);
- `suspicious`, `clean`, `lifted`, a tombstone, or a newer verdict whose scope excludes this
  device -> not blocked: the latest record per key is the fleet's current decision;
- an entry whose verdict has `expires_at` in the past no longer blocks (`blocking` checks the time).

`version` is the heartbeat's `blocklist_version`: the sum over partitions of the next offset to
read, i.e. how many verdict-topic records this device has consumed; the fleet compares it with the
sum of the topic's end offsets to see who is behind.

A *resync* re-reads the topic from the beginning and, when caught up, drops entries nobody
re-confirmed: it repairs a device that was offline longer than the topic keeps tombstones.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from agents.enforcement_errors import StateError
from schemas.codec import decode, encode
from schemas.errors import ContractError
from schemas.verdicts import Verdict

__all__ = ["BLOCKLIST_FILE", "BlockEntry", "Blocklist", "Change", "Clock", "SyncMode", "utc_now"]

log = logging.getLogger(__name__)

BLOCKLIST_FILE = "blocklist.db"
SyncMode = Literal["full", "normal", "off"]  # SQLite `synchronous`: full survives power loss
Clock = Callable[[], datetime]
"""Injected wall clock (tests and simulations pass their own)."""


def utc_now() -> datetime:
    """The default `Clock`."""
    return datetime.now(UTC)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    artifact_id TEXT PRIMARY KEY, verdict BLOB NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, applied_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Change(StrEnum):
    """What one record did to the list."""

    BLOCKED = "blocked"  # newly blocked
    UPDATED = "updated"  # still blocked, by a newer verdict
    UNBLOCKED = "unblocked"  # was blocked, is not any more
    UNCHANGED = "unchanged"  # nothing to do (e.g. a clean verdict for an unlisted artifact)


@dataclass(frozen=True, slots=True)
class BlockEntry:
    """One blocked artifact: the verdict that blocks it and where on the topic it was read."""

    verdict: Verdict
    partition: int
    offset: int
    applied_at: datetime

    @property
    def artifact_id(self) -> str:
        return self.verdict.artifact_id

    def active(self, now: datetime) -> bool:
        """Whether the verdict still blocks at `now` (not past its `expires_at`)."""
        return self.verdict.expires_at is None or now < self.verdict.expires_at


class Blocklist:
    """In-memory blocklist with SQLite persistence; `commit()` writes what changed since the last one."""

    def __init__(self, path: Path | None, topic: str, *, sync: SyncMode = "full",
                 read_only: bool = False) -> None:
        """Open (or create) the list at `path`; None keeps it in memory only (tests, simulations).

        `read_only` (the `ringfence-agent blocklist` command) never writes, so it may look at the
        file of a running agent.
        """
        self.path = path
        self.topic = topic
        self._entries: dict[str, BlockEntry] = {}
        self._positions: dict[int, int] = {}
        self._dirty: set[str] = set()
        self._positions_dirty = False
        self._unconfirmed: set[str] | None = None  # during a resync: entries not yet seen again
        self.last_caught_up_at: datetime | None = None
        self._read_only = read_only
        self._db = _open_read_only(path) if read_only else _open(path, sync)
        self._load()

    # -- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[BlockEntry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.artifact_id))

    def get(self, artifact_id: str) -> BlockEntry | None:
        return self._entries.get(artifact_id.lower())

    def blocking(self, sha256: str | None, now: datetime) -> BlockEntry | None:
        """The entry that blocks this sha256 at `now`, or None (unknown hash, not listed, expired)."""
        if sha256 is None:
            return None
        entry = self._entries.get(sha256.lower())
        return entry if entry is not None and entry.active(now) else None

    def active_count(self, now: datetime) -> int:
        return sum(1 for entry in self._entries.values() if entry.active(now))

    @property
    def positions(self) -> dict[int, int]:
        """Next offset to read, per partition of `topic` (empty: never read)."""
        return dict(self._positions)

    @property
    def version(self) -> int:
        """Records consumed from the verdict topic, summed over partitions (see module doc)."""
        return sum(self._positions.values())

    # -- changing -----------------------------------------------------------------------------

    def apply(self, verdict: Verdict, *, partition: int, offset: int, now: datetime) -> Change:
        """Apply an authentic, in-scope verdict read at (partition, offset); see the module rules."""
        self.advance(partition, offset)
        if not verdict.blocks:
            return self.remove(verdict.artifact_id, partition=partition, offset=offset)
        key = verdict.artifact_id
        self._confirm(key)
        old = self._entries.get(key)
        if old is not None and old.verdict == verdict:
            return Change.UNCHANGED
        self._entries[key] = BlockEntry(verdict, partition, offset, now)
        self._dirty.add(key)
        return Change.UPDATED if old is not None else Change.BLOCKED

    def remove(self, artifact_id: str, *, partition: int, offset: int) -> Change:
        """Unblock an artifact (tombstone, lifted, clean, out of scope) read at (partition, offset)."""
        self.advance(partition, offset)
        key = artifact_id.lower()
        self._confirm(key)
        if self._entries.pop(key, None) is None:
            return Change.UNCHANGED
        self._dirty.add(key)
        return Change.UNBLOCKED

    def advance(self, partition: int, offset: int) -> None:
        """Record that the record at (partition, offset) was handled, whatever became of it."""
        if offset + 1 > self._positions.get(partition, 0):
            self._positions[partition] = offset + 1
            self._positions_dirty = True

    def begin_resync(self) -> None:
        """Forget the positions (re-read from the beginning); keep blocking meanwhile."""
        self._unconfirmed = set(self._entries)
        self._positions = {}
        self._positions_dirty = True

    def caught_up(self, now: datetime) -> list[str]:
        """The follower reached the end of the topic: finish a resync; returns artifacts unblocked."""
        self.last_caught_up_at = now
        dropped = sorted(self._unconfirmed or ())
        self._unconfirmed = None
        for key in dropped:
            self._entries.pop(key, None)
            self._dirty.add(key)
        self._positions_dirty = True  # also stores last_caught_up_at
        return dropped

    @property
    def resyncing(self) -> bool:
        return self._unconfirmed is not None

    def _confirm(self, key: str) -> None:
        if self._unconfirmed is not None:
            self._unconfirmed.discard(key)

    # -- persistence --------------------------------------------------------------------------

    def commit(self) -> None:
        """Write every change since the last commit in one transaction (no-op when nothing changed)."""
        if self._db is None or self._read_only or not (self._dirty or self._positions_dirty):
            return
        try:
            with self._db:
                self._write_entries(self._db)
                self._write_positions(self._db)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot save the blocklist: {exc}") from exc
        self._dirty.clear()
        self._positions_dirty = False

    def close(self) -> None:
        if self._db is not None:
            self.commit()
            self._db.close()
            self._db = None

    def _write_entries(self, db: sqlite3.Connection) -> None:
        for key in self._dirty:
            entry = self._entries.get(key)
            if entry is None:
                db.execute("DELETE FROM entries WHERE artifact_id = ?", (key,))
                continue
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",
                (key, encode(entry.verdict), entry.partition, entry.offset, entry.applied_at.isoformat()),
            )

    def _write_positions(self, db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM positions")
        db.executemany("INSERT INTO positions VALUES (?, ?, ?)",
                             [(self.topic, p, o) for p, o in self._positions.items()])
        meta = {"resync_pending": "1" if self._unconfirmed is not None else "0"}
        if self.last_caught_up_at is not None:
            meta["last_caught_up_at"] = self.last_caught_up_at.isoformat()
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))

    def _load(self) -> None:
        if self._db is None:
            return
        try:
            rows = self._db.execute("SELECT verdict, partition, offset, applied_at FROM entries").fetchall()
            positions = self._db.execute("SELECT topic, partition, next_offset FROM positions").fetchall()
            meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot read the blocklist: {exc}") from exc
        for blob, partition, offset, applied_at in rows:
            self._load_entry(blob, partition, offset, applied_at)
        self._load_positions(positions, meta)

    def _load_entry(self, blob: bytes, partition: int, offset: int, applied_at: str) -> None:
        try:
            verdict = decode(Verdict, blob)
        except ContractError as exc:  # a damaged row must not stop the other entries from blocking
            log.error("blocklist %s: stored verdict at %d/%d unreadable, skipped: %s",
                      self.path, partition, offset, exc)
            return
        when = datetime.fromisoformat(applied_at).astimezone(UTC)
        self._entries[verdict.artifact_id] = BlockEntry(verdict, partition, offset, when)

    def _load_positions(self, positions: list[tuple[str, int, int]], meta: dict[str, str]) -> None:
        if "last_caught_up_at" in meta:
            self.last_caught_up_at = datetime.fromisoformat(meta["last_caught_up_at"]).astimezone(UTC)
        other_topics = {topic for topic, _, _ in positions if topic != self.topic}
        self._positions = {p: o for topic, p, o in positions if topic == self.topic}
        if other_topics or meta.get("resync_pending") == "1":
            # Read from a different verdict topic (or a resync was interrupted): re-read this one
            # whole and drop what it does not confirm.
            log.info("blocklist %s: resync of %s from the beginning (was: %s)", self.path, self.topic,
                     sorted(other_topics) or "interrupted resync")
            self.begin_resync()


def _open_read_only(path: Path | None) -> sqlite3.Connection | None:
    if path is None:
        return None
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StateError(f"{path}: cannot open the blocklist: {exc}") from exc


def _open(path: Path | None, sync: SyncMode) -> sqlite3.Connection | None:
    return None if path is None else open_state_db(path, _SCHEMA, sync, "blocklist")


def open_state_db(path: Path | None, schema: str, sync: SyncMode, what: str) -> sqlite3.Connection:
    """One of the agent's SQLite state files (WAL, `sync`, `schema` applied; its folder 0700), or an
    in-memory one for `path` None; StateError naming the file and `what` it holds."""
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(path if path is not None else ":memory:")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={sync.upper()}")
        db.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"{path}: cannot open the {what}: {exc}") from exc
    return db
