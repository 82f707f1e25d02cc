"""Enforcement against the real broker: a signed verdict on a (unique) verdict topic is applied by a
follower with no consumer group, and a binary started afterwards is killed as the live Linux source
reports its start; a forged command is refused and reported on the actions topic while a genuine
one runs; a restart with the broker unreachable still blocks from the saved list, and the results
of what it did offline are kept on disk and arrive once each when the broker is back; a signed
audit->block switch of the device's group on the policy topic makes it kill, a forged one is
refused and reported, and the switched mode survives an offline restart."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from enforcement_support import alive, command, private_sleep, spawn, start_event, verdict

from agents.action_outbox import ACTIONS_FILE, ActionOutbox
from agents.enforcement_plugin import EnforcementPlugin
from agents.linux.procfs import process_key_for
from agents.linux.source import LinuxLiveConfig, LinuxLiveSource
from agents.settings import AgentSettings
from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.codec import decode, encode
from schemas.commands import CommandAction
from schemas.common import Mode
from schemas.policy_updates import GroupModeChange, PolicyUpdate
from schemas.signing import Keyring, SigningKey, sign_policy_update
from schemas.topics import KafkaSettings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Topics:
    verdicts: str
    commands: str
    actions: str
    policy: str


@pytest.fixture
async def topics(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> AsyncIterator[Topics]:
    names = Topics(unique_name("it.verdicts"), unique_name("it.commands"), unique_name("it.actions"),
                   unique_name("it.policy"))
    specs = [NewTopic(names.verdicts, 3, 1, topic_configs={"cleanup.policy": "compact"}),
             NewTopic(names.commands, 3, 1), NewTopic(names.actions, 1, 1),
             NewTopic(names.policy, 1, 1, topic_configs={"cleanup.policy": "compact"})]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(specs)
        assert all(error == 0 for _, error, *_ in response.topic_errors), response.topic_errors
        yield names
        await admin.delete_topics([names.verdicts, names.commands, names.actions, names.policy])
    finally:
        await admin.close()


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()



def agent_settings(tmp_path: Path, topics: Topics, device_id: str, mode: str = "block",
                   group: str = "default") -> AgentSettings:
    return AgentSettings(
        device_id=device_id, mode=mode, group=group, state_dir=tmp_path / "state",
        quarantine_dir=tmp_path / "quarantine", verdicts_topic=topics.verdicts,
        commands_topic=topics.commands, actions_topic=topics.actions, policy_topic=topics.policy,
        spool_sync="normal",
    )


async def produce(bootstrap: str, topic: str, key: str, value: bytes | None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def wait_for_actions(bootstrap: str, topic: str, done: Callable[[list[ActionResult]], bool],
                           timeout_s: float = 20.0) -> list[ActionResult]:
    """Read the actions topic from the beginning until `done(results)` or the timeout."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    results: list[ActionResult] = []
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not done(results) and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            results += [decode(ActionResult, msg.value) for msgs in batch.values() for msg in msgs]
    finally:
        await consumer.stop()
    return results


@asynccontextmanager
async def running(plugin: EnforcementPlugin, *tasks: asyncio.Task[None]) -> AsyncIterator[None]:
    """Run the plugin (and helper tasks) for the body of the `async with`, then stop everything."""
    server = asyncio.create_task(plugin.serve())
    try:
        yield
    finally:
        for task in (*tasks, server):
            task.cancel()
        for task in (*tasks, server):
            with suppress(asyncio.CancelledError):
                await task


async def wait_exit(proc: Popen[bytes], timeout_s: float = 10.0) -> int | None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while proc.poll() is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return proc.poll()


