"""Compact serialisation of a `DeviceForest`, for the stream shell's changelog and for tests.

A forest becomes a small JSON document (nodes as positional lists, evidence as base64 of the
little-endian int64 records it already is) written by orjson. Behaviour older than the caller's
window can be left out (`keep_since_ms`): it can no longer move a score. Node order is the forest's
recency order, so flood eviction after a restore picks the same victims it would have picked
before the crash. Notable events are kept as plain dicts after a restore and validated only when
an alert shows them, so restoring a large device stays cheap.

**Why a `ForestEncoder`.** The worker saves every changed device at each checkpoint (every second
in the benchmarks), and re-serialising whole forests cost 20-35 µs per node, a third of them
nodes no event touched since the previous checkpoint, more as forests age (BENCHMARKS.md,
"Session E — state checkpoints"). The encoder keeps
each node's encoded row and re-encodes only the nodes an event named since (the forest stamps
them: every node `DeviceForest.apply` can change, see `ProcessNode.stamp` and `DeviceForest.epoch`),
nodes it has not encoded yet or that were replaced by another object under the same key, and nodes
whose alert mark moved (the detector sets it on the incident's root, which no event may have
touched). Until session I the worker named them with `touch` before applying each record's events
(their process and parent keys, and the parent a start's node already had): the same nodes, found
by a second pass over every event that cost ~0.25 us per event. Every `full_every`-th encoding of a
device re-encodes everything regardless, so a mutation path this list misses is bounded in time, not
silent for ever. A device's record is still one whole forest, so a crash between two writes
never leaves a device half old and half new on the changelog.

**The rows to encode** of a device (all of them at its first or a full encoding; else the stamped
ones) are written in one C call (`_cstate.encode_rows`): the fields read from the node's slots, the
evidence, connections, notable events and code counts written without the Python frames, tuples and
strs of `_encode_row`, the `_Row`s made without their `__init__`, and the next nodes' objects
prefetched while one is written (session K: a cold device's rows 12-15 -> 8-10 us each). It writes
the bytes `_encode_row` writes, from the same previous row, and leaves any node it would not write
exactly so (a restored notable dict, a value orjson must decide, an error) to `_encode_row`, which
writes it or raises its own error.

The record layout is the one `STATE_VERSION` 2 always had; records written before this encoder
(which filtered notable events by time and sorted code counts) are read exactly as before. What
changed is how a clean node's row is produced: it is the bytes of its last encoding, so behaviour
that left the window since then is still in it (the live forest holds it too; windows ignore it).

Reading refuses unknown versions and malformed nodes with a `StateError` naming the device:
a corrupt changelog entry must be visible, never half-applied.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from itertools import islice
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import orjson

from pipeline.behaviour import N_COUNTERS
from pipeline.errors import StateError
from pipeline.node import Evidence, new_evidence, ring_bytes
from pipeline.tree import DeviceForest, ForestStats, ProcessNode, TreeLimits
from pipeline.windows import CODE_BITS, CODE_MASK
from schemas.events import BehaviorEvent
from schemas.fastcodec import Event, FastEvent

__all__ = ["STATE_VERSION", "ForestEncoder", "forest_from_bytes", "forest_from_dict", "forest_to_bytes",
           "forest_to_dict"]

_ctail: Callable[[Evidence, int], bytes] | None
_cb64: Callable[[bytes, int, int], str] | None
_crow: Callable[[tuple[Any, ...], bytes, int, int, Iterable[Any], bytes, dict[int, int]], bytes | None] | None
_crows: Callable[[list[Any], list[Any], int, int, type, Callable[[Any], Any], type, int], list[Any]] | None
try:  # a process's evidence packed and base64'd, and its row written, in C (pipeline/_cstate.c);
    # optional: Python and orjson compute the same bytes
    from pipeline._cstate import encode_rows as _compiled_rows
    from pipeline._cstate import evidence_tail as _compiled_tail
    from pipeline._cstate import raw_b64 as _compiled_b64
    from pipeline._cstate import row_json as _compiled_row
except ImportError:  # pragma: no cover - depends on the build
    _ctail = _cb64 = _crow = _crows = None
else:
    _ctail, _cb64, _crow, _crows = _compiled_tail, _compiled_b64, _compiled_row, _compiled_rows

STATE_VERSION = 2
_FIELDS = (
    "key",
    "image",
    "command_line",
    "sha256",
    "user",
    "integrity_level",
    "uid",
    "pid",
    "parent_key",
    "start_ms",
    "end_ms",
    "last_ms",
    "started",
    "cmd_mask",
    "script_mask",
    "signer",
    "signed",
    "alert_mark",
)
_INT_FIELDS = ("uid", "pid", "start_ms", "end_ms")
_TAILS = 4  # evidence, conns, notable events, code counts
_REQUIRED_INT_FIELDS = ("last_ms", "cmd_mask", "script_mask")
_STR_FIELDS = ("key", "image", "command_line")
_STAT_NAMES = tuple(f.name for f in fields(ForestStats))
_node_fields = attrgetter(*_FIELDS)
_stat_values = attrgetter(*_STAT_NAMES)
_JSON = msgspec.json.Encoder()
_BIG_ENDIAN = sys.byteorder == "big"
FULL_EVERY = 300  # a device's every 300th encoding re-encodes all its nodes (5 min at 1 s commits)


@dataclass(slots=True)
class _Row:
    """A node's encoded row, with what it was encoded from (to tell when it is stale)."""

    node: ProcessNode
    mark: str | None
    epoch: int  # the forest's epoch it was encoded at: stale once the node's stamp is later
    data: bytes
    notable: tuple[Any, ...]  # the notable events `notable_json` encodes
    notable_json: bytes  # a JSON array
    evidence: bytes  # every record the node held, unfiltered, as little-endian int64
    appended: int  # evidence records ever appended to the node then (the sum of its code counts)
    source: Any  # the evidence container those records were read from (the node's ring or deque)


