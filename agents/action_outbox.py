"""The durable queue of ActionResults not yet acknowledged by the broker (SQLite, in the state dir).

Why: a kill that happened must reach the SOC even if the broker is down and the agent then crashes
or the machine reboots. So a result is written here when it is reported, and deleted only after
the broker acknowledged it (acks=all); after a restart the sender starts with what is left, in
the order the results were reported. Delivery is at least once: a crash between the broker's ack
and the delete sends that one result again after the restart, and consumers deduplicate on
`result_id` (every result has its own).

Writes are grouped: `add` inserts at once and commits at the end of the current event-loop turn
(`loop.call_soon`), so a verdict catch-up that reports a thousand changes costs one commit, not a
thousand fsyncs; without a running loop (tests, shutdown) it commits at once.

Bounded (`max_pending` results): when full, the oldest *successful apply_verdict* report goes
first (bookkeeping the blocklist itself keeps), and only when there is none the oldest result of
any kind; each loss is counted in `dropped` and logged with the result's id. A result that cannot
be written (disk full, broken file) is logged with its id and counted in `unsaved`; it is still
sent from memory if the agent lives long enough.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from agents.blocklist import SyncMode, open_state_db
from agents.enforcement_errors import StateError
from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.codec import encode

__all__ = ["ACTIONS_FILE", "ActionOutbox", "Pending"]

log = logging.getLogger(__name__)

ACTIONS_FILE = "actions.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, result_id TEXT NOT NULL UNIQUE, key BLOB NOT NULL,
    value BLOB NOT NULL, traceparent TEXT, bookkeeping INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """One result waiting for the broker's ack: what to send, and the row to delete afterwards."""

    seq: int  # 0: held in memory only (it could not be written)
    result_id: str
    key: bytes
    value: bytes
    traceparent: str | None


def _bookkeeping(result: ActionResult) -> bool:
    """A successful blocklist change: the first to go when the outbox is full."""
    return result.action is ActionKind.APPLY_VERDICT and result.outcome is Outcome.SUCCEEDED


class ActionOutbox:
    """Results in report order, persisted until `remove`d; `path=None` keeps them in memory."""

    def __init__(self, path: Path | None, *, max_pending: int = 10_000, sync: SyncMode = "full") -> None:
        self.path = path
        self.dropped = 0
        self.unsaved = 0
        self._max_pending = max_pending
        self._memory: deque[Pending] = deque()  # results that could not be written
        self._commit_scheduled = False
        self._closed = False
        self._db = open_state_db(path, _SCHEMA, sync, "action outbox")
        try:
            self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the action outbox: {exc}") from exc
        if self._count:
            log.info("action outbox %s: %d results from before the restart still to send", path, self._count)

    def __len__(self) -> int:
        return self._count + len(self._memory)

    def add(self, result: ActionResult, traceparent: str | None = None) -> None:
        """Queue one result durably (see the module docstring for the bound); never raises."""
        row = (result.result_id, result.device_id.encode(), encode(result), traceparent,
               int(_bookkeeping(result)))
        try:
            if self._count >= self._max_pending:
                self._evict_one()
            self._count += self._db.execute(
                "INSERT OR IGNORE INTO outbox (result_id, key, value, traceparent, bookkeeping)"
                " VALUES (?, ?, ?, ?, ?)", row).rowcount
            self._schedule_commit()
        except sqlite3.Error as exc:
            self.unsaved += 1
            log.error("action result %s (%s %s of device %s) not saved, held in memory only: %s",
                      result.result_id, result.action, result.outcome, result.device_id, exc)
            self._memory.append(Pending(0, *row[:4]))

    def head(self, limit: int = 100) -> list[Pending]:
        """The oldest results still to send, in report order (memory-only ones after the saved)."""
        rows = self._db.execute("SELECT seq, result_id, key, value, traceparent FROM outbox "
                                "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        found = [Pending(int(seq), rid, bytes(key), bytes(value), tp) for seq, rid, key, value, tp in rows]
        return found if found else list(self._memory)[:limit]

    def remove(self, pending: Pending) -> None:
        """Forget a result the broker acknowledged (committed at once)."""
        if pending.seq == 0:
            if self._memory and self._memory[0].result_id == pending.result_id:
                self._memory.popleft()
            return
        try:
            with self._db:
                deleted = self._db.execute("DELETE FROM outbox WHERE seq = ?", (pending.seq,)).rowcount
        except sqlite3.Error as exc:  # sent again after a restart: at least once, never lost
            log.error("action outbox %s: cannot forget sent result %s: %s", self.path, pending.result_id, exc)
            return
        self._count -= deleted

    def commit(self) -> None:
        """Make every added result durable now."""
        self._commit_scheduled = False
        if self._closed:
            return
        try:
            self._db.commit()
        except sqlite3.Error as exc:
            log.error("action outbox %s: cannot commit queued results: %s", self.path, exc)

    def close(self) -> None:
        self.commit()
        self._closed = True
        self._db.close()

    def _schedule_commit(self) -> None:
        if self._commit_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()
            return
        self._commit_scheduled = True
        loop.call_soon(self.commit)

    def _evict_one(self) -> None:
        row = self._db.execute("SELECT seq, result_id FROM outbox ORDER BY bookkeeping DESC, seq "
                               "LIMIT 1").fetchone()
        if row is None:
            return
        self._db.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
        self._count -= 1
        self.dropped += 1
        log.warning("action outbox full (%d): dropped result %s", self._max_pending, row[1])
