"""Windows Sysmon / Security 4688 ingestion: .evtx and JSON Lines files -> BehaviorEvents.

Offline use (model training, hunting)::

    from agents.sysmon import FileStats, load_events
    stats = FileStats()
    for event in load_events("day1.evtx", stats=stats):
        ...
    print(stats.summary())

Layers, from pure to stateful: `values` (scalar parsers) -> `records` (one view of any shipper's
record shape) -> `payloads`/`mapping` (record -> event or typed Skip) -> `sequencing` (seq, 4688
parent links) -> `readers`/`follow` (bytes -> records) -> `loader` (files) -> `source` (async Source).
"""

from agents.sysmon.errors import FollowError, InputFileError, SysmonError
from agents.sysmon.loader import FileStats, load_events, load_many, read_paths
from agents.sysmon.mapping import MappingConfig, Skip, SkipReason, map_record
from agents.sysmon.sequencing import Sequencer
from agents.sysmon.source import SysmonSource

__all__ = [
    "FileStats",
    "FollowError",
    "InputFileError",
    "MappingConfig",
    "Sequencer",
    "Skip",
    "SkipReason",
    "SysmonError",
    "SysmonSource",
    "load_events",
    "load_many",
    "map_record",
    "read_paths",
]
