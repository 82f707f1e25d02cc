"""The stateful half of ingestion: per-device `seq` and Security 4688 parent links, in read order.

`agents.sysmon.mapping` is pure and returns events with `seq=0`; a `Sequencer` owned by one
reading loop stamps them. Kept apart so the mapping stays testable record by record and so that
a caller merging several inputs for one device shares one Sequencer (one monotonic sequence).

Parent links for 4688: the record names the parent's pid but not its start time, so the parent
key cannot be computed. The `PidLinker` remembers, per device, the key of the last process start
seen for each pid; a later start whose parent pid is known gets that key. Limits, by design:
- a parent that started before the log began stays unknown (None), as the contract allows;
- the link is right as long as every process start of the device is in the stream: a reused pid
  is re-registered by the new process's own start event, so an old entry is never picked by
  mistake. If starts are missing (auditing off for a while) a link can point at an older process
  with the same pid. The table is bounded per device (oldest pids forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from schemas.events import BehaviorEvent, ProcessStart

DEFAULT_MAX_PIDS_PER_DEVICE = 65_536


class PidLinker:
    """pid -> process_key of the latest process start, per device, bounded in size."""

    def __init__(self, max_pids_per_device: int = DEFAULT_MAX_PIDS_PER_DEVICE) -> None:
        self._max = max_pids_per_device
        self._tables: dict[str, OrderedDict[int, str]] = {}

    def link(self, event: BehaviorEvent) -> BehaviorEvent:
        """Fill a missing parent key from the table, then remember this process."""
        payload = event.payload
        if not isinstance(payload, ProcessStart):
            return event
        table = self._tables.setdefault(event.device_id, OrderedDict())
        if event.parent_process_key is None and payload.ppid is not None:
            parent = table.get(payload.ppid)
            if parent is not None and parent != event.process_key:
                event = event.model_copy(update={"parent_process_key": parent})
        if payload.pid is not None:
            table[payload.pid] = event.process_key
            table.move_to_end(payload.pid)
            if len(table) > self._max:
                table.popitem(last=False)
        return event


class Sequencer:
    """Assigns each device's events 0, 1, 2, ... (or from given starting points) in call order."""

    def __init__(self, next_seq: Mapping[str, int] | None = None, linker: PidLinker | None = None) -> None:
        self._next: dict[str, int] = dict(next_seq or {})
        self._linker = linker if linker is not None else PidLinker()

    def stamp(self, event: BehaviorEvent) -> BehaviorEvent:
        """The event with its device's next `seq` and, for 4688 starts, a parent key if known."""
        event = self._linker.link(event)
        seq = self._next.get(event.device_id, 0)
        self._next[event.device_id] = seq + 1
        return event.model_copy(update={"seq": seq})

    def next_seq(self) -> dict[str, int]:
        """The next seq of every device seen (to resume a sequence later)."""
        return dict(self._next)
