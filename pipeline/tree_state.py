"""Compact serialisation of a `DeviceForest`, for the stream shell's changelog and for tests.

A forest becomes a small JSON-compatible dict (nodes as positional lists, evidence as base64 of
the little-endian int64 records it already is) and, through orjson, bytes. Behaviour older than
the caller's window can be left out (`keep_since_ms`): it can no longer move a score. Node order
is the forest's recency order, so flood eviction after a restore picks the same victims it would
have picked before the crash. Notable events are kept as plain dicts after a restore and
validated only when an alert shows them, so restoring a large device stays cheap.
Reading refuses unknown versions and malformed nodes with a `StateError` naming the device:
a corrupt changelog entry must be visible, never half-applied.
"""

from __future__ import annotations

import base64
import binascii
from collections import deque
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from pipeline.behaviour import N_COUNTERS
from pipeline.errors import StateError
from pipeline.tree import DeviceForest, ForestStats, ProcessNode, TreeLimits, ts_ms
from pipeline.windows import CODE_BITS, CODE_MASK
from schemas.events import BehaviorEvent
from schemas.fastcodec import FastEvent, to_json_dict

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


def forest_to_dict(forest: DeviceForest, keep_since_ms: int = 0) -> dict[str, Any]:
    """A JSON-compatible snapshot; evidence, connections and notable events before `keep_since_ms`
    (older than any window that will read them) are left out."""
    return {
        "v": STATE_VERSION,
        "device_id": forest.device_id,
        "platform": forest.platform,
        "watermark_ms": forest.watermark_ms,
        "seq_hwm": forest.seq_hwm,
        "stats": forest.stats.as_dict(),
        "nodes": [_node_row(forest.nodes[key], keep_since_ms) for key in forest.recency_order()],
        "exited": forest.exit_order(),
    }


def _node_row(node: ProcessNode, since_ms: int) -> list[Any]:
    row: list[Any] = [getattr(node, name) for name in _FIELDS]
    evidence = np.fromiter(node.evidence, dtype="<i8", count=len(node.evidence))
    row.append(base64.b64encode(evidence[(evidence >> CODE_BITS) >= since_ms].tobytes()).decode())
    row.append([list(c) for c in node.conns if c[0] >= since_ms])
    row.append(_notable(node, since_ms))
    row.append(sorted(node.code_counts.items()))
    return row


def _notable(node: ProcessNode, since_ms: int) -> list[dict[str, Any]]:
    """Notable events as dicts; each model is dumped once and the dict kept in its place."""
    kept = []
    for i, event in enumerate(node.notable):
        if isinstance(event, BehaviorEvent):
            when, event = ts_ms(event), event.model_dump(mode="json")
            node.notable[i] = event
        elif isinstance(event, FastEvent):
            when, event = ts_ms(event), to_json_dict(event)
            node.notable[i] = event
        else:
            when = _dict_ts_ms(event)
        if when >= since_ms:
            kept.append(event)
    return kept


def _dict_ts_ms(event: dict[str, Any]) -> int:
    try:
        return int(datetime.fromisoformat(str(event.get("ts"))).timestamp() * 1000)
    except ValueError:
        return 1 << 62  # unreadable time: keep it; the alert path validates it


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
    node.evidence = deque(evidence.tolist(), maxlen=limits.max_evidence_per_node)
    node.conns = deque(
        ((int(t), str(ip), int(port)) for t, ip, port in row[-3]), maxlen=limits.max_conns_per_node
    )
    if not all(isinstance(e, dict) for e in row[-2]):
        raise TypeError(f"notable events of node {node.key} must be objects")
    node.notable = deque(row[-2], maxlen=limits.max_notable_per_node)  # validated when an alert needs them
    node.code_counts = {int(code): int(n) for code, n in row[-1]}
    return node


def forest_to_bytes(forest: DeviceForest, keep_since_ms: int = 0) -> bytes:
    """orjson bytes of `forest_to_dict`."""
    return orjson.dumps(forest_to_dict(forest, keep_since_ms))


def forest_from_bytes(data: bytes, limits: TreeLimits | None = None) -> DeviceForest:
    """Inverse of `forest_to_bytes`; StateError on anything that is not a forest we wrote."""
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"forest state is not JSON: {exc}") from exc
    return forest_from_dict(decoded, limits)