class ForestEncoder:
    """Encodes the forests of many devices again and again, re-encoding only what changed.

    One per worker: `encode` a device at a checkpoint, `forget` a device whose partition moved (or
    whose forest was replaced by a restore). The bytes are always those `forest_to_bytes` would
    produce for the same forest, except that a clean node keeps the evidence of its last encoding
    (see the module docstring). Any number of encoders may encode one forest: each encoding moves
    the forest's `epoch` on, and a row is stale once its node's stamp is later than the row's epoch.
    """

    def __init__(self, full_every: int = FULL_EVERY) -> None:
        self.full_every = full_every
        self._rows: dict[str, dict[str, _Row]] = {}  # device -> node key -> row
        self._encodings: dict[str, int] = {}  # device -> encodings since its last full one
        self.rows_encoded = 0  # rows encoded anew (the rest were reused): for tests and benchmarks
        self.rows_reused = 0

    def forget(self, device_id: str) -> None:
        """Drop everything cached for a device (its next encoding is a full one)."""
        self._rows.pop(device_id, None)
        self._encodings.pop(device_id, None)

    def encode(self, forest: DeviceForest, keep_since_ms: int = 0) -> bytes:
        """The forest's state record (see `forest_to_bytes`), reusing the rows of unstamped nodes."""
        device = forest.device_id
        count = self._encodings.get(device, 0)
        cached = self._rows.get(device) if count < self.full_every else None
        self._encodings[device] = count + 1 if cached is not None else 1
        epoch = forest.epoch
        forest.epoch = epoch + 1  # what events name from now on is stale in these rows
        order = forest.recency_order()
        if cached is None:  # every node new to this encoder (its first or a full encoding): one C call
            nodes = list(map(forest.nodes.__getitem__, order))
            made = _rows_of(nodes, [None] * len(nodes), keep_since_ms, epoch)
            self._rows[device] = dict(zip(order, made, strict=True))
            self.rows_encoded += len(made)
            return _record(forest, [row.data for row in made])
        rows = self._rows[device] = {}
        parts: list[bytes] = []
        stale: list[tuple[int, str]] = []  # where in `parts`, and the key, of each row to encode
        nodes, previous = [], []  # the rows to encode: the node, its previous row or None
        for key in order:
            node = forest.nodes[key]
            row = cached.get(key)
            if row is not None and row.node is not node:
                row = None  # another process under the same key: nothing of the old row is reused
            elif row is not None and node.stamp <= row.epoch and row.mark == node.alert_mark:
                rows[key] = row
                parts.append(row.data)
                continue
            stale.append((len(parts), key))
            nodes.append(node)
            previous.append(row)
            parts.append(b"")
        for (at, key), row in zip(stale, _rows_of(nodes, previous, keep_since_ms, epoch), strict=True):
            rows[key] = row
            parts[at] = row.data
        self.rows_encoded += len(stale)
        self.rows_reused += len(parts) - len(stale)
        return _record(forest, parts)


