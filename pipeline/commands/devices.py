"""`ringfence devices enroll|list`: issue device identities and show the fleet from the devices topic."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from pipeline.enroll import FleetEntry, FleetView
    from schemas.devices import DeviceRecord
    from schemas.topics import KafkaSettings

DESCRIPTION = """\
  enroll   issue DEVICE_ID's identity bundle (identity.json with group, optional --mode override,
           Kafka credential placeholders; keyring.json, the fleet's public keys; agent.env) into
           --out, and publish its DeviceRecord on the devices topic. Without --mode the device
           follows its group's mode (switchable from the SOC console). Start the agent with
           `ringfence-agent run --identity DIR` (or RINGFENCE_AGENT_IDENTITY_DIR=DIR).
  list     read the compacted devices topic (enrollment records and heartbeats) and show every
           device: group, mode, last seen, agent version, blocklist version and size, and how far
           its blocklist is behind the verdict topic.

Kafka: RINGFENCE_KAFKA_* (or --bootstrap). Keys: --keys-dir, else $RINGFENCE_KEYS_DIR, else ./.ringfence/keys.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from schemas.topics import DEVICES, VERDICTS

    parser = sub.add_parser("devices", help="enroll devices and list the fleet", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    enroll = actions.add_parser("enroll", help="issue a device identity bundle and publish its record",
                                description="Issue DEVICE_ID's identity bundle and publish its DeviceRecord.")
    enroll.add_argument("device_id", metavar="DEVICE_ID")
    enroll.add_argument("--group", required=True, help="device group (policy is set per group)")
    enroll.add_argument("--mode", choices=("audit", "block"), default=None,
                        help="per-device override of the group's mode (default: follow the group, so "
                             "a group switch from the SOC console applies to this device)")
    enroll.add_argument("--platform", choices=("linux", "windows"), default="linux")
    enroll.add_argument("--out", type=Path, default=None,
                        help="bundle folder (default: ./enrolled/DEVICE_ID)")
    enroll.add_argument("--keys-dir", type=Path, default=None, help="fleet keys folder")
    enroll.add_argument("--force", action="store_true", help="re-issue over an existing bundle")
    enroll.set_defaults(func=_enroll)
    listing = actions.add_parser("list", help="show the fleet: mode, last seen, versions, blocklist",
                                 description="Read the devices topic to its end and print the fleet.")
    listing.add_argument("--json", action="store_true", help="one JSON object per device instead of a table")
    listing.add_argument("--verdicts-topic", default=VERDICTS,
                         help="to compute blocklist lag (default %(default)s)")
    listing.add_argument("--timeout", type=float, default=15.0,
                         help="seconds to read the topics (default 15)")
    listing.set_defaults(func=_list)
    for action in (enroll, listing):
        action.add_argument("--topic", default=DEVICES, help="devices topic (default %(default)s)")
        action.add_argument("--bootstrap", default=None,
                            help="Kafka bootstrap (default: $RINGFENCE_KAFKA_BOOTSTRAP)")


def kafka_settings(bootstrap: str | None) -> KafkaSettings:
    """RINGFENCE_KAFKA_* settings, with --bootstrap taking precedence."""
    from pydantic import ValidationError

    from schemas.topics import KafkaSettings

    try:
        settings = KafkaSettings()
    except (ValidationError, ValueError) as exc:
        raise CliError(f"invalid RINGFENCE_KAFKA_* settings: {exc}") from None
    return settings.model_copy(update={"bootstrap": bootstrap}) if bootstrap else settings


# -- enroll -----------------------------------------------------------------------------------------


def _enroll(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from pipeline.commands.keys import keys_folder
    from pipeline.enroll import EnrollmentError, device_record, issue_identity, write_bundle
    from schemas.common import Mode, Platform

    kafka = kafka_settings(args.bootstrap)
    out = args.out or Path("enrolled") / args.device_id
    try:
        keyring = keys_folder(args.keys_dir).keyring_file()
        identity = issue_identity(args.device_id, group=args.group,
                                  mode=Mode(args.mode) if args.mode else None,
                                  now=datetime.now(UTC), platform=Platform(args.platform),
                                  bootstrap=kafka.bootstrap)
    except EnrollmentError as exc:
        raise CliError(str(exc)) from None
    except ValidationError as exc:
        raise CliError(f"cannot enroll {args.device_id!r}: {_first_error(exc)}") from None
    record = device_record(identity)
    asyncio.run(publish_device(kafka, args.topic, record))
    try:
        write_bundle(out, identity, keyring, force=args.force)
    except EnrollmentError as exc:
        raise CliError(f"{exc} (the DeviceRecord was published; re-run with --force)") from None
    mode = f"mode {identity.mode} (override)" if identity.mode else "mode of its group"
    print(f"enrolled {identity.device_id}: group {identity.group}, {mode}, "
          f"{len(keyring.keys)} trusted key(s); record on {args.topic}")
    print(f"  identity bundle  {out}/  ->  ringfence-agent run --identity {out}")
    return 0


def _first_error(exc: Any) -> str:
    first = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


async def publish_device(kafka: KafkaSettings, topic: str, record: DeviceRecord,
                         timeout_s: float = 15.0) -> None:
    """Publish one DeviceRecord (acks=all); CliError when the cluster does not take it in time."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from schemas.codec import encode

    producer = AIOKafkaProducer(**kafka.client_kwargs(), acks="all", enable_idempotence=True)
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        await asyncio.wait_for(producer.send_and_wait(topic, encode(record), key=record.device_id.encode()),
                               timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        raise CliError(f"cannot publish {record.device_id} to {topic} on {kafka.bootstrap_servers}: "
                       f"{type(exc).__name__} {exc}") from None
    finally:
        await producer.stop()


# -- list -------------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    kafka = kafka_settings(args.bootstrap)
    view, head = asyncio.run(read_fleet(kafka, args.topic, args.verdicts_topic, args.timeout))
    rows = view.rows()
    if args.json:
        for entry in rows:
            print(json.dumps(entry_json(entry, head)))
        return 0
    print(render_table(rows, head, datetime.now(UTC)))
    never = sum(entry.last_seen is None for entry in rows)
    bad = f", {view.bad_records} unreadable record(s)" if view.bad_records else ""
    print(f"{len(rows)} device(s), {never} never seen{bad}; verdict topic at version "
          f"{head if head is not None else '?'}")
    return 0


async def read_fleet(kafka: KafkaSettings, topic: str, verdicts_topic: str | None,
                     timeout_s: float) -> tuple[FleetView, int | None]:
    """The fleet view of `topic` read to its end, and the verdict topic's version (sum of end offsets)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    from pipeline.enroll import FleetView

    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        pairs = await asyncio.wait_for(read_to_end(consumer, topic), timeout_s)
        head = await _topic_version(consumer, verdicts_topic) if verdicts_topic else None
    except (KafkaError, TimeoutError, OSError, LookupError) as exc:
        raise CliError(f"cannot read {topic} on {kafka.bootstrap_servers}: "
                       f"{type(exc).__name__} {exc}") from None
    finally:
        await consumer.stop()
    return FleetView.fold(pairs), head


async def read_to_end(consumer: Any, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of `topic` from the beginning to the end offsets seen now."""
    from aiokafka.structs import TopicPartition

    from agents.verdict_follower import partitions_of

    partitions = [TopicPartition(topic, n) for n in await partitions_of(consumer, topic)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    ends = await consumer.end_offsets(partitions)
    pairs: list[tuple[bytes | None, bytes | None]] = []
    while not await _reached(consumer, ends):
        batch = await consumer.getmany(timeout_ms=500, max_records=5000)
        for records in batch.values():
            pairs.extend((msg.key, msg.value) for msg in records)
    return pairs


async def _reached(consumer: Any, ends: dict[Any, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def _topic_version(consumer: Any, topic: str) -> int | None:
    from aiokafka.structs import TopicPartition

    from agents.verdict_follower import partitions_of

    try:
        partitions = [TopicPartition(topic, n) for n in await partitions_of(consumer, topic)]
    except LookupError:
        return None
    return int(sum((await consumer.end_offsets(partitions)).values()))


def render_table(rows: Sequence[FleetEntry], head: int | None, now: datetime) -> str:
    """The fleet as an aligned text table."""
    header = ("DEVICE", "GROUP", "MODE", "LAST SEEN", "AGENT", "BLOCKLIST")
    lines = [header, *(_cells(entry, head, now) for entry in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _cells(entry: FleetEntry, head: int | None, now: datetime) -> tuple[str, ...]:
    mode = entry.mode.value
    if entry.fleet_mode is not None and entry.fleet_mode != entry.mode:
        mode += f" (enrolled {entry.fleet_mode.value})"
    if entry.last_seen is None:
        return (entry.device_id, entry.group or "-", mode, "never", "-", "-")
    blocklist = f"v{entry.blocklist_version}, {entry.blocklist_size} blocked"
    if head is not None:
        behind = head - entry.blocklist_version
        blocklist += ", current" if behind <= 0 else f", {behind} behind"
    return (entry.device_id, entry.group or "-", mode, _ago(now - entry.last_seen),
            entry.agent_version or "-", blocklist)


def _ago(delta: Any) -> str:
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def entry_json(entry: FleetEntry, head: int | None) -> dict[str, Any]:
    """One device as a JSON-ready dict (`devices list --json`)."""
    behind = None if head is None or entry.last_seen is None else max(0, head - entry.blocklist_version)
    return {
        "device_id": entry.device_id, "group": entry.group, "mode": entry.mode.value,
        "fleet_mode": entry.fleet_mode.value if entry.fleet_mode else None,
        "platform": entry.platform.value, "hostname": entry.hostname,
        "enrolled_at": _stamp(entry.enrolled_at), "last_seen": _stamp(entry.last_seen),
        "agent_version": entry.agent_version, "blocklist_version": entry.blocklist_version,
        "blocklist_size": entry.blocklist_size, "spooled_events": entry.spooled_events,
        "blocklist_behind": behind,
    }


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
