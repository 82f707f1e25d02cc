"""The demo's fleet around the live agent: enrollment, simulated devices, and tails of the SOC topics.

A simulated device is the part of an agent that the feedback loop exercises: its own verdict
follower (its own aiokafka consumer, no group), its own on-disk blocklist and the fleet keyring;
what it applies is reported on the actions topic like any agent's. It has no event source, so it
never scans this machine's processes when a verdict arrives (the live agent does that here);
`refuse_start` runs a real enforcer over that device's blocklist for a process the caller started,
which is what the device's agent would do on that process's start event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from agents.action_reporter import KafkaActionReporter
from agents.blocklist import Blocklist
from agents.enforcer import Enforcer
from agents.linux.procfs import process_key_for
from agents.publisher import kafka_producer_factory
from agents.quarantine import Quarantine
from agents.verdict_follower import AppliedVerdict, VerdictFollower, VerdictHandler, kafka_consumer_factory
from pipeline.demo_kit import DemoError, FleetTopics
from pipeline.enroll import KeysFolder, device_record, issue_identity, write_bundle
from schemas.actions import ActionResult
from schemas.codec import decode, encode
from schemas.common import Contract, Mode
from schemas.devices import Heartbeat
from schemas.events import BehaviorEvent, Platform, ProcessStart
from schemas.identity import DeviceIdentity
from schemas.signing import Keyring
from schemas.topics import ACTIONS, DEVICES, VERDICTS, KafkaSettings

__all__ = ["SimDevice", "SimFleet", "enroll_fleet", "tail"]

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Contract)
AppliedHook = Callable[[str, AppliedVerdict], None]


async def enroll_fleet(kafka: KafkaSettings, topics: FleetTopics, keys: KeysFolder, bundles: Path,
                       devices: Sequence[tuple[str, str, Mode]]) -> dict[str, Path]:
    """Enroll (device, group, mode) triples: a bundle each under `bundles`, DeviceRecords published."""
    from aiokafka import AIOKafkaProducer

    now, keyring = datetime.now(UTC), keys.keyring_file()
    identities: list[DeviceIdentity] = []
    paths: dict[str, Path] = {}
    for device_id, group, mode in devices:
        identity = issue_identity(device_id, group=group, mode=mode, now=now, bootstrap=kafka.bootstrap)
        write_bundle(bundles / device_id, identity, keyring)
        identities.append(identity)
        paths[device_id] = bundles / device_id
    producer = AIOKafkaProducer(**kafka.client_kwargs(), acks="all", enable_idempotence=True)
    await asyncio.wait_for(producer.start(), 30)
    try:
        for identity in identities:
            await producer.send(topics.name(DEVICES), encode(device_record(identity)),
                                key=identity.device_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return paths


@dataclass
class SimDevice:
    """One simulated device: follower, blocklist, and when each artifact was applied."""

    device_id: str
    follower: VerdictFollower
    applied_ms: dict[str, float] = field(default_factory=dict)  # artifact -> published->applied ms

    @property
    def blocklist(self) -> Blocklist:
        return self.follower.blocklist


class SimFleet:
    """N simulated devices in this process, sharing one action reporter."""

    def __init__(self, kafka: KafkaSettings, topics: FleetTopics, keyring: Keyring, state: Path,
                 device_ids: Sequence[str], *, group: str, on_applied: AppliedHook | None = None) -> None:
        self.kafka, self.state, self.group = kafka, state, group
        self.devices_topic = topics.name(DEVICES)
        self.reporter = KafkaActionReporter(kafka_producer_factory(kafka), topics.name(ACTIONS))
        consumers = kafka_consumer_factory(kafka)
        self.devices = [self._device(d, keyring, topics.name(VERDICTS), consumers, on_applied)
                        for d in device_ids]
        self._tasks: list[asyncio.Task[None]] = []

    def _device(self, device_id: str, keyring: Keyring, topic: str, consumers: Any,
                on_applied: AppliedHook | None) -> SimDevice:
        blocklist = Blocklist(self.state / device_id / "blocklist.db", topic, sync="normal")
        handler = VerdictHandler(device_id=device_id, group=self.group, blocklist=blocklist, keyring=keyring,
                                 reporter=self.reporter)
        device = SimDevice(device_id, VerdictFollower(handler, consumers, topic))

        def applied(event: AppliedVerdict) -> None:
            if event.blocked:
                latency = event.applied_at.timestamp() * 1000 - event.record_ts_ms
                device.applied_ms.setdefault(event.artifact_id, latency)
            if on_applied is not None:
                on_applied(device_id, event)

        handler.add_callback(applied)
        return device

    async def start(self, timeout_s: float = 60.0) -> None:
        """Run every follower and wait until each has read the verdict topic to its end."""
        self._tasks = [asyncio.create_task(d.follower.run(), name=f"sim:{d.device_id}") for d in self.devices]
        self._tasks.append(asyncio.create_task(self.reporter.run(), name="sim:reporter"))
        waits = [d.follower.caught_up.wait() for d in self.devices]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
        except TimeoutError:
            raise DemoError(f"simulated devices did not reach the verdict topic in {timeout_s:.0f} s"
                            ) from None

    def reached(self, artifact_id: str) -> list[float]:
        """published->applied ms of every device that applied `artifact_id`."""
        return [d.applied_ms[artifact_id] for d in self.devices if artifact_id in d.applied_ms]

    async def refuse_start(self, device: SimDevice, proc_pid: int, image: Path,
                           sha256: str) -> ActionResult | None:
        """What `device`'s agent does when this process starts there: block_execution if listed."""
        key = process_key_for(proc_pid, device.device_id)
        if key is None:
            return None
        event = BehaviorEvent(event_id=uuid.uuid4().hex, device_id=device.device_id, seq=0,
                              ts=datetime.now(UTC), platform=Platform.LINUX, process_key=key,
                              image=str(image),
                              payload=ProcessStart(image=str(image), sha256=sha256, pid=proc_pid))
        quarantine = Quarantine(self.state / device.device_id / "quarantine")
        enforcer = Enforcer(device_id=device.device_id, mode=Mode.BLOCK, blocklist=device.blocklist,
                            reporter=self.reporter, quarantine=quarantine)
        return await enforcer.block_start(event)

    async def heartbeats(self) -> None:
        """Each device says where its blocklist is (as its agent's heartbeat would)."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.kafka.client_kwargs(), acks="all")
        await producer.start()
        try:
            for d in self.devices:
                beat = Heartbeat(device_id=d.device_id, hostname=f"{d.device_id}.sim",
                                 platform=Platform.LINUX, group=self.group, mode=Mode.BLOCK,
                                 agent_version="simulated",
                                 blocklist_version=d.blocklist.version, blocklist_size=len(d.blocklist),
                                 ts=datetime.now(UTC))
                await producer.send(self.devices_topic, encode(beat), key=d.device_id.encode())
            await producer.flush()
        finally:
            await producer.stop()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.reporter.flush(2.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for d in self.devices:
            d.blocklist.close()


async def tail(kafka: KafkaSettings, topic: str, model: type[M],
               handle: Callable[[M], Awaitable[None] | None]) -> None:
    """Decode every record of `topic` from its beginning, forever (cancel to stop)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from agents.verdict_follower import partitions_of

    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=200)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, n) for n in await partitions_of(consumer, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    await _handle(record.value, model, handle)
    finally:
        await consumer.stop()


async def _handle(value: bytes | None, model: type[M], handle: Callable[[M], Awaitable[None] | None]) -> None:
    if value is None:
        return
    try:
        item = decode(model, value)
    except Exception as exc:  # a bad record in a tail is shown as such, never fatal
        log.warning("unreadable %s record: %s", model.__name__, exc)
        return
    result = handle(item)
    if result is not None:
        await result

