"""`ringfence worker` processes on the real broker: attacks in, named and signed decisions out.

- block vs audit: a device whose group is in block mode gets Alert + signed Verdict + signed
  Commands; an audit device gets the Alert only; a policy update on the policy topic switches a
  group to block while the worker runs; SIGTERM stops it cleanly with its offsets committed;
- malformed records go to the DLQ with their coordinates while good records keep alerting;
- two worker processes share the partitions; `kill -9` of one hands its partition and its trees
  to the other: the attack's second half still alerts *rooted where the attack entered*, and each
  alert id appears exactly once;
- a state topic with fewer partitions than the events topic is refused at start (a device's state
  lives in the partition number of its events).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from worker_kafka import Collector, TopicSet, WorkerProcess, batch, produce, wait_for
from worker_support import ransomware

from pipeline.enroll import KeysFolder
from schemas.alerts import Alert
from schemas.codec import decode, encode
from schemas.commands import Command, CommandAction
from schemas.common import Mode, Platform
from schemas.deadletter import DeadLetter
from schemas.devices import DeviceRecord
from schemas.policy_updates import GroupModeChange, PolicyUpdate
from schemas.signing import Keyring, NonceLedger, SigningKey, check_command, check_verdict, sign_policy_update
from schemas.verdicts import Verdict

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NAME = re.compile(r"^Behavior:Win32/(Execution|Impact)\.[A-Za-z0-9]+!ml$")
T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
async def topics(kafka_bootstrap: str) -> AsyncIterator[TopicSet]:
    topic_set = TopicSet()
    yield topic_set
    await topic_set.delete(kafka_bootstrap)


@pytest.fixture
def fleet_key(tmp_path: Path) -> tuple[Path, SigningKey]:
    folder = KeysFolder(tmp_path / "keys")
    return folder.path, folder.init(T0)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        started.append(WorkerProcess(env, tmp_path / f"worker-{len(started)}.log"))
        return started[-1]

    yield start
    for worker in started:
        worker.stop(5)


def alerts(collector: Collector, topics: TopicSet) -> list[Alert]:
    return [decode(Alert, v) for v in collector.values(topics.name("alerts"))]


def device_record(device: str, group: str) -> tuple[bytes, bytes, None]:
    record = DeviceRecord(device_id=device, hostname=device, platform=Platform.WINDOWS, group=group,
                          effective_mode=Mode.AUDIT, agent_version="1.0", enrolled_at=T0, last_seen=T0)
    return device.encode(), encode(record), None


async def test_block_mode_signs_verdicts_and_commands_audit_alerts_only(
    kafka_bootstrap: str, topics: TopicSet, fleet_key: tuple[Path, SigningKey], tmp_path: Path,
    workers: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    keys_dir, key = fleet_key
    policy = tmp_path / "policy.yaml"
    policy.write_text("default_mode: audit\ngroup_modes:\n  servers: block\n  laptops: audit\n")
    await topics.create(kafka_bootstrap, events_partitions=2)
    await produce(kafka_bootstrap, topics.name("devices"),
                  [device_record("srv-1", "servers"), device_record("lap-1", "laptops"),
                   device_record("lap-2", "laptops"), device_record("lap-3", "laptops")])
    worker = workers(topics.env(kafka_bootstrap, keys_dir, policy))
    blocked, audited = ransomware("srv-1", "11" * 32), ransomware("lap-1", "22" * 32)
    later, still = ransomware("lap-2", "33" * 32), ransomware("lap-3", "44" * 32)
    await produce(kafka_bootstrap, topics.name("events"),
                  [batch(blocked[0] + blocked[1]), batch(audited[0] + audited[1])])
    outputs = [topics.name(k) for k in ("alerts", "verdicts", "commands")]
    async with Collector(kafka_bootstrap, outputs) as out:
        await out.until(lambda c: len(alerts(c, topics)) >= 2, 45, "two alerts")
        by_device = {a.device_id: a for a in alerts(out, topics)}
        assert by_device["srv-1"].mode is Mode.BLOCK and by_device["lap-1"].mode is Mode.AUDIT
        for alert in by_device.values():
            assert NAME.match(alert.detection_name) and alert.tactic.value == "Impact"
        assert all(action.audited for action in by_device["lap-1"].actions)
        await out.until(lambda c: _have(c, topics, commands=2, verdicts=1), 10, "srv-1's decisions")
        _check_signed(out, topics, key, {"11" * 32}, {"srv-1"})

        # a forged (unsigned) switch of the laptops to block is ignored, as the agents ignore it
        forged = PolicyUpdate(update_id="u0", change=GroupModeChange(group="laptops", mode=Mode.BLOCK),
                              actor="soc:mallory", issued_at=datetime.now(UTC))
        await produce(kafka_bootstrap, topics.name("policy"), [(forged.key.encode(), encode(forged), None)])
        await asyncio.sleep(1.5)
        await produce(kafka_bootstrap, topics.name("events"), [batch(still[0] + still[1])])
        await out.until(lambda c: any(a.device_id == "lap-3" for a in alerts(c, topics)), 30, "lap-3's alert")
        assert next(a for a in alerts(out, topics) if a.device_id == "lap-3").mode is Mode.AUDIT

        # the SOC switches the laptops to block, signed: the worker follows the policy topic
        update = sign_policy_update(PolicyUpdate(
            update_id="u1", change=GroupModeChange(group="laptops", mode=Mode.BLOCK), actor="soc:ann",
            issued_at=datetime.now(UTC)), key)
        await produce(kafka_bootstrap, topics.name("policy"), [(update.key.encode(), encode(update), None)])
        await asyncio.sleep(1.5)
        await produce(kafka_bootstrap, topics.name("events"), [batch(later[0] + later[1])])
        await out.until(lambda c: _have(c, topics, commands=4, verdicts=2), 30, "lap-2's decisions")
        _check_signed(out, topics, key, {"11" * 32, "33" * 32}, {"srv-1", "lap-2"})
    assert worker.stop() == 0
    assert "worker stopped cleanly" in worker.log()
    assert sum((await topics.committed(kafka_bootstrap)).values()) == 4  # every record, nothing re-read


def _have(out: Collector, topics: TopicSet, *, commands: int, verdicts: int) -> bool:
    """At least that many commands and verdicts received."""
    return (len(out.values(topics.name("commands"))) >= commands
            and len(out.values(topics.name("verdicts"))) >= verdicts)


def _check_signed(
    out: Collector, topics: TopicSet, key: SigningKey, artifacts: set[str], devices: set[str]
) -> None:
    keyring, now = Keyring.of([key.trusted()]), datetime.now(UTC)
    verdicts = [decode(Verdict, v) for v in out.values(topics.name("verdicts"))]
    for verdict in verdicts:
        check_verdict(verdict, keyring=keyring, now=now)
    assert {v.artifact_id for v in verdicts} == artifacts
    assert all(NAME.match(v.detection_name or "") for v in verdicts)
    commands = [decode(Command, v) for v in out.values(topics.name("commands"))]
    for command in commands:
        check_command(command, keyring=keyring, device_id=command.device_id, now=now,
                      seen_nonces=NonceLedger())
    assert {c.device_id for c in commands} == devices
    for device in devices:
        actions = {c.action for c in commands if c.device_id == device}
        assert actions == {CommandAction.KILL_PROCESS_TREE, CommandAction.QUARANTINE_FILE}


async def test_malformed_records_go_to_the_dlq_and_good_ones_keep_flowing(
    kafka_bootstrap: str, topics: TopicSet, fleet_key: tuple[Path, SigningKey],
    workers: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    await topics.create(kafka_bootstrap, events_partitions=1)
    workers(topics.env(kafka_bootstrap, fleet_key[0]))
    first, second = ransomware("dev-a", "44" * 32), ransomware("dev-b", "55" * 32)
    bad = [(b"dev-x", b"\xff\xfe not json", 0), (b"dev-x", b'{"schema_version": "1.0", "events": [{}]}', 0),
           (b"dev-x", None, 0)]
    offsets = await produce(kafka_bootstrap, topics.name("events"),
                            [batch(first[0] + first[1], 0), *bad, batch(second[0] + second[1], 0)])
    async with Collector(kafka_bootstrap, [topics.name("dlq"), topics.name("alerts")]) as out:
        await out.until(lambda c: len(c.values(topics.name("dlq"))) >= 3 and len(alerts(c, topics)) >= 2, 45,
                        "three dead letters and two alerts")
        letters = [decode(DeadLetter, v) for v in out.values(topics.name("dlq"))]
        assert [(d.source_topic, d.source_partition, d.source_offset) for d in letters] == [
            (topics.name("events"), 0, offset) for offset in offsets[1:4]]
        assert [d.error_class for d in letters] == ["DecodeError", "ValidationFailed", "DecodeError"]
        assert letters[0].raw() == b"\xff\xfe not json" and letters[1].field_path
        assert sorted(a.device_id for a in alerts(out, topics)) == ["dev-a", "dev-b"]


async def test_kill9_hands_partitions_and_trees_to_the_other_worker_without_losing_or_doubling_alerts(
    kafka_bootstrap: str, topics: TopicSet, fleet_key: tuple[Path, SigningKey],
    workers: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    await topics.create(kafka_bootstrap, events_partitions=2)
    env = topics.env(kafka_bootstrap, fleet_key[0])
    pair = [workers(env), workers(env)]
    await wait_for(lambda: [len(w.assigned() or ()) for w in pair] == [1, 1], 45,
                   "both workers to own one partition each")
    attacks = {p: ransomware(f"dev-{p}", f"{p + 6}{p + 6}" * 32) for p in (0, 1)}
    await produce(kafka_bootstrap, topics.name("events"), [batch(attacks[p][0], p) for p in (0, 1)])
    async with Collector(kafka_bootstrap, [topics.name("alerts")]) as out:
        await out.until(lambda c: len(alerts(c, topics)) >= 2, 30, "both devices' Execution alerts")
        await wait_for(lambda: _all_committed(topics, kafka_bootstrap), 15, "offsets and state committed")
        victim = next(w for w in pair if 0 in (w.assigned() or set()))
        survivor = next(w for w in pair if w is not victim)
        victim.kill9()
        await produce(kafka_bootstrap, topics.name("events"), [batch(attacks[p][1], p) for p in (0, 1)])
        await out.until(lambda c: len(alerts(c, topics)) >= 4, 40, "both devices' Impact alerts")
        await asyncio.sleep(1.0)  # a duplicate would arrive right behind
        await out.until(lambda c: True, 1, "late records")
        found = alerts(out, topics)
    assert survivor.assigned() == {0, 1} and "restored 1 devices" in survivor.log()
    assert sorted((a.device_id, a.tactic.value) for a in found) == [
        ("dev-0", "Execution"), ("dev-0", "Impact"), ("dev-1", "Execution"), ("dev-1", "Impact")]
    for alert in found:
        assert alert.process_tree.root_process_key == f"{alert.device_id}-word"  # the tree before the kill
    assert set(Counter(a.alert_id for a in found).values()) == {1}


async def _all_committed(topics: TopicSet, bootstrap: str) -> bool:
    return await topics.committed(bootstrap) == {0: 1, 1: 1}


async def test_a_state_topic_with_fewer_partitions_than_the_events_is_refused(
    kafka_bootstrap: str, topics: TopicSet, fleet_key: tuple[Path, SigningKey],
    workers: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    await topics.create(kafka_bootstrap, events_partitions=2)
    await topics.create_state(kafka_bootstrap, partitions=1)
    worker = workers(topics.env(kafka_bootstrap, fleet_key[0]))
    assert await asyncio.to_thread(worker.process.wait, 30) == 1
    assert "fewer than" in worker.log() and "ringfence topics apply" in worker.log()