async def test_verdict_from_the_topic_blocks_a_binary_started_afterwards(
    tmp_path: Path, topics: Topics, key: SigningKey, kafka_settings: KafkaSettings, procs: list[Popen[bytes]]
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    device = f"it-{uuid.uuid4().hex[:8]}"
    image, sha = private_sleep(tmp_path)
    await produce(bootstrap, topics.verdicts, sha, encode(verdict(sha, key, issued_at=datetime.now(UTC))))

    plugin = EnforcementPlugin(agent_settings(tmp_path, topics, device), kafka_settings,
                               keyring=Keyring.of([key.trusted()]))
    source = LinuxLiveSource(LinuxLiveConfig(device_id=device, net_enabled=False))

    async def pump() -> None:
        async for event in source.events():
            plugin.observe(event)

    async with running(plugin, asyncio.create_task(pump())):
        await asyncio.wait_for(plugin.verdicts.caught_up.wait(), 30)
        assert plugin.blocklist.blocking(sha, datetime.now(UTC)) is not None
        await asyncio.wait_for(source.ready.wait(), 10)
        proc = spawn(str(image), "60")
        procs.append(proc)
        assert await wait_exit(proc) == -9, "the blocklisted binary was not killed"

        results = await wait_for_actions(bootstrap, topics.actions, lambda rs: any(
            r.action is ActionKind.BLOCK_EXECUTION for r in rs))
    applied = [r for r in results if r.action is ActionKind.APPLY_VERDICT]
    blocked = [r for r in results if r.action is ActionKind.BLOCK_EXECUTION]
    assert [(r.outcome, r.artifact_id, r.device_id) for r in applied] == [(Outcome.SUCCEEDED, sha, device)]
    assert [(r.outcome, r.pid) for r in blocked] == [(Outcome.SUCCEEDED, proc.pid)]
    assert blocked[0].latency_ms is not None and blocked[0].latency_ms < 10_000
    assert plugin.blocklist.version == 1  # one verdict-topic record consumed


async def test_forged_command_is_refused_and_reported_while_a_genuine_one_runs(
    tmp_path: Path, topics: Topics, key: SigningKey, kafka_settings: KafkaSettings, procs: list[Popen[bytes]]
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    device = f"it-{uuid.uuid4().hex[:8]}"
    spared, doomed = spawn("sleep", "60"), spawn("sleep", "60")
    procs += [spared, doomed]
    forger = SigningKey.generate(key_id=key.key_id)
    now = datetime.now(UTC)
    forged = command(forger, CommandAction.KILL_PROCESS_TREE, device_id=device, now=now,
                     process_key=process_key_for(spared.pid, device), pid=spared.pid)
    genuine = command(key, CommandAction.KILL_PROCESS_TREE, device_id=device, now=now,
                      process_key=process_key_for(doomed.pid, device), pid=doomed.pid)
    other_device = command(key, CommandAction.KILL_PROCESS_TREE, device_id="someone-else", now=now,
                           process_key=process_key_for(spared.pid, "someone-else"), pid=spared.pid)
    await produce(bootstrap, topics.commands, device, encode(forged))
    await produce(bootstrap, topics.commands, "someone-else", encode(other_device))
    await produce(bootstrap, topics.commands, device, encode(genuine))

    plugin = EnforcementPlugin(agent_settings(tmp_path, topics, device), kafka_settings,
                               keyring=Keyring.of([key.trusted()]))
    async with running(plugin):
        results = await wait_for_actions(bootstrap, topics.actions, lambda rs: len(rs) >= 2)
        assert await wait_exit(doomed) == -9
    by_command = {r.command_id: r for r in results}
    assert set(by_command) == {forged.command_id, genuine.command_id}  # another device's is not ours
    refused = by_command[forged.command_id]
    assert refused.outcome is Outcome.REFUSED and refused.error_class == "SignatureError"
    assert refused.device_id == device and refused.action is ActionKind.KILL_PROCESS_TREE
    assert by_command[genuine.command_id].outcome is Outcome.SUCCEEDED
    assert alive(spared.pid)

    # A restart resumes after what it handled: no command runs or is reported twice.
    again = EnforcementPlugin(agent_settings(tmp_path, topics, device), kafka_settings,
                              keyring=Keyring.of([key.trusted()]))
    async with running(again):
        await asyncio.wait_for(again.commands.caught_up.wait(), 30)
        later = await wait_for_actions(bootstrap, topics.actions, lambda rs: len(rs) > 2, timeout_s=2)
    assert len(later) == 2 and again.commands.handler.refused == 0


async def test_restart_with_the_broker_unreachable_still_blocks(
    tmp_path: Path, topics: Topics, key: SigningKey, kafka_settings: KafkaSettings, procs: list[Popen[bytes]]
) -> None:
    device = f"it-{uuid.uuid4().hex[:8]}"
    image, sha = private_sleep(tmp_path)
    await produce(kafka_settings.bootstrap_servers, topics.verdicts, sha,
                  encode(verdict(sha, key, issued_at=datetime.now(UTC))))
    settings = agent_settings(tmp_path, topics, device)
    first = EnforcementPlugin(settings, kafka_settings, keyring=Keyring.of([key.trusted()]))
    async with running(first):
        await asyncio.wait_for(first.verdicts.caught_up.wait(), 30)

    unreachable = kafka_settings.model_copy(update={"bootstrap": "127.0.0.1:1"})
    second = EnforcementPlugin(settings, unreachable, keyring=Keyring.of([key.trusted()]))
    async with running(second):
        proc = spawn(str(image), "60")
        procs.append(proc)
        second.observe(start_event(proc, image, sha, device_id=device))
        assert await wait_exit(proc) == -9
        assert not second.verdicts.connected and not second.verdicts.caught_up.is_set()


async def test_action_results_of_an_outage_survive_a_restart_and_arrive_once_each(
    tmp_path: Path, topics: Topics, key: SigningKey, kafka_settings: KafkaSettings, procs: list[Popen[bytes]]
) -> None:
    device = f"it-{uuid.uuid4().hex[:8]}"
    image, sha = private_sleep(tmp_path)
    await produce(kafka_settings.bootstrap_servers, topics.verdicts, sha,
                  encode(verdict(sha, key, issued_at=datetime.now(UTC))))
    settings = agent_settings(tmp_path, topics, device)
    keyring = Keyring.of([key.trusted()])
    first = EnforcementPlugin(settings, kafka_settings, keyring=keyring)
    async with running(first):
        await asyncio.wait_for(first.verdicts.caught_up.wait(), 30)
        assert await first.reporter.flush(10)  # type: ignore[attr-defined]

    unreachable = kafka_settings.model_copy(update={"bootstrap": "127.0.0.1:1"})
    offline = EnforcementPlugin(settings, unreachable, keyring=keyring)
    async with running(offline):
        for _ in range(3):
            proc = spawn(str(image), "60")
            procs.append(proc)
            offline.observe(start_event(proc, image, sha, device_id=device))
            assert await wait_exit(proc) == -9
        while offline.enforcer.stats.outcomes.get(Outcome.SUCCEEDED, 0) < 3:
            await asyncio.sleep(0.02)
    kept = ActionOutbox(tmp_path / "state" / ACTIONS_FILE)  # what a new process finds on disk
    waiting = {decode(ActionResult, p.value).result_id for p in kept.head()}
    kept.close()
    assert len(waiting) == 3  # the three kills, on disk while the broker was away

    back = EnforcementPlugin(settings, kafka_settings, keyring=keyring)
    async with running(back):
        results = await wait_for_actions(kafka_settings.bootstrap_servers, topics.actions,
                                         lambda rs: waiting <= {r.result_id for r in rs})
        assert await back.reporter.flush(10)  # type: ignore[attr-defined]
    counts = Counter(r.result_id for r in results)
    assert waiting <= set(counts) and set(counts.values()) == {1}  # every result once
    blocked = [r for r in results if r.action is ActionKind.BLOCK_EXECUTION]
    assert len(blocked) == 3 and {r.outcome for r in blocked} == {Outcome.SUCCEEDED}


def group_switch(key: SigningKey, group: str, mode: Mode) -> bytes:
    made = PolicyUpdate(update_id=uuid.uuid4().hex, change=GroupModeChange(group=group, mode=mode),
                        actor="alice", issued_at=datetime.now(UTC))
    return encode(sign_policy_update(made, key))


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_signed_group_switch_to_block_kills_and_a_forged_one_is_refused(
    tmp_path: Path, topics: Topics, key: SigningKey, kafka_settings: KafkaSettings, procs: list[Popen[bytes]]
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    device, group = f"it-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    image, sha = private_sleep(tmp_path)
    await produce(bootstrap, topics.verdicts, sha, encode(verdict(sha, key, issued_at=datetime.now(UTC))))
    forger = SigningKey.generate(key_id=key.key_id)
    await produce(bootstrap, topics.policy, f"group_mode:{group}", group_switch(forger, group, Mode.BLOCK))
    settings = agent_settings(tmp_path, topics, device, mode="audit", group=group)
    plugin = EnforcementPlugin(settings, kafka_settings, keyring=Keyring.of([key.trusted()]))
    async with running(plugin):
        await asyncio.wait_for(plugin.verdicts.caught_up.wait(), 30)
        await asyncio.wait_for(plugin.modes.caught_up.wait(), 30)
        assert plugin.enforcer.mode is Mode.AUDIT  # the forged switch changed nothing
        survivor = spawn(str(image), "60")
        procs.append(survivor)
        plugin.observe(start_event(survivor, image, sha, device_id=device))
        await until(lambda: plugin.enforcer.stats.audited >= 1)
        assert alive(survivor.pid)

        await produce(bootstrap, topics.policy, f"group_mode:{group}", group_switch(key, group, Mode.BLOCK))
        assert await wait_exit(survivor) == -9, "the switch to block did not kill the running binary"
        assert plugin.enforcer.mode is Mode.BLOCK
        # wait for both records asserted below: the kill's may be published after the mode's
        results = await wait_for_actions(bootstrap, topics.actions, lambda rs: any(
            r.action is ActionKind.SET_MODE and r.outcome is Outcome.SUCCEEDED for r in rs) and any(
            r.action is ActionKind.KILL_BLOCKED_INSTANCE and r.pid == survivor.pid for r in rs))
    modes = [(r.outcome, r.error_class) for r in results if r.action is ActionKind.SET_MODE]
    assert modes == [(Outcome.REFUSED, "SignatureError"), (Outcome.SUCCEEDED, None)]
    assert any(r.action is ActionKind.KILL_BLOCKED_INSTANCE and r.pid == survivor.pid
               and r.outcome is Outcome.SUCCEEDED for r in results)

    unreachable = kafka_settings.model_copy(update={"bootstrap": "127.0.0.1:1"})
    offline = EnforcementPlugin(settings, unreachable, keyring=Keyring.of([key.trusted()]))
    assert offline.enforcer.mode is Mode.BLOCK  # the switched mode, from the state dir
    async with running(offline):
        proc = spawn(str(image), "60")
        procs.append(proc)
        offline.observe(start_event(proc, image, sha, device_id=device))
        assert await wait_exit(proc) == -9