def _record(forest: DeviceForest, rows: list[bytes]) -> bytes:
    """The record's JSON object: the forest's fields, its rows as the "nodes" array, the exit order.

    The same bytes as `orjson.dumps` of that dict with the rows as a `Fragment`, joined once instead
    of being copied into a fragment and again into orjson's buffer (a record is ~80 KB); `rows` (the
    caller's list) gets the head and the tail on its end rows, so no part is copied twice."""
    head = orjson.dumps({
        "v": STATE_VERSION,
        "device_id": forest.device_id,
        "platform": forest.platform,
        "watermark_ms": forest.watermark_ms,
        "seq_hwm": forest.seq_hwm,
        "stats": dict(zip(_STAT_NAMES, _stat_values(forest.stats), strict=True)),
    })
    tail = b'],"exited":' + orjson.dumps(forest.exit_order()) + b"}"
    if not rows:
        return head[:-1] + b',"nodes":[' + tail
    first, last = rows[0], rows[-1]  # the head and tail go on the end rows: the record is copied once
    rows[0] = head[:-1] + b',"nodes":[' + first
    rows[-1] = (rows[0] if len(rows) == 1 else last) + tail
    return b",".join(rows)


def _rows_of(nodes: list[ProcessNode], previous: list[_Row | None], since_ms: int, epoch: int) -> list[_Row]:
    """The nodes' rows (each from its previous row, or None), in one C call that prefetches the next nodes
    while it writes one (pipeline/_cstate.c, `encode_rows`: the same bytes); `_encode_row` for a node it
    leaves to Python."""
    if _crows is None or type(since_ms) is not int or not nodes:
        return [_encode_row(node, since_ms, row, epoch) for node, row in zip(nodes, previous, strict=True)]
    made: list[_Row | None] = _crows(nodes, previous, since_ms, CODE_BITS, FastEvent, _JSON.encode, _Row,
                                     epoch)
    return [_encode_row(node, since_ms, row, epoch) if new is None else new
            for node, row, new in zip(nodes, previous, made, strict=True)]


def _encode_row(node: ProcessNode, since_ms: int, previous: _Row | None, epoch: int) -> _Row:
    notable = tuple(node.notable)
    if previous is not None and previous.notable == notable:  # the same objects (or equal ones)
        notable_json = previous.notable_json
    else:
        notable_json = _notable_json(notable)
    conns = node.conns
    if conns and conns[0][0] < since_ms:
        conns = [c for c in conns if c[0] >= since_ms]  # type: ignore[assignment]
    appended = sum(node.code_counts.values())
    raw = _evidence_raw(node.evidence, appended, previous)
    fields = _node_fields(node)
    data = (_crow(fields, raw, since_ms, CODE_BITS, conns, notable_json, node.code_counts)
            if _crow is not None else None)
    if data is None:  # no C, or a value the C writer leaves to orjson (an int past int64, a float...)
        evidence = _cb64(raw, since_ms, CODE_BITS) if _cb64 is not None else _evidence_b64(raw, since_ms)
        data = orjson.dumps((*fields, evidence, tuple(conns), orjson.Fragment(notable_json),
                             tuple(node.code_counts.items())))
    return _Row(node, node.alert_mark, epoch, data, notable, notable_json, raw, appended, node.evidence)


def _notable_json(notable: tuple[Any, ...]) -> bytes:
    """A node's notable events as a JSON array (one msgspec call when they are all fast events)."""
    if all(type(event) is FastEvent for event in notable):
        return _JSON.encode(notable)
    return b"[" + b",".join(map(_event_json, notable)) + b"]"


def _event_json(event: Event | dict[str, Any]) -> bytes:
    """A notable event as JSON: what `BehaviorEvent.model_dump(mode="json")` holds, in its order.

    All of a node's notable events are kept (at most `max_notable_per_node`), whatever their age:
    they are what an alert shows, and the live forest keeps them too."""
    if type(event) is dict:  # restored (isinstance on a pydantic model class costs microseconds)
        return orjson.dumps(event)
    if isinstance(event, FastEvent):
        return _JSON.encode(event)
    if isinstance(event, BehaviorEvent):
        return orjson.dumps(event.model_dump(mode="json"))
    return orjson.dumps(event)


def _evidence_raw(evidence: Evidence, appended: int, previous: _Row | None) -> bytes:
    """The node's evidence records as int64 bytes, converting only those appended since `previous`.

    Evidence is only ever appended (one record per code count, `DeviceForest._add_evidence`) and
    drops its oldest when full, so the deque is the tail of the previous records plus the new ones:
    a busy process re-encoded at every checkpoint has its new records read, not its (up to 512) old
    ones, each a separate int object (~20 ns apiece when cold). A `Ring` is copied whole (as
    `pipeline._cstate` does): its records are int64s already.
    """
    whole = ring_bytes(evidence)  # one buffer: copied whole, nothing to reuse
    if whole is not None:
        return whole
    held = len(evidence)
    new = appended - previous.appended if previous is not None else held
    if (previous is None or previous.source is not evidence or new < 0 or new >= held
            or len(previous.evidence) < 8 * (held - new)):
        return _pack_tail(evidence, held)
    kept = previous.evidence[len(previous.evidence) - 8 * (held - new):]
    return kept + _pack_tail(evidence, new) if new else kept


