"""The values a process forest is made of: one process, the forest's limits and counters, a change.

`ProcessNode` is deliberately a mutable slotted record (it is updated in place on the hot path);
everything that reads it from outside `pipeline.tree` treats it as read-only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, cast

from pipeline.lexicon import ImageClass, image_class
from schemas.fastcodec import Event

_ring: Any
try:  # one int64 buffer per process (pipeline/_cring.c); optional: without it, a deque of ints
    from pipeline._cring import Ring as _ring
except ImportError:  # pragma: no cover - depends on the build
    _ring = None

if TYPE_CHECKING:
    from pipeline._cring import Ring

    Evidence: TypeAlias = deque[int] | Ring
else:  # the same alias at run time (typing.get_type_hints of ProcessNode resolves it)
    Evidence = deque[int] if _ring is None else deque[int] | _ring
"""A process's evidence records (packed `ts_ms << 8 | code` ints, oldest first, bounded): what `new_evidence`
makes. Everything that reads them uses only what both types have (append, len, iteration both ways,
indexing, `maxlen`); the C extensions read a `Ring` in place."""


@dataclass(frozen=True, slots=True)
class TreeLimits:
    """Bounds and time-to-live of one device's forest."""

    max_nodes: int = 8192  # nodes per device before flood eviction starts
    max_evidence_per_node: int = 512  # packed behaviour records kept per process
    max_conns_per_node: int = 128  # (ts, dst ip, dst port) records kept per process
    max_notable_per_node: int = 4  # raw events kept per process as alert evidence
    exited_ttl_ms: int = 10 * 60 * 1000  # keep an exited subtree this long after its last exit
    idle_ttl_ms: int = 2 * 60 * 60 * 1000  # evict a node without activity for this long
    max_depth: int = 64  # bound on ancestor/descendant walks (also breaks malicious cycles)
    dedupe_by_seq: bool = True  # drop redelivered events (seq and ts not newer than seen)


@dataclass(slots=True)
class ForestStats:
    """What the forest did that an operator may need to see; every drop has a counter."""

    events: int = 0
    nodes_created: int = 0
    placeholders_created: int = 0
    placeholders_filled: int = 0
    evicted_exited: int = 0
    evicted_idle: int = 0
    flood_evicted_exited: int = 0
    flood_evicted_idle: int = 0
    evidence_dropped: int = 0
    duplicates_dropped: int = 0
    parent_conflicts: int = 0
    cycles_refused: int = 0

    def as_dict(self) -> dict[str, int]:
        """Counter name -> value."""
        return asdict(self)


@dataclass(slots=True, eq=False)
class ProcessNode:
    """One process: identity, context, parent link and its recent evidence."""

    key: str
    image: str = ""  # "" while only known as someone's parent
    command_line: str = ""
    sha256: str | None = None
    user: str | None = None  # kept for the alert's tree snapshot; never a feature
    integrity_level: str | None = None
    uid: int | None = None
    pid: int | None = None
    parent_key: str | None = None
    start_ms: int | None = None  # None when the process_start was not seen
    end_ms: int | None = None
    last_ms: int = 0  # time of the latest event about this process
    started: bool = False  # its process_start was seen
    cmd_mask: int = 0  # indicator bits of the command line
    script_mask: int = 0  # indicator bits of script content it ran
    signer: str | None = None  # signer of its own image when an image_load reported it
    signed: bool | None = None
    alert_mark: str | None = None  # "<tactic>:<band>,..." of alerts rooted here
    code_counts: dict[int, int] = field(default_factory=dict)  # lifetime count per behaviour code
    image_cls: ImageClass = ImageClass.OTHER
    children: list[str] = field(default_factory=list)
    evidence: Evidence = field(default_factory=deque)  # the forest gives each node `new_evidence(...)`
    conns: deque[tuple[int, str, int]] = field(default_factory=deque)
    notable: deque[Event | dict[str, Any]] = field(default_factory=deque)  # dicts after a restore
    static: tuple[float, ...] | None = None  # per-process feature cache, owned by pipeline.features
    lone: tuple[str, int] | None = None  # (a long command_line, its lone_mask): pipeline.features's memo
    stamp: int = 0  # the forest's `epoch` when an event last named it (pipeline.tree_state reuses rows by it)

    @property
    def placeholder(self) -> bool:
        """Known only as a parent: no event of its own yet."""
        return not self.started and not self.image

    @property
    def exited(self) -> bool:
        """Its process_end was seen."""
        return self.end_ms is not None

    @property
    def mask(self) -> int:
        """All indicator bits: command line and script content."""
        return self.cmd_mask | self.script_mask

    def set_image(self, image: str) -> None:
        """Record the image path and its class."""
        self.image = image
        self.image_cls = image_class(image)
        self.static = None


def new_evidence(maxlen: int, records: Iterable[int] = ()) -> Evidence:
    """An evidence container keeping the last `maxlen` records: a `pipeline._cring.Ring` (8 bytes per
    record in one buffer, read in place by the C extensions) when it is built, else a `deque` of ints
    (~40 bytes per record, one int object each). Both hold the same records and answer the same."""
    if _ring is not None:
        ring: Evidence = _ring(records, maxlen)
        return ring
    return deque(records, maxlen=maxlen)


def ring_bytes(evidence: Evidence) -> bytes | None:
    """A `Ring`'s records as little-endian int64 bytes (one copy of its buffer); None for anything else."""
    return cast("Ring", evidence).tobytes() if _ring is not None and type(evidence) is _ring else None


class Change(NamedTuple):
    """What one event changed: processes to re-score, and whether their ancestors should be too."""

    keys: tuple[str, ...]
    notable: bool  # a new process or specific behaviour (not just another file write or DNS query)


NO_CHANGE = Change((), False)
