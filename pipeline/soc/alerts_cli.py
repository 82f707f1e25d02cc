"""`ringfence alerts tail|show`: follow the alert topic in a terminal, or draw one alert's tree.

The decisions — decode a record or count it as rejected, apply the filter, format a line, pick the
alert out of a scan — are plain functions and a small `AlertFeed` class fed `Record` values, so the
tests need no broker. `tail()` and `show()` are the thin Kafka shells around them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import orjson

from pipeline.soc.errors import AlertNotFound
from pipeline.soc.filters import AlertFilter
from pipeline.soc.kafka_io import Record, StartAt, TopicReader, read_existing
from pipeline.soc.terminal import render_alert, table_header, table_row
from schemas.alerts import Alert
from schemas.codec import decode
from schemas.devices import DeviceRecord
from schemas.errors import ContractError
from schemas.ocsf import alert_to_ocsf
from schemas.topics import KafkaSettings

log = logging.getLogger(__name__)


class OutputFormat(StrEnum):
    """How `alerts tail` prints an alert."""

    TABLE = "table"  # one aligned line per alert, control characters escaped
    JSON = "json"  # the Alert record, one JSON object per line
    OCSF = "ocsf"  # the OCSF Detection Finding, one JSON object per line


def format_alert(alert: Alert, fmt: OutputFormat) -> str:
    """One alert as one output line in `fmt` (JSON output escapes control characters itself)."""
    if fmt is OutputFormat.JSON:
        return alert.model_dump_json()
    if fmt is OutputFormat.OCSF:
        return orjson.dumps(alert_to_ocsf(alert)).decode()
    return table_row(alert)


def decode_alert(record: Record) -> Alert | None:
    """The alert in `record`, or None (logged with its coordinates) when it is not a valid Alert."""
    if record.value is None:
        return None
    try:
        return decode(Alert, record.value)
    except ContractError as exc:
        log.warning("skipping invalid alert at %s: %s", record.where, exc)
        return None


def device_group(record: Record) -> tuple[str, str | None] | None:
    """(device id, group) from a devices-topic record; (key, None) for a tombstone; None if invalid."""
    if record.value is None:
        return (record.key.decode(errors="replace"), None) if record.key else None
    try:
        device = decode(DeviceRecord, record.value)
    except ContractError as exc:
        log.warning("skipping invalid device record at %s: %s", record.where, exc)
        return None
    return device.device_id, device.group


@dataclass
class AlertFeed:
    """Turns alert and device records into output lines, counting what it skipped."""

    alert_filter: AlertFilter
    fmt: OutputFormat
    devices_topic: str
    groups: dict[str, str | None] = field(default_factory=dict)
    shown: int = 0
    invalid: int = 0
    header_pending: bool = True

    def handle(self, record: Record) -> list[str]:
        """The lines to print for one record (a device record only updates the group map)."""
        if record.topic == self.devices_topic:
            pair = device_group(record)
            if pair is not None:
                self.groups[pair[0]] = pair[1]
            return []
        alert = decode_alert(record)
        if alert is None:
            self.invalid += record.value is not None
            return []
        if not self.alert_filter.matches(alert, self.groups):
            return []
        self.shown += 1
        lines = [table_header()] if self.header_pending and self.fmt is OutputFormat.TABLE else []
        self.header_pending = False
        return [*lines, format_alert(alert, self.fmt)]


def match_alert(record: Record, alert_id: str) -> Alert | None:
    """The alert in `record` if it is `alert_id` (a cheap byte test skips decoding the others)."""
    if record.value is None or alert_id.encode() not in record.value:
        return None
    alert = decode_alert(record)
    return alert if alert is not None and alert.alert_id == alert_id else None


def find_alert(records: Iterable[Record], alert_id: str) -> Alert | None:
    """The last valid alert with this id among `records` (a redelivered alert repeats its id)."""
    found = None
    for record in records:
        found = match_alert(record, alert_id) or found
    return found


@dataclass(frozen=True, slots=True)
class TailOptions:
    """What `alerts tail` reads and how long it runs."""

    alerts_topic: str
    devices_topic: str
    start: StartAt = "latest"
    limit: int | None = None  # stop after printing this many alerts
    max_devices: int = 1_000_000  # bound on the devices snapshot read at start
    snapshot_timeout_s: float = 30.0


async def tail(
    kafka: KafkaSettings, feed: AlertFeed, options: TailOptions, emit: Callable[[str], None]
) -> int:
    """Follow the alert topic, printing matching alerts until `limit` (or forever); returns the count."""
    if feed.alert_filter.needs_groups:
        async for record in read_existing(kafka, options.devices_topic, max_records=options.max_devices,
                                          timeout_s=options.snapshot_timeout_s):
            feed.handle(record)
    starts: dict[str, StartAt] = {options.alerts_topic: options.start}
    if feed.alert_filter.needs_groups:
        starts[options.devices_topic] = "latest"  # the snapshot is read: follow changes from here
    reader = await TopicReader.open(kafka, starts)
    try:
        while options.limit is None or feed.shown < options.limit:
            for record in await reader.batch(timeout_ms=500):
                for line in feed.handle(record):
                    emit(line)
    finally:
        await reader.close()
    return feed.shown


async def show(kafka: KafkaSettings, alerts_topic: str, alert_id: str, *, max_records: int,
               timeout_s: float, width: int) -> str:
    """The rendered alert `alert_id`, found by scanning the topic within the bounds."""
    alert, scanned = None, 0
    async for record in read_existing(kafka, alerts_topic, max_records=max_records, timeout_s=timeout_s):
        alert, scanned = match_alert(record, alert_id) or alert, scanned + 1
    if alert is None:
        raise AlertNotFound(f"not among the {scanned} records scanned in {alerts_topic} "
                            f"(bounds: {max_records} records, {timeout_s:g} s)", alert_id=alert_id)
    return render_alert(alert, width)

