"""The enforcement mode follows signed group/device switches: a signed audit->block switch makes a
blocklisted process die, while forged, unsigned, mislabelled, replayed and tombstoned switches are
refused and reported; the mode survives a restart; the follower reads the policy topic from a fake
consumer and resumes where it stopped."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from enforcement_support import (
    DEVICE,
    T0,
    Clock,
    FakeReporter,
    alive,
    private_sleep,
    spawn,
    start_event,
    verdict,
)

from agents.blocklist import Blocklist
from agents.enforcer import Enforcer
from agents.mode_follower import ModeFollower, ModeHandler, ModeStore, effective_mode
from agents.proctree import protected_pids
from agents.quarantine import Quarantine
from agents.verdict_follower import VerdictHandler, VerdictRecord
from schemas.actions import ActionKind, Outcome
from schemas.codec import decode, encode
from schemas.common import Mode
from schemas.policy_updates import (
    DeviceModeChange,
    ExclusionChange,
    ExclusionMatch,
    GroupModeChange,
    PolicyUpdate,
)
from schemas.signing import Keyring, SigningKey, sign_policy_update

GROUP = "lab"
TOPIC = "t.policy"


def update(key: SigningKey | None, change: GroupModeChange | DeviceModeChange | ExclusionChange, *,
           issued_at: datetime = T0) -> PolicyUpdate:
    made = PolicyUpdate(update_id=secrets.token_hex(8), change=change, actor="alice", reason="drill",
                        issued_at=issued_at)
    return sign_policy_update(made, key) if key is not None else made


def group(mode: Mode, name: str = GROUP) -> GroupModeChange:
    return GroupModeChange(group=name, mode=mode)


def device(mode: Mode | None, device_id: str = DEVICE) -> DeviceModeChange:
    return DeviceModeChange(device_id=device_id, mode=mode)


class Rig:
    def __init__(self, tmp_path: Path, key: SigningKey, clock: Clock | None = None) -> None:
        self.key, self.path = key, tmp_path / "state" / "mode.db"
        self.reporter = FakeReporter()
        self.clock = clock or Clock(T0 + timedelta(minutes=1))
        self.switches: list[Mode] = []
        self.handler = self.new_handler()

    def new_handler(self) -> ModeHandler:
        return ModeHandler(device_id=DEVICE, group=GROUP, default=Mode.AUDIT,
                           keyring=Keyring.of([self.key.trusted()]), store=ModeStore(self.path),
                           reporter=self.reporter, clock=self.clock,
                           on_switch=lambda mode, _since: self.switches.append(mode))

    def feed(self, made: PolicyUpdate, key: str | None = None) -> Any:
        return self.handler.handle((key or made.key).encode(), encode(made))

    def refusals(self) -> list[str]:
        return [r.error_class or "" for r in self.reporter.of(ActionKind.SET_MODE, Outcome.REFUSED)]


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def rig(tmp_path: Path, key: SigningKey) -> Rig:
    return Rig(tmp_path, key)



def test_a_signed_group_switch_changes_the_mode_and_is_reported(rig: Rig) -> None:
    assert rig.handler.current().mode is Mode.AUDIT and rig.handler.current().source == "config"
    applied = rig.feed(update(rig.key, group(Mode.BLOCK)))
    assert applied is not None and applied.mode is Mode.BLOCK and applied.source == f"group_mode:{GROUP}"
    assert rig.switches == [Mode.BLOCK]
    [report] = rig.reporter.of(ActionKind.SET_MODE, Outcome.SUCCEEDED)
    assert report.device_id == DEVICE and "mode audit -> block (switched" in report.reason
    assert "by alice" in report.reason and report.latency_ms == pytest.approx(60_000)


def test_forged_unsigned_mislabelled_and_tombstoned_switches_change_nothing(rig: Rig) -> None:
    forger = SigningKey.generate(key_id=rig.key.key_id)  # same key id, another private key
    rig.feed(update(forger, group(Mode.BLOCK)))
    rig.feed(update(None, group(Mode.BLOCK)))
    rig.feed(update(rig.key, group(Mode.BLOCK, name="other")), key=f"group_mode:{GROUP}")
    rig.feed(update(SigningKey.generate(), group(Mode.BLOCK)))  # a key this device does not trust
    assert rig.handler.handle(f"group_mode:{GROUP}".encode(), None) is None
    assert rig.handler.handle(f"device_mode:{DEVICE}".encode(), b"{not json") is None
    assert rig.refusals() == ["SignatureError", "SignatureError", "ValidationFailed", "UnknownKey",
                              "ValidationFailed", "DecodeError"]
    assert rig.handler.current().mode is Mode.AUDIT and rig.switches == [] and rig.handler.refused == 6


def test_a_block_device_cannot_be_forged_back_to_audit(rig: Rig) -> None:
    rig.feed(update(rig.key, group(Mode.BLOCK)))
    forger = SigningKey.generate(key_id=rig.key.key_id)
    rig.feed(update(forger, device(Mode.AUDIT), issued_at=T0 + timedelta(seconds=1)))
    rig.feed(update(None, group(Mode.AUDIT), issued_at=T0 + timedelta(seconds=2)))
    assert rig.handler.current().mode is Mode.BLOCK and rig.switches == [Mode.BLOCK]


def test_an_older_signed_update_is_a_refused_replay_and_a_reread_is_silent(rig: Rig) -> None:
    old = update(rig.key, group(Mode.AUDIT))
    new = update(rig.key, group(Mode.BLOCK), issued_at=T0 + timedelta(seconds=5))
    rig.feed(old)
    rig.feed(new)
    rig.feed(new)  # read again after a crash before the position was saved: nothing new
    rig.feed(old)  # someone writes the old (genuinely signed) audit switch again
    assert rig.handler.current().mode is Mode.BLOCK and rig.refusals() == ["Replayed"]
    assert len(rig.reporter.of(ActionKind.SET_MODE, Outcome.SUCCEEDED)) == 2


def test_a_switch_issued_in_the_future_is_refused(rig: Rig) -> None:
    rig.feed(update(rig.key, group(Mode.BLOCK), issued_at=rig.clock.now + timedelta(hours=1)))
    assert rig.refusals() == ["Expired"] and rig.handler.current().mode is Mode.AUDIT


def test_the_device_override_wins_and_clearing_it_returns_to_the_group(rig: Rig) -> None:
    rig.feed(update(rig.key, device(Mode.BLOCK)))
    rig.feed(update(rig.key, group(Mode.AUDIT), issued_at=T0 + timedelta(seconds=1)))
    assert rig.handler.current().mode is Mode.BLOCK  # the group's audit does not undo the override
    assert "stays" in rig.reporter.results[-1].reason
    rig.feed(update(rig.key, device(None), issued_at=T0 + timedelta(seconds=2)))
    assert rig.handler.current().mode is Mode.AUDIT and rig.switches == [Mode.BLOCK, Mode.AUDIT]


def test_other_groups_devices_and_exclusions_are_not_this_devices_business(rig: Rig) -> None:
    exclusion = ExclusionChange(exclusion_id="x1", match=ExclusionMatch.HASH, pattern="a" * 64, scope="fleet")
    for made in (update(rig.key, group(Mode.BLOCK, "other")), update(None, device(Mode.AUDIT, "dev-2")),
                 update(None, exclusion)):
        assert not rig.handler.is_mine(made.key.encode())
    assert rig.handler.is_mine(f"group_mode:{GROUP}".encode()) and not rig.handler.is_mine(None)


def test_the_mode_survives_a_restart(tmp_path: Path, rig: Rig) -> None:
    rig.feed(update(rig.key, group(Mode.BLOCK)))
    rig.handler.store.close()
    again = Rig(tmp_path, rig.key)
    assert again.handler.current().mode is Mode.BLOCK and again.handler.current().update is not None


def test_effective_mode_precedence() -> None:
    key = SigningKey.generate()
    g, d = update(key, group(Mode.BLOCK)), update(key, device(Mode.AUDIT))
    assert effective_mode(Mode.AUDIT, None, None).source == "config"
    assert effective_mode(Mode.AUDIT, g, None).mode is Mode.BLOCK
    assert effective_mode(Mode.BLOCK, g, d).mode is Mode.AUDIT
    assert effective_mode(Mode.AUDIT, g, update(key, device(None))).mode is Mode.BLOCK


# -- with the enforcer: a switch to block kills ----------------------------------------------------


async def test_switch_to_block_kills_running_and_new_blocklisted_processes(
    tmp_path: Path, key: SigningKey, procs: list[Popen[bytes]]
) -> None:
    rig = Rig(tmp_path, key, Clock(datetime.now(UTC)))
    reporter = rig.reporter
    blocklist = Blocklist(None, "t.verdicts")
    enforcer = Enforcer(device_id=DEVICE, mode=rig.handler.current().mode, blocklist=blocklist,
                        reporter=reporter, quarantine=Quarantine(tmp_path / "q"), protected=protected_pids())
    rig.handler.on_switch = enforcer.set_mode
    verdicts = VerdictHandler(device_id=DEVICE, group=GROUP, blocklist=blocklist,
                              keyring=Keyring.of([key.trusted()]), reporter=reporter,
                              on_applied=[enforcer.on_verdict_applied])
    image, sha = private_sleep(tmp_path)
    signed = verdict(sha, key, issued_at=datetime.now(UTC))
    verdicts.handle(VerdictRecord(0, 0, sha.encode(), encode(signed), timestamp_ms=0))
    running = spawn(str(image), "60")
    procs.append(running)
    runner = asyncio.create_task(enforcer.run())
    try:
        enforcer.observe(start_event(running, image, sha))
        await _until(lambda: len(reporter.of(ActionKind.BLOCK_EXECUTION, Outcome.AUDITED)) == 1)
        assert alive(running.pid)  # audit: reported, not killed

        rig.feed(update(key, group(Mode.BLOCK), issued_at=datetime.now(UTC)))
        assert enforcer.mode is Mode.BLOCK
        await _until(lambda: running.poll() is not None)
        assert running.wait(timeout=5) == -9  # the one that ran through audit mode is swept
        started = spawn(str(image), "60")
        procs.append(started)
        enforcer.observe(start_event(started, image, sha))
        await _until(lambda: started.poll() is not None)
        assert started.wait(timeout=5) == -9
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    swept = reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)
    assert [r.pid for r in swept] == [running.pid] and "switched to block" in swept[0].reason


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# -- the follower over a fake consumer -------------------------------------------------------------


class Msg:
    def __init__(self, offset: int, key: str | None, value: bytes | None) -> None:
        self.offset, self.key, self.value, self.timestamp = offset, key.encode() if key else None, value, 0


class FakeConsumer:
    """One partition of a policy topic; `getmany` hands out what is past the position."""

    def __init__(self, records: list[Msg]) -> None:
        self.records, self.position_ = records, 0
        self._client = self

    async def add_topic(self, topic: str) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def assign(self, partitions: list[TopicPartition]) -> None:
        return None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position_ = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.position_ = 0

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.records) for tp in partitions}

    async def position(self, tp: TopicPartition) -> int:
        return self.position_

    async def getmany(self, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Msg]]:
        batch = self.records[self.position_:]
        self.position_ = len(self.records)
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)
        return {TopicPartition(TOPIC, 0): batch} if batch else {}


async def test_the_follower_applies_its_records_and_resumes_after_them(rig: Rig) -> None:
    records = [
        Msg(0, "group_mode:other", encode(update(rig.key, group(Mode.BLOCK, "other")))),
        Msg(1, f"group_mode:{GROUP}", encode(update(rig.key, group(Mode.BLOCK)))),
        Msg(2, f"device_mode:{DEVICE}", encode(update(None, device(Mode.AUDIT)))),
    ]
    consumers: list[FakeConsumer] = []

    def factory() -> FakeConsumer:
        consumers.append(FakeConsumer(records))
        return consumers[-1]

    for _ in range(2):  # the second run is a restart: it starts after offset 2, nothing is re-applied
        follower = ModeFollower(rig.handler, factory, TOPIC, fetch_timeout_ms=10)
        task = asyncio.create_task(follower.run())
        await asyncio.wait_for(follower.caught_up.wait(), 5)
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert rig.handler.current().mode is Mode.BLOCK and rig.refusals() == ["SignatureError"]
    assert len(rig.reporter.of(ActionKind.SET_MODE, Outcome.SUCCEEDED)) == 1
    assert consumers[1].position_ == 3 and rig.handler.store.positions(follower.scope) == {0: 3}


def test_the_consoles_group_switch_is_signed_and_the_agent_follows_it(rig: Rig) -> None:
    from pipeline.soc import actions
    from pipeline.soc.settings import ConsoleTopics

    request = actions.GroupModeRequest(mode=Mode.BLOCK, reason="incident 42")
    now, topics = rig.clock.now, ConsoleTopics.with_prefix("")
    signed = actions.set_group_mode(GROUP, request, actor="alice", now=now, topics=topics, key=rig.key)
    stripped = decode(PolicyUpdate, signed.value).model_copy(update={"key_id": None, "signature": None})
    assert rig.handler.handle(signed.key.encode(), encode(stripped)) is None  # the same switch, unsigned
    applied = rig.handler.handle(signed.key.encode(), signed.value)
    assert applied is not None and applied.mode is Mode.BLOCK and rig.refusals() == ["SignatureError"]


def test_the_enrollment_override_wins_over_the_group_as_in_the_fleet_service(rig: Rig) -> None:
    key = rig.key
    assert effective_mode(Mode.BLOCK, None, None, Mode.AUDIT).source == "enrollment"
    assert effective_mode(Mode.AUDIT, update(key, group(Mode.BLOCK)), None, Mode.AUDIT).mode is Mode.AUDIT
    assert effective_mode(Mode.BLOCK, update(key, group(Mode.BLOCK)), update(key, device(Mode.AUDIT)),
                          Mode.BLOCK).mode is Mode.AUDIT  # a signed device switch beats the bundle


def test_the_plugin_starts_in_the_saved_mode_and_tells_the_heartbeat_about_a_switch(
    tmp_path: Path, key: SigningKey
) -> None:
    from types import SimpleNamespace

    from agents.enforcement_plugin import EnforcementPlugin
    from agents.settings import AgentSettings
    from schemas.topics import KafkaSettings

    settings = AgentSettings(device_id=DEVICE, group=GROUP, mode="audit", state_dir=tmp_path / "state",
                             quarantine_dir=tmp_path / "q")
    offline = KafkaSettings(bootstrap="127.0.0.1:1")
    plugin = EnforcementPlugin(settings, offline, keyring=Keyring.of([key.trusted()]))
    context = SimpleNamespace(blocklist_version=0, blocklist_size=0, mode=None)
    plugin._context = context  # type: ignore[assignment]  # what run() sets
    switch = update(key, group(Mode.BLOCK), issued_at=datetime.now(UTC))
    plugin.modes.handler.handle(switch.key.encode(), encode(switch))
    assert plugin.enforcer.mode is Mode.BLOCK and context.mode == "block"
    for store in (plugin.mode_store, plugin.blocklist, plugin.store):
        store.close()

    again = EnforcementPlugin(settings, offline, keyring=Keyring.of([key.trusted()]))
    assert again.enforcer.mode is Mode.BLOCK  # from mode.db, before any network
    for store in (again.mode_store, again.blocklist, again.store):
        store.close()


async def test_an_agent_starting_in_block_mode_sweeps_files_blocked_before_it_started(
    tmp_path: Path, key: SigningKey, procs: list[Popen[bytes]]
) -> None:
    """A blocked file started while the agent was down (no process_start seen, no new verdict) is
    killed by the start-up sweep; in audit mode, and with an empty blocklist, nothing is queued."""
    blocklist = Blocklist(None, "t.verdicts")
    reporter = FakeReporter()
    image, sha = private_sleep(tmp_path)
    signed = encode(verdict(sha, key, issued_at=datetime.now(UTC)))
    VerdictHandler(device_id=DEVICE, group=GROUP, blocklist=blocklist, keyring=Keyring.of([key.trusted()]),
                   reporter=reporter).handle(VerdictRecord(0, 0, sha.encode(), signed, timestamp_ms=0))
    running = spawn(str(image), "60")  # started "while the agent was down"
    procs.append(running)

    def enforcer(mode: Mode, listed: Blocklist) -> Enforcer:
        return Enforcer(device_id=DEVICE, mode=mode, blocklist=listed, reporter=reporter,
                        quarantine=Quarantine(tmp_path / "q"), protected=protected_pids())

    assert not enforcer(Mode.AUDIT, blocklist).sweep_saved_blocklist(datetime.now(UTC))
    assert not enforcer(Mode.BLOCK, Blocklist(None, "t.verdicts")).sweep_saved_blocklist(datetime.now(UTC))
    blocking = enforcer(Mode.BLOCK, blocklist)
    assert blocking.sweep_saved_blocklist(datetime.now(UTC))
    runner = asyncio.create_task(blocking.run())
    try:  # the kill is reported once the process is gone: wait for the report, not only the death
        await _until(lambda: bool(reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)))
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    assert running.wait(timeout=5) == -9
    swept = reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)
    assert [r.pid for r in swept] == [running.pid] and "before the agent started" in swept[0].reason


async def test_the_plugin_sweeps_its_saved_blocklist_when_it_starts_in_block_mode(
    tmp_path: Path, key: SigningKey, procs: list[Popen[bytes]]
) -> None:
    from agents.enforcement_plugin import EnforcementPlugin
    from agents.settings import AgentSettings
    from schemas.topics import KafkaSettings

    settings = AgentSettings(device_id=DEVICE, group=GROUP, mode="block", state_dir=tmp_path / "state",
                             quarantine_dir=tmp_path / "q")
    offline = KafkaSettings(bootstrap="127.0.0.1:1")
    image, sha = private_sleep(tmp_path)
    first = EnforcementPlugin(settings, offline, keyring=Keyring.of([key.trusted()]), reporter=FakeReporter())
    signed = encode(verdict(sha, key, issued_at=datetime.now(UTC)))
    first.verdicts.handler.handle(VerdictRecord(0, 0, sha.encode(), signed, timestamp_ms=0))
    for store in (first.mode_store, first.blocklist, first.store):
        store.close()
    running = spawn(str(image), "60")  # the blocked file, started while no agent ran
    procs.append(running)

    reporter = FakeReporter()
    again = EnforcementPlugin(settings, offline, keyring=Keyring.of([key.trusted()]), reporter=reporter)
    serving = asyncio.create_task(again.serve())
    try:  # the kill is reported once the process is gone: wait for the report, not only the death
        await _until(lambda: bool(reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)))
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await serving
    assert running.wait(timeout=5) == -9
    assert [r.pid for r in reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)] == [running.pid]