def _pack_tail(evidence: Evidence, count: int) -> bytes:
    """The last `count` records (in order) as little-endian int64 bytes."""
    if _ctail is not None:  # a ring's buffer, or a deque's right end, read in C (pipeline/_cstate.c)
        return _ctail(evidence, count)
    return _pack(evidence if count >= len(evidence) else list(islice(reversed(evidence), count))[::-1])


def _pack(records: Iterable[int]) -> bytes:
    packed = array("q", records)  # int64: behaviour records are (ms << 8 | code)
    if _BIG_ENDIAN:  # pragma: no cover - the records are little-endian on the wire
        packed.byteswap()
    return packed.tobytes()


def _evidence_b64(raw: bytes, since_ms: int) -> str:
    """Base64 of the records; those stamped before `since_ms` are left out when the oldest is."""
    if not raw:
        return ""
    if int.from_bytes(raw[:8], "little", signed=True) >> CODE_BITS < since_ms:  # usually in time order
        packed = np.frombuffer(raw, dtype="<i8")
        raw = packed[(packed >> CODE_BITS) >= since_ms].tobytes()
    return binascii.b2a_base64(raw, newline=False).decode()


def forest_to_bytes(forest: DeviceForest, keep_since_ms: int = 0) -> bytes:
    """A forest's state record: orjson bytes of the document `forest_to_dict` returns. Evidence and
    connections stamped before `keep_since_ms` (older than any window that will read them) are left
    out."""
    return ForestEncoder().encode(forest, keep_since_ms)


def forest_to_dict(forest: DeviceForest, keep_since_ms: int = 0) -> dict[str, Any]:
    """The state record as a JSON-compatible dict (what `forest_from_dict` reads)."""
    data: dict[str, Any] = orjson.loads(forest_to_bytes(forest, keep_since_ms))
    return data


def forest_from_dict(data: Any, limits: TreeLimits | None = None) -> DeviceForest:
    """Rebuild a forest; raise StateError when the snapshot is not one we wrote."""
    if not isinstance(data, dict):
        raise StateError("forest state is not an object")
    device = data.get("device_id")
    device_id = device if isinstance(device, str) else None
    if data.get("v") != STATE_VERSION:
        raise StateError(f"unsupported forest state version {data.get('v')!r}", device_id=device_id)
    try:
        return _rebuild(data, limits)
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise StateError(f"corrupt forest state: {exc}", device_id=device_id) from exc


def _rebuild(data: dict[str, Any], limits: TreeLimits | None) -> DeviceForest:
    forest = DeviceForest(str(data["device_id"]), str(data["platform"]), limits)
    forest.watermark_ms, forest.seq_hwm = int(data["watermark_ms"]), int(data["seq_hwm"])
    forest.stats = ForestStats(**{k: int(v) for k, v in data["stats"].items()})
    forest.restore((_node_from_row(row, forest.limits) for row in data["nodes"]), data["exited"])
    return forest


def _node_from_row(row: list[Any], limits: TreeLimits) -> ProcessNode:
    if len(row) != len(_FIELDS) + _TAILS:
        raise ValueError(f"node row has {len(row)} fields, expected {len(_FIELDS) + _TAILS}")
    values = dict(zip(_FIELDS, row[: len(_FIELDS)], strict=True))
    for name in _INT_FIELDS:
        values[name] = None if values[name] is None else int(values[name])
    for name in _REQUIRED_INT_FIELDS:
        values[name] = int(values[name])
    for name in _STR_FIELDS:
        if not isinstance(values[name], str):
            raise TypeError(f"node field {name} must be a string")
    node = ProcessNode(**values)
    node.set_image(node.image)
    evidence = np.frombuffer(base64.b64decode(row[-4], validate=True), dtype="<i8")
    if ((evidence & CODE_MASK) >= N_COUNTERS).any():
        raise ValueError(f"unknown behaviour code in node {node.key}")
    node.evidence = new_evidence(limits.max_evidence_per_node, evidence.tolist())
    node.conns = deque(
        ((int(t), str(ip), int(port)) for t, ip, port in row[-3]), maxlen=limits.max_conns_per_node
    )
    if not all(isinstance(e, dict) for e in row[-2]):
        raise TypeError(f"notable events of node {node.key} must be objects")
    node.notable = deque(row[-2], maxlen=limits.max_notable_per_node)  # validated when an alert needs them
    node.code_counts = {int(code): int(n) for code, n in row[-1]}
    return node


def forest_from_bytes(data: bytes, limits: TreeLimits | None = None) -> DeviceForest:
    """Inverse of `forest_to_bytes`; StateError on anything that is not a forest we wrote."""
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"forest state is not JSON: {exc}") from exc
    return forest_from_dict(decoded, limits)
