"""What the console knows, built from records: recent alerts, the fleet's devices and group modes.

Pure state fed `Record` values by the console's Kafka feed (`apply`), so tests drive it with inline
records. Alerts are kept newest-first up to a bound; each new one is handed to every live-list
subscriber (a server-sent-events stream) through a bounded queue, and a subscriber that stops
reading is dropped rather than allowed to grow the console's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from pipeline.soc.alerts_cli import decode_alert
from pipeline.soc.kafka_io import Record
from pipeline.soc.settings import ConsoleTopics
from schemas.alerts import Alert
from schemas.codec import decode
from schemas.common import Mode
from schemas.devices import DeviceRecord
from schemas.errors import ContractError
from schemas.policy_updates import GroupModeChange, PolicyUpdate

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 256


class AlertBoard:
    """Recent alerts by id (bounded, newest last in insertion order) and their live subscribers."""

    def __init__(self, max_alerts: int) -> None:
        self._alerts: OrderedDict[str, Alert] = OrderedDict()
        self._max = max_alerts
        self._subscribers: set[asyncio.Queue[Alert | None]] = set()
        self.invalid = 0

    def add(self, alert: Alert) -> None:
        """Keep `alert` (a redelivered id replaces the old copy) and notify subscribers."""
        self._alerts.pop(alert.alert_id, None)
        self._alerts[alert.alert_id] = alert
        while len(self._alerts) > self._max:
            self._alerts.popitem(last=False)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(alert)
            except asyncio.QueueFull:
                log.warning("dropping a live-list subscriber that stopped reading")
                self._subscribers.discard(queue)
                _stop(queue)

    def get(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def recent(self, limit: int = 200) -> list[Alert]:
        """Newest first, by arrival."""
        return list(reversed(self._alerts.values()))[:limit]

    def __len__(self) -> int:
        return len(self._alerts)

    def subscribe(self) -> asyncio.Queue[Alert | None]:
        """A queue that receives every new alert; None means "stop" (dropped or shutting down)."""
        queue: asyncio.Queue[Alert | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Alert | None]) -> None:
        self._subscribers.discard(queue)

    def subscribed(self, queue: asyncio.Queue[Alert | None]) -> bool:
        return queue in self._subscribers

    def close(self) -> None:
        """Tell every subscriber to stop (console shutdown)."""
        for queue in self._subscribers:
            _stop(queue)
        self._subscribers.clear()


def _stop(queue: asyncio.Queue[Alert | None]) -> None:
    """Make room if needed and queue the stop marker."""
    while queue.full():
        queue.get_nowait()
    queue.put_nowait(None)


@dataclass(frozen=True, slots=True)
class GroupView:
    """One device group as the fleet page shows it."""

    name: str
    devices: int
    policy_mode: Mode | None  # set from the console (policy topic), if ever
    device_modes: tuple[Mode, ...]  # the distinct modes its devices report


class Fleet:
    """Devices by id (from the compacted devices topic) and group modes (from the policy topic)."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceRecord] = {}
        self.group_modes: dict[str, tuple[Mode, str, datetime]] = {}  # group -> (mode, actor, when)
        self.invalid = 0

    def group_of(self, device_id: str) -> str | None:
        device = self.devices.get(device_id)
        return device.group if device else None

    def apply_device(self, record: Record) -> None:
        if record.value is None:
            if record.key is not None:
                self.devices.pop(record.key.decode(errors="replace"), None)
            return
        try:
            device = decode(DeviceRecord, record.value)
        except ContractError as exc:
            self.invalid += 1
            log.warning("skipping invalid device record at %s: %s", record.where, exc)
            return
        self.devices[device.device_id] = device

    def apply_policy(self, record: Record) -> None:
        if record.value is None:  # a tombstone withdraws the setting under its key
            key = (record.key or b"").decode(errors="replace")
            if key.startswith("group_mode:"):
                self.group_modes.pop(key.removeprefix("group_mode:"), None)
            return
        try:
            update = decode(PolicyUpdate, record.value)
        except ContractError as exc:
            self.invalid += 1
            log.warning("skipping invalid policy update at %s: %s", record.where, exc)
            return
        if isinstance(update.change, GroupModeChange):
            self.group_modes[update.change.group] = (update.change.mode, update.actor, update.issued_at)

    def groups(self) -> list[GroupView]:
        """Every group named by a device or by a policy update, by name."""
        names = {d.group for d in self.devices.values() if d.group} | set(self.group_modes)
        views = []
        for name in sorted(names):
            members = [d for d in self.devices.values() if d.group == name]
            policy = self.group_modes.get(name)
            views.append(GroupView(name, len(members), policy[0] if policy else None,
                                   tuple(sorted({d.effective_mode for d in members}))))
        return views


def apply(record: Record, topics: ConsoleTopics, board: AlertBoard, fleet: Fleet) -> None:
    """Route one record of the console's topics into its state."""
    if record.topic == topics.alerts:
        alert = decode_alert(record)
        if alert is not None:
            board.add(alert)
        elif record.value is not None:
            board.invalid += 1
    elif record.topic == topics.devices:
        fleet.apply_device(record)
    elif record.topic == topics.policy:
        fleet.apply_policy(record)
