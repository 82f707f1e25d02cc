"""Compact serialisation of a `DeviceForest`, for the stream shell's changelog and for tests.

A forest becomes a small JSON-compatible dict (nodes as positional lists, evidence as the packed
integers it already is) and, through orjson, bytes. Node order is the forest's recency order, so
flood eviction after a restore picks the same victims it would have picked before the crash.
Reading refuses unknown versions and malformed nodes with a `StateError` naming the device:
a corrupt changelog entry must be visible, never half-applied.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from pipeline.behaviour import N_COUNTERS
from pipeline.errors import StateError
from pipeline.tree import DeviceForest, ForestStats, ProcessNode, TreeLimits
from pipeline.windows import CODE_MASK
from schemas.events import BehaviorEvent

STATE_VERSION = 1
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


def forest_to_dict(forest: DeviceForest) -> dict[str, Any]:
    """A JSON-compatible snapshot of the whole forest."""
    return {
        "v": STATE_VERSION,
        "device_id": forest.device_id,
        "platform": forest.platform,
        "watermark_ms": forest.watermark_ms,
        "seq_hwm": forest.seq_hwm,
        "stats": forest.stats.as_dict(),
        "nodes": [_node_row(forest.nodes[key]) for key in forest.recency_order()],
        "exited": forest.exit_order(),
    }


def _node_row(node: ProcessNode) -> list[Any]:
    row: list[Any] = [getattr(node, name) for name in _FIELDS]
    row.append(list(node.evidence))
    row.append([list(c) for c in node.conns])
    row.append([event.model_dump(mode="json") for event in node.notable])
    row.append(sorted(node.code_counts.items()))
    return row


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
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # pydantic errors are ValueErrors
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
    evidence = [int(x) for x in row[-4]]
    if any((x & CODE_MASK) >= N_COUNTERS for x in evidence):
        raise ValueError(f"unknown behaviour code in node {node.key}")
    node.evidence = deque(evidence, maxlen=limits.max_evidence_per_node)
    node.conns = deque(
        ((int(t), str(ip), int(port)) for t, ip, port in row[-3]), maxlen=limits.max_conns_per_node
    )
    node.notable = deque(
        (BehaviorEvent.model_validate(e) for e in row[-2]), maxlen=limits.max_notable_per_node
    )
    node.code_counts = {int(code): int(n) for code, n in row[-1]}
    return node


def forest_to_bytes(forest: DeviceForest) -> bytes:
    """orjson bytes of `forest_to_dict`."""
    return orjson.dumps(forest_to_dict(forest))


def forest_from_bytes(data: bytes, limits: TreeLimits | None = None) -> DeviceForest:
    """Inverse of `forest_to_bytes`; StateError on anything that is not a forest we wrote."""
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"forest state is not JSON: {exc}") from exc
    return forest_from_dict(decoded, limits)
