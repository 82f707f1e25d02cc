"""The local fleet blocklist: what verdicts and tombstones do to it, what is refused, and that it
survives a restart (the broker may be unreachable when the agent starts again)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from enforcement_support import DEVICE, T0, Clock, FakeReporter, verdict

from agents.blocklist import Blocklist, Change
from agents.verdict_follower import AppliedVerdict, VerdictFollower, VerdictHandler, VerdictRecord
from schemas.actions import ActionKind, Outcome
from schemas.codec import encode
from schemas.signing import Keyring, SigningKey
from schemas.verdicts import Disposition, Verdict

TOPIC = "t.verdicts"
SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


class Rig:
    """A handler over a blocklist file, with a recording reporter and a settable clock."""

    def __init__(self, path: Path | None, key: SigningKey, group: str | None = "default") -> None:
        self.path, self.key, self.group = path, key, group
        self.clock = Clock(T0 + timedelta(seconds=2))
        self.reporter = FakeReporter()
        self.applied: list[AppliedVerdict] = []
        self.offset = 0
        self.open()

    def open(self) -> None:
        self.blocklist = Blocklist(self.path, TOPIC)
        self.handler = VerdictHandler(
            device_id=DEVICE, group=self.group, blocklist=self.blocklist,
            keyring=Keyring.of([self.key.trusted()]), reporter=self.reporter,
            clock=self.clock, on_applied=[self.applied.append],
        )

    def restart(self) -> None:
        self.blocklist.close()
        self.open()

    def send(self, value: Verdict | None, key: str | None = None,
             partition: int = 0) -> AppliedVerdict | None:
        record_key = key if key is not None else (value.artifact_id if value is not None else None)
        record = VerdictRecord(partition, self.offset, record_key.encode() if record_key else None,
                               encode(value) if value is not None else None, timestamp_ms=1)
        self.offset += 1
        return self.handler.handle(record)


@pytest.fixture
def rig(tmp_path: Path, key: SigningKey) -> Rig:
    return Rig(tmp_path / "state" / "blocklist.db", key)


def test_malicious_verdict_blocks_and_is_reported(rig: Rig) -> None:
    applied = rig.send(verdict(SHA_A, rig.key))
    assert applied is not None and applied.change is Change.BLOCKED and applied.blocked
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is not None
    assert rig.blocklist.blocking(SHA_B, rig.clock()) is None
    [report] = rig.reporter.of(ActionKind.APPLY_VERDICT, Outcome.SUCCEEDED)
    assert report.artifact_id == SHA_A and report.device_id == DEVICE
    assert report.latency_ms == pytest.approx(2000.0)  # issued at T0, applied 2 s later


def test_upper_case_hash_in_an_event_still_matches(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    assert rig.blocklist.blocking(SHA_A.upper(), rig.clock()) is not None


def test_callbacks_get_the_apply_time_from_the_injected_clock(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    [applied] = rig.applied
    assert applied.applied_at == rig.clock() and applied.offset == 0 and applied.record_ts_ms == 1


def test_persisted_list_still_blocks_after_restart(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    rig.send(verdict(SHA_B, rig.key), partition=1)
    rig.blocklist.commit()
    rig.restart()  # no broker involved: the list comes from disk alone
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is not None
    assert rig.blocklist.blocking(SHA_B, rig.clock()) is not None
    assert rig.blocklist.positions == {0: 1, 1: 2}
    assert rig.blocklist.version == 3


def test_uncommitted_changes_are_not_on_disk(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    rig.blocklist._db.close()  # type: ignore[union-attr]  # a crash: no commit, no close
    rig.blocklist._db = None
    rig.open()
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is None
    assert rig.blocklist.positions == {}  # so the record is read (and applied) again


def test_tombstone_unblocks_and_persists(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    applied = rig.send(None, key=SHA_A)
    assert applied is not None and applied.change is Change.UNBLOCKED and not applied.blocked
    rig.blocklist.commit()
    rig.restart()
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is None
    assert len(rig.reporter.of(ActionKind.APPLY_VERDICT, Outcome.SUCCEEDED)) == 2


@pytest.mark.parametrize("disposition", [Disposition.LIFTED, Disposition.CLEAN, Disposition.SUSPICIOUS])
def test_non_blocking_verdict_replaces_a_block(rig: Rig, disposition: Disposition) -> None:
    rig.send(verdict(SHA_A, rig.key))
    applied = rig.send(verdict(SHA_A, rig.key, disposition=disposition))
    assert applied is not None and applied.change is Change.UNBLOCKED
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is None


def test_verdict_expiring_later_stops_blocking_then(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key, expires_at=T0 + timedelta(minutes=10)))
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is not None
    assert rig.blocklist.blocking(SHA_A, T0 + timedelta(minutes=10)) is None


def test_expired_verdict_is_refused_and_changes_nothing(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    rig.clock.advance(timedelta(days=2))
    stale = verdict(SHA_B, rig.key, issued_at=T0, expires_at=T0 + timedelta(days=1))
    assert rig.send(stale) is None
    assert rig.blocklist.blocking(SHA_B, rig.clock()) is None
    [refused] = rig.reporter.of(ActionKind.APPLY_VERDICT, Outcome.REFUSED)
    assert refused.error_class == "Expired" and refused.artifact_id == SHA_B
    assert rig.blocklist.positions == {0: 2}  # refused records are not read again


def test_forged_verdict_is_refused_reported_and_never_applied(rig: Rig) -> None:
    forger = SigningKey.generate(key_id=rig.key.key_id)  # claims the fleet's key id
    assert rig.send(verdict(SHA_A, forger)) is None
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is None
    [refused] = rig.reporter.of(ActionKind.APPLY_VERDICT, Outcome.REFUSED)
    assert refused.error_class == "SignatureError" and "does not verify" in refused.reason


def test_forged_lift_cannot_unblock(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    rig.send(verdict(SHA_A, SigningKey.generate(), disposition=Disposition.LIFTED))
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is not None
    [refused] = rig.reporter.of(ActionKind.APPLY_VERDICT, Outcome.REFUSED)
    assert refused.error_class == "UnknownKey"


def test_unsigned_and_undecodable_records_are_refused(rig: Rig) -> None:
    assert rig.send(verdict(SHA_A, None)) is None
    record = VerdictRecord(0, 99, SHA_B.encode(), b'{"not": "a verdict"', timestamp_ms=1)
    assert rig.handler.handle(record) is None
    classes = [r.error_class for r in rig.reporter.of(ActionKind.APPLY_VERDICT, Outcome.REFUSED)]
    assert classes == ["SignatureError", "DecodeError"]
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is None and rig.blocklist.positions == {0: 100}


def test_verdict_under_another_key_is_refused(rig: Rig) -> None:
    assert rig.send(verdict(SHA_A, rig.key), key=SHA_B) is None
    assert len(rig.blocklist) == 0
    [refused] = rig.reporter.of(ActionKind.APPLY_VERDICT, Outcome.REFUSED)
    assert "record key" in refused.reason


def test_tombstone_with_a_bad_key_is_refused(rig: Rig) -> None:
    assert rig.send(None, key="not-a-hash") is None
    assert rig.reporter.of(ActionKind.APPLY_VERDICT, Outcome.REFUSED)[0].error_class == "ValidationFailed"


def test_scope_other_group_or_device_does_not_block_here(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key, scope="group:finance"))
    rig.send(verdict(SHA_B, rig.key, scope="device:someone-else"))
    assert len(rig.blocklist) == 0
    assert rig.reporter.results == []  # not ours: nothing applied, nothing to report
    rig.send(verdict(SHA_A, rig.key, scope="group:default"))
    rig.send(verdict(SHA_B, rig.key, scope=f"device:{DEVICE}"))
    assert {entry.artifact_id for entry in rig.blocklist} == {SHA_A, SHA_B}


def test_newer_verdict_out_of_scope_lifts_our_block(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    applied = rig.send(verdict(SHA_A, rig.key, scope="group:finance"))
    assert applied is not None and applied.change is Change.UNBLOCKED
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is None


def test_reapplying_the_same_verdict_is_unchanged_and_not_reported_twice(rig: Rig) -> None:
    same = verdict(SHA_A, rig.key)
    rig.send(same)
    applied = rig.send(same)
    assert applied is not None and applied.change is Change.UNCHANGED
    assert len(rig.reporter.of(ActionKind.APPLY_VERDICT)) == 1


def test_resync_drops_entries_the_topic_no_longer_confirms(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    rig.send(verdict(SHA_B, rig.key))
    rig.blocklist.begin_resync()
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is not None  # keeps blocking while re-reading
    rig.offset = 0
    rig.send(verdict(SHA_A, rig.key))
    assert rig.blocklist.caught_up(rig.clock()) == [SHA_B]
    assert [entry.artifact_id for entry in rig.blocklist] == [SHA_A]


def test_positions_of_another_topic_trigger_a_resync(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "blocklist.db"
    first = Rig(path, key)
    first.send(verdict(SHA_A, key))
    first.blocklist.close()
    moved = Blocklist(path, "t.other-verdicts")
    assert moved.positions == {} and moved.resyncing
    assert moved.blocking(SHA_A, T0) is not None


def test_damaged_row_is_skipped_and_the_rest_still_blocks(rig: Rig) -> None:
    rig.send(verdict(SHA_A, rig.key))
    rig.send(verdict(SHA_B, rig.key))
    rig.blocklist.close()
    assert rig.path is not None
    with sqlite3.connect(rig.path) as db:
        db.execute("UPDATE entries SET verdict = ? WHERE artifact_id = ?", (b"garbage", SHA_B))
    rig.open()
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is not None
    assert rig.blocklist.get(SHA_B) is None


def test_in_memory_list_needs_no_disk(key: SigningKey) -> None:
    rig = Rig(None, key)
    rig.send(verdict(SHA_A, key))
    rig.blocklist.commit()
    assert rig.blocklist.blocking(SHA_A, rig.clock()) is not None


# -- the follower shell, with a fake consumer ----------------------------------------------------

@dataclass
class Msg:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


class FakeClient:
    async def add_topic(self, topic: str) -> None:
        return None


class FakeConsumer:
    """Enough of AIOKafkaConsumer for the follower: one topic, records per partition, positions."""

    def __init__(self, log: dict[int, list[Msg]]) -> None:
        self.log = log
        self._client = FakeClient()
        self.seeks: dict[int, int | str] = {}
        self.position_of: dict[int, int] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.log)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp.partition] = offset
        self.position_of[tp.partition] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.seeks[tp.partition] = "beginning"
            self.position_of[tp.partition] = 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.log[tp.partition]) for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.position_of[tp.partition]

    async def getmany(self, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Msg]]:
        batch = {}
        for partition, msgs in self.log.items():
            fresh = [m for m in msgs if m.offset >= self.position_of[partition]]
            if fresh:
                batch[TopicPartition(TOPIC, partition)] = fresh
                self.position_of[partition] = fresh[-1].offset + 1
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)
        return batch


def msg(offset: int, value: Verdict | None, key: str | None = None) -> Msg:
    record_key = key or (value.artifact_id if value is not None else None)
    return Msg(offset, record_key.encode() if record_key else None,
               encode(value) if value is not None else None)


async def follow_until_caught_up(rig: Rig, consumer: FakeConsumer, **options: Any) -> VerdictFollower:
    follower = VerdictFollower(rig.handler, lambda: consumer, TOPIC, clock=rig.clock, fetch_timeout_ms=10,
                               **options)
    task = asyncio.create_task(follower.run())
    try:
        await asyncio.wait_for(follower.caught_up.wait(), 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return follower


async def test_follower_reads_from_the_beginning_then_from_saved_offsets(rig: Rig) -> None:
    log = {0: [msg(0, verdict(SHA_A, rig.key)), msg(1, None, key=SHA_A)],
           1: [msg(0, verdict(SHA_B, rig.key))]}
    first = FakeConsumer(log)
    follower = await follow_until_caught_up(rig, first)
    assert first.seeks == {0: "beginning", 1: "beginning"}
    assert [entry.artifact_id for entry in rig.blocklist] == [SHA_B] and rig.blocklist.version == 3
    assert follower.caught_up_at == rig.clock()

    rig.restart()
    log[0].append(msg(2, verdict(SHA_A, rig.key)))
    second = FakeConsumer(log)
    await follow_until_caught_up(rig, second)
    assert second.seeks == {0: 2, 1: 1}  # resumes where the saved list ends: nothing re-applied
    assert {entry.artifact_id for entry in rig.blocklist} == {SHA_A, SHA_B}
    assert len(rig.reporter.of(ActionKind.APPLY_VERDICT)) == 4  # each record reported once


async def test_follower_catches_up_at_once_on_an_empty_topic(rig: Rig) -> None:
    await follow_until_caught_up(rig, FakeConsumer({0: [], 1: []}))
    assert rig.blocklist.last_caught_up_at == rig.clock()


async def test_long_absence_rereads_the_topic_and_drops_what_it_no_longer_lists(rig: Rig) -> None:
    log = {0: [msg(0, verdict(SHA_A, rig.key)), msg(1, verdict(SHA_B, rig.key))]}
    await follow_until_caught_up(rig, FakeConsumer(log))
    # While we were away for 40 days, B was lifted and its tombstone compacted away: only A remains.
    rig.clock.advance(timedelta(days=40))
    compacted = {0: [msg(0, verdict(SHA_A, rig.key))]}
    consumer = FakeConsumer(compacted)
    await follow_until_caught_up(rig, consumer, max_offline=timedelta(days=25))
    assert consumer.seeks == {0: "beginning"}
    assert [entry.artifact_id for entry in rig.blocklist] == [SHA_A]
    last = rig.reporter.results[-1]
    assert last.artifact_id == SHA_B and "resync" in last.reason and last.outcome is Outcome.SUCCEEDED


async def test_a_record_that_breaks_the_handler_is_skipped_not_retried(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = rig.handler.handle

    def flaky(record: VerdictRecord) -> AppliedVerdict | None:
        calls.append(record.offset)
        if record.offset == 0:
            raise RuntimeError("bug")
        return real(record)

    monkeypatch.setattr(rig.handler, "handle", flaky)
    log = {0: [msg(0, verdict(SHA_A, rig.key)), msg(1, verdict(SHA_B, rig.key))]}
    await follow_until_caught_up(rig, FakeConsumer(log))
    assert calls == [0, 1] and rig.blocklist.positions == {0: 2}
    assert [entry.artifact_id for entry in rig.blocklist] == [SHA_B]


class VanishingConsumer(FakeConsumer):
    """The topic is deleted after the first fetch: metadata stops listing it."""

    def __init__(self, log: dict[int, list[Msg]]) -> None:
        super().__init__(log)
        self.fetches = 0
        self.stopped = False

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.log) if self.fetches == 0 else set()

    async def getmany(self, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Msg]]:
        self.fetches += 1
        return await super().getmany(timeout_ms=0, max_records=max_records)  # as aiokafka: at once

    async def stop(self) -> None:
        self.stopped = True


async def test_a_deleted_verdict_topic_stops_the_consumer_and_backs_off_instead_of_spinning(rig: Rig) -> None:
    consumers: list[VanishingConsumer] = []

    def factory() -> VanishingConsumer:
        consumers.append(VanishingConsumer({0: [msg(0, verdict(SHA_A, rig.key))]}))
        return consumers[-1]

    follower = VerdictFollower(rig.handler, factory, TOPIC, clock=rig.clock, fetch_timeout_ms=10,
                               backoff_initial_s=0.2, backoff_max_s=0.2)
    task = asyncio.create_task(follower.run())
    await asyncio.sleep(0.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [entry.artifact_id for entry in rig.blocklist] == [SHA_A]  # what it read before still blocks
    assert consumers[0].fetches == 1 and consumers[0].stopped  # no fetch loop on a missing topic
    assert 2 <= len(consumers) <= 4  # reconnects paced by the backoff, not as fast as it can
