"""The SQLite state file a follower keeps: its saved positions beside whatever it remembers.

The command follower (used nonces) and the mode follower (applied mode updates) each read one
stream of a topic without a consumer group and resume, after a restart or an outage, from the
positions they saved locally. `FollowerStateStore` is what the two have in common: the file opened
through `agents.blocklist.open_state_db`, the `positions` table, and one write path that turns any
SQLite failure into a `StateError` naming the file — a follower that cannot save what it has seen
must stop rather than act on something it would forget.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import ClassVar

from agents.blocklist import SyncMode, open_state_db
from agents.enforcement_errors import StateError

__all__ = ["FollowerStateStore"]


class FollowerStateStore:
    """An agent state file with a `positions (<stream>, partition, next_offset)` table.

    Subclasses set `WHAT` (named in errors) and pass their whole schema, positions table included;
    the table's first column names the stream (a topic, or a scope), whatever its name."""

    WHAT: ClassVar[str] = "follower state"
    SAVE_POSITION: ClassVar[str] = "INSERT OR REPLACE INTO positions VALUES (?, ?, ?)"

    def __init__(self, path: Path | None, schema: str, *, sync: SyncMode = "full") -> None:
        self.path = path
        self._db = open_state_db(path, schema, sync, self.WHAT)

    def positions(self, stream: str) -> dict[int, int]:
        """The next offset to read per partition of `stream`, as last saved."""
        rows = self._db.execute("SELECT * FROM positions").fetchall()  # a few rows: one per partition
        return {partition: offset for name, partition, offset in rows if name == stream}

    def save_position(self, stream: str, partition: int, next_offset: int) -> None:
        self._write(self.SAVE_POSITION, (stream, partition, next_offset))

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, params: tuple[object, ...], *more: tuple[str, tuple[object, ...]]) -> None:
        """Run `sql` (and `more` statements) in one transaction: all of them are saved, or none."""
        try:
            with self._db:
                self._db.execute(sql, params)
                for statement, values in more:
                    self._db.execute(statement, values)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot save {self.WHAT}: {exc}") from exc
