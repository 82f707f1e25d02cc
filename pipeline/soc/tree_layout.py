"""Lay out an alert's process-tree snapshot as ordered rows, once, for the terminal and the SVG.

Why a layout step of its own: the snapshot is a flat list of nodes and edges that a hostile or
truncated record can make odd (a parent outside the snapshot, a node twice, even a cycle), and both
renderers must draw the same tree. Rows come in depth-first order with, for every row, which
ancestor levels still have siblings below (where a vertical guide line continues).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from schemas.alerts import ActionTaken, Alert, ProcessTreeSnapshot, TreeNode
from schemas.events import BehaviorEvent


@dataclass(frozen=True, slots=True)
class TreeRow:
    """One process in drawing order."""

    node: TreeNode
    depth: int  # 0 for a root
    last: bool  # the last child of its parent (or the last root)
    guides: tuple[bool, ...]  # per ancestor level 1..depth-1: a guide line continues down through it


def tree_rows(snapshot: ProcessTreeSnapshot) -> list[TreeRow]:
    """Every node exactly once, depth first; children by start time, then snapshot order."""
    nodes = _unique(snapshot.nodes)
    children = _children(snapshot, nodes)
    roots = _roots(snapshot, nodes)
    rows: list[TreeRow] = []
    seen: set[str] = set()
    for index, key in enumerate(roots):
        _walk(key, nodes, children, seen, rows, depth=0, last=index == len(roots) - 1, guides=())
    leftovers = [key for key in nodes if key not in seen]  # only reachable through a cycle
    for index, key in enumerate(leftovers):
        _walk(key, nodes, children, seen, rows, depth=0, last=index == len(leftovers) - 1, guides=())
    return rows


def _unique(nodes: Iterable[TreeNode]) -> dict[str, TreeNode]:
    unique: dict[str, TreeNode] = {}
    for node in nodes:
        unique.setdefault(node.process_key, node)
    return unique


def _parents(snapshot: ProcessTreeSnapshot, nodes: dict[str, TreeNode]) -> dict[str, str]:
    parents = {key: node.parent_process_key for key, node in nodes.items() if node.parent_process_key}
    parents.update({edge.child: edge.parent for edge in snapshot.edges if edge.child in nodes})
    return {child: parent for child, parent in parents.items() if parent in nodes and parent != child}


def _children(snapshot: ProcessTreeSnapshot, nodes: dict[str, TreeNode]) -> dict[str, list[str]]:
    order = {key: index for index, key in enumerate(nodes)}
    children: dict[str, list[str]] = {}
    for child, parent in _parents(snapshot, nodes).items():
        children.setdefault(parent, []).append(child)
    for keys in children.values():
        keys.sort(key=lambda key: (_start_key(nodes[key].started_at), order[key]))
    return children


def _start_key(started_at: datetime | None) -> float:
    return started_at.timestamp() if started_at is not None else float("inf")


def _roots(snapshot: ProcessTreeSnapshot, nodes: dict[str, TreeNode]) -> list[str]:
    parents = _parents(snapshot, nodes)
    roots = [key for key in nodes if key not in parents]
    if snapshot.root_process_key in roots:  # the alert's subtree root is drawn first
        roots.remove(snapshot.root_process_key)
        roots.insert(0, snapshot.root_process_key)
    return roots


def _walk(
    key: str, nodes: dict[str, TreeNode], children: dict[str, list[str]], seen: set[str],
    rows: list[TreeRow], *, depth: int, last: bool, guides: tuple[bool, ...],
) -> None:
    # Iterative, so a deep (or maliciously deep) chain cannot exhaust the recursion limit.
    stack = [(key, depth, last, guides)]
    while stack:
        key, depth, last, guides = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        rows.append(TreeRow(nodes[key], depth, last, guides))
        kids = [kid for kid in children.get(key, ()) if kid not in seen]
        below = (*guides, not last) if depth > 0 else guides
        for index in reversed(range(len(kids))):
            stack.append((kids[index], depth + 1, index == len(kids) - 1, below))


def evidence_by_process(snapshot: ProcessTreeSnapshot) -> dict[str, list[BehaviorEvent]]:
    """Evidence events grouped under the process that did them, in time order."""
    grouped: dict[str, list[BehaviorEvent]] = {}
    for event in sorted(snapshot.evidence, key=lambda e: (e.ts, e.seq)):
        grouped.setdefault(event.process_key, []).append(event)
    return grouped


def actions_by_process(alert: Alert) -> tuple[dict[str, list[ActionTaken]], list[ActionTaken]]:
    """Actions attached to the process they target (by key, image path or sha256), and the rest."""
    owners: dict[str, str] = {}
    for node in alert.process_tree.nodes:
        for handle in (node.process_key, node.image, node.sha256):
            if handle:
                owners.setdefault(handle, node.process_key)
    attached: dict[str, list[ActionTaken]] = {}
    loose: list[ActionTaken] = []
    for action in alert.actions:
        owner = owners.get(action.target) or owners.get(action.target.lower())
        if owner is None:
            loose.append(action)
        else:
            attached.setdefault(owner, []).append(action)
    return attached, loose
