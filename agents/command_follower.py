"""Follow the commands addressed to this device, check each one, and hand the good ones to the enforcer.

Choice: manual assignment, no consumer group. Commands are keyed by device_id, so Kafka's default
partitioner (murmur2 of the key, as in the Java client and aiokafka) puts all of a device's commands
in one partition; the follower assigns itself that partition and skips records with another key
before decoding them. Why not a group per device: joining a group costs every agent a coordinator
round trip and an initial rebalance delay (3 s by default) at each start, and 100,000 devices would
mean 100,000 groups for the brokers to keep. The position is saved locally (like the verdicts'),
in the same SQLite file as the used nonces. A device that was offline resumes where it stopped;
a device's first start reads its partition from the beginning (14 d retention), where expired
commands are refused by the validity check, so nothing stale runs. A producer with a custom
partitioner would break the key -> partition mapping: `all_partitions=True` reads every partition.

Every command is checked with `schemas.signing.check_command` (signature, target device, validity
window, nonce) before anything happens; the nonce is remembered durably (committed before the
action runs), so a replay is refused even after a restart. A refused command is reported on the
actions topic with outcome `refused` and the reason, and never executed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from agents.action_reporter import Reporter, action_result
from agents.blocklist import Clock, SyncMode, utc_now
from agents.enforcement_errors import StateError
from agents.state_store import FollowerStateStore
from agents.telemetry import continued, from_headers
from agents.topic_follower import ConsumerFactory, TopicFollower, partitions_of, seek_saved
from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.codec import decode
from schemas.commands import Command, CommandAction
from schemas.errors import ContractError
from schemas.signing import DEFAULT_MAX_SKEW, Keyring, check_command

__all__ = ["COMMANDS_FILE", "CommandFollower", "CommandHandler", "CommandStore", "partition_for_key"]

log = logging.getLogger(__name__)

COMMANDS_FILE = "commands.db"
Executor = Callable[[Command], Awaitable[ActionResult]]
_COMMAND_ACTIONS = frozenset(action.value for action in CommandAction)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
"""


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` (murmur2, positive, modulo)."""
    from aiokafka.partitioner import murmur2

    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


class CommandStore(FollowerStateStore):
    """Used nonces (a `schemas.signing.NonceStore`) and the followed position, in one SQLite file."""

    WHAT = "command state"

    def __init__(self, path: Path | None, *, sync: SyncMode = "full") -> None:
        super().__init__(path, _SCHEMA, sync=sync)
        self._handling: tuple[str, int, int] | None = None  # (topic, partition, next offset) of the record

    def handling(self, position: tuple[str, int, int] | None) -> None:
        """The (topic, partition, next offset) of the record now being handled, None when done: a nonce
        accepted from it is saved together with that position (see `remember`)."""
        self._handling = position

    def __contains__(self, nonce: object) -> bool:
        row = self._db.execute("SELECT 1 FROM nonces WHERE nonce = ?", (str(nonce),)).fetchone()
        return row is not None

    def remember(self, nonce: str, expires_at: datetime) -> None:
        """Record an accepted nonce, durably, before the command runs — in the same transaction as the
        position past its record when the follower said which record it is handling: a restart after
        the command ran (or while it ran: it never runs twice either way) resumes past it instead of
        reading it again and reporting a command that ran as a refused replay."""
        handling, self._handling = self._handling, None
        more = [(self.SAVE_POSITION, handling)] if handling is not None else []
        self._write("INSERT OR REPLACE INTO nonces VALUES (?, ?)", (nonce, expires_at.isoformat()), *more)

    def prune(self, now: datetime) -> None:
        """Forget nonces of commands that expired (they are refused as expired anyway)."""
        self._write("DELETE FROM nonces WHERE expires_at <= ?", (now.isoformat(),))


class CommandHandler:
    """Checks one command record for this device and runs it through the executor (the enforcer)."""

    def __init__(self, *, device_id: str, keyring: Keyring, store: CommandStore, reporter: Reporter,
                 executor: Executor, clock: Clock = utc_now, max_skew: timedelta = DEFAULT_MAX_SKEW) -> None:
        self.device_id = device_id
        self.keyring = keyring  # replaceable: key rotation hands in a new keyring
        self.store = store
        self.refused = 0
        self.unreportable = 0  # refused records too broken to name an action (logged, counted)
        self._key = device_id.encode()
        self._reporter = reporter
        self._executor = executor
        self._clock = clock
        self._max_skew = max_skew

    def prune_nonces(self) -> None:
        self.store.prune(self._clock())

    def is_mine(self, key: bytes | None) -> bool:
        return key == self._key

    async def handle(self, value: bytes | None) -> ActionResult | None:
        """Check and run one command addressed (by record key) to this device."""
        now = self._clock()
        try:
            command = decode(Command, value or b"")
        except ContractError as exc:
            self._refuse_undecodable(value, exc, now)
            return None
        try:
            check_command(command, keyring=self.keyring, device_id=self.device_id, now=now,
                          seen_nonces=self.store, max_skew=self._max_skew)
        except ContractError as exc:
            return self._refuse(command, exc, now)
        log.info("device %s: command %s (%s) accepted", self.device_id, command.command_id, command.action)
        return await self._executor(command)

    def _refuse(self, command: Command, exc: ContractError, now: datetime) -> ActionResult:
        self.refused += 1
        log.warning("device %s: command %s refused: %s", self.device_id, command.command_id, exc)
        result = action_result(
            self.device_id, ActionKind(command.action), Outcome.REFUSED, now=now, since=command.issued_at,
            command_id=command.command_id, process_key=command.process_key, path=command.path,
            reason=str(exc)[:4096], error_class=exc.error_class,
        )
        self._reporter.report(result)
        return result

    def _refuse_undecodable(self, value: bytes | None, exc: ContractError, now: datetime) -> None:
        self.refused += 1
        action, command_id = _peek(value)
        log.warning("device %s: undecodable command %s refused: %s", self.device_id, command_id, exc)
        if action is None:  # the ActionResult contract needs an action: count what cannot be named
            self.unreportable += 1
            return
        self._reporter.report(action_result(
            self.device_id, action, Outcome.REFUSED, now=now, command_id=command_id,
            reason=str(exc)[:4096], error_class=exc.error_class,
        ))


def _peek(value: bytes | None) -> tuple[ActionKind | None, str | None]:
    """The action and command id of a record that does not decode, if they can be read at all."""
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    action = obj.get("action")
    command_id = obj.get("command_id")
    kind = ActionKind(action) if isinstance(action, str) and action in _COMMAND_ACTIONS else None
    valid_id = isinstance(command_id, str) and 0 < len(command_id) <= 128 and command_id.isprintable() \
        and " " not in command_id
    return kind, (command_id if valid_id else None)


class CommandFollower(TopicFollower):
    """Follows this device's commands partition (the loop: `agents.topic_follower.TopicFollower`)."""

    kind = "command"

    def __init__(self, handler: CommandHandler, consumer_factory: ConsumerFactory, topic: str, *,
                 all_partitions: bool = False, fetch_timeout_ms: int = 500,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        super().__init__(consumer_factory, topic, device_id=handler.device_id,
                         fetch_timeout_ms=fetch_timeout_ms, max_records=100,
                         backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s)
        self.handler = handler
        self._all_partitions = all_partitions

    def _on_connected(self) -> None:
        self.handler.prune_nonces()

    async def _on_batch(self, batch: Mapping[Any, Sequence[Any]]) -> None:
        for tp, records in batch.items():
            for msg in records:
                await self._one(tp.partition, msg)
            if records:  # others' commands: one save per batch is enough
                self.handler.store.save_position(self.topic, tp.partition, records[-1].offset + 1)

    async def _assign(self, consumer: Any) -> list[Any]:
        from aiokafka.structs import TopicPartition

        numbers = await partitions_of(consumer, self.topic)
        if not self._all_partitions:
            numbers = [numbers[partition_for_key(self.handler.device_id.encode(), len(numbers))]]
        partitions = [TopicPartition(self.topic, n) for n in numbers]
        await seek_saved(consumer, partitions, self.handler.store.positions(self.topic))
        log.info("command follower of device %s: %s partitions %s", self.handler.device_id, self.topic,
                 numbers)
        return partitions

    async def _one(self, partition: int, msg: Any) -> None:
        if not self.handler.is_mine(msg.key):
            return
        store = self.handler.store
        store.handling((self.topic, partition, msg.offset + 1))
        try:
            parent = from_headers(getattr(msg, "headers", None))
            with continued("ringfence.agent.command", parent, kind="consumer"):
                await self.handler.handle(msg.value)  # the ActionResult it reports continues the trace
        except StateError:
            raise  # cannot remember nonces: stop and retry rather than act without replay protection
        except Exception:  # a bug on one record must not stop the device's commands
            log.exception("command %s[%d] offset %d could not be handled; skipped", self.topic,
                          partition, msg.offset)
        finally:
            store.handling(None)
        store.save_position(self.topic, partition, msg.offset + 1)
