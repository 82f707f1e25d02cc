"""Terse builders of valid `BehaviorEvent`s for inline trees in tests, benchmarks and simulations.

A `EventKit` hands out increasing `seq` numbers and timestamps for one device, so a test reads as
the story of a tree (`kit.start("p2", "powershell.exe", "-enc ...", parent="p1")`) rather than as
a wall of envelopes. Every event goes through the real pydantic contract, so an inline tree cannot
silently drift from what agents publish.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import (
    BehaviorEvent,
    DnsQuery,
    FileCreate,
    FileDelete,
    FileRename,
    FileWrite,
    ImageLoad,
    NetworkConnect,
    Payload,
    ProcessAccess,
    ProcessEnd,
    ProcessStart,
    RegistrySet,
    RemoteThread,
    Script,
)

EPOCH = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


class EventKit:
    """Event factory for one device; time advances by `step_ms` per event unless `at_ms` is given."""

    def __init__(
        self,
        device_id: str = "dev-1",
        platform: str = "windows",
        *,
        step_ms: int = 10,
        start: datetime = EPOCH,
    ) -> None:
        self.device_id, self.platform, self.step_ms = device_id, platform, step_ms
        self.seq = 0
        self.now = start
        self._images: dict[str, str] = {}
        self._parents: dict[str, str | None] = {}

    @property
    def now_ms(self) -> int:
        """Current kit time in epoch milliseconds."""
        return int(self.now.timestamp() * 1000)

    def advance(self, ms: int) -> None:
        """Move the kit's clock forward."""
        self.now += timedelta(milliseconds=ms)

    def event(
        self,
        key: str,
        payload: Payload,
        *,
        parent: str | None = None,
        image: str | None = None,
        at_ms: int | None = None,
    ) -> BehaviorEvent:
        """One event of process `key`; parent and image default to what the kit saw for `key`."""
        self.seq += 1
        if at_ms is None:
            self.advance(self.step_ms)
        ts = self.now if at_ms is None else datetime.fromtimestamp(at_ms / 1000, tz=UTC)
        return BehaviorEvent(
            event_id=f"{self.device_id}-{self.seq}",
            device_id=self.device_id,
            seq=self.seq,
            ts=ts,
            platform=self.platform,
            process_key=key,
            parent_process_key=parent if parent is not None else self._parents.get(key),
            image=image if image is not None else self._images.get(key),
            payload=payload,
        )

    def start(
        self, key: str, image: str, command_line: str = "", *, parent: str | None = None, **fields: Any
    ) -> BehaviorEvent:
        """process_start of `key` under `parent`."""
        self._images[key], self._parents[key] = image, parent
        return self.event(key, ProcessStart(image=image, command_line=command_line, **fields), parent=parent)

    def end(self, key: str, **fields: Any) -> BehaviorEvent:
        """process_end of `key`."""
        return self.event(key, ProcessEnd(**fields))

    def write(self, key: str, path: str, *, create: bool = True) -> BehaviorEvent:
        """file_create (or file_write) by `key`."""
        return self.event(key, FileCreate(path=path) if create else FileWrite(path=path))

    def delete(self, key: str, path: str) -> BehaviorEvent:
        """file_delete by `key`."""
        return self.event(key, FileDelete(path=path))

    def rename(self, key: str, old_path: str, path: str) -> BehaviorEvent:
        """file_rename by `key`."""
        return self.event(key, FileRename(path=path, old_path=old_path))

    def reg(
        self, key: str, reg_key: str, value_name: str | None = None, data: str | None = None
    ) -> BehaviorEvent:
        """registry_set by `key`."""
        return self.event(key, RegistrySet(key=reg_key, value_name=value_name, data=data))

    def connect(self, key: str, dst_ip: str, dst_port: int, **fields: Any) -> BehaviorEvent:
        """network_connect by `key`."""
        return self.event(key, NetworkConnect(dst_ip=dst_ip, dst_port=dst_port, **fields))

    def dns(self, key: str, query: str) -> BehaviorEvent:
        """dns_query by `key`."""
        return self.event(key, DnsQuery(query=query))

    def load(self, key: str, path: str, **fields: Any) -> BehaviorEvent:
        """image_load by `key`."""
        return self.event(key, ImageLoad(path=path, **fields))

    def access(self, key: str, target_image: str, granted_access: int, **fields: Any) -> BehaviorEvent:
        """process_access by `key`."""
        payload = ProcessAccess(target_image=target_image, granted_access=granted_access, **fields)
        return self.event(key, payload)

    def inject(self, key: str, target_image: str, **fields: Any) -> BehaviorEvent:
        """remote_thread by `key`."""
        return self.event(key, RemoteThread(target_image=target_image, **fields))

    def script(self, key: str, content: str, **fields: Any) -> BehaviorEvent:
        """script content run by `key`."""
        return self.event(key, Script(content=content, **fields))
