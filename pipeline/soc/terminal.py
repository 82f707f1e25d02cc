"""Alerts as terminal text: one table row per alert (`alerts tail`) and a full page (`alerts show`).

Alert content comes from endpoints, so it is hostile until shown otherwise: a command line may carry
ANSI escape sequences that repaint the analyst's terminal, newlines that forge extra rows, or
bidirectional overrides that reverse what is read. `safe()` makes every such character visible as
an escape before anything reaches the screen. All functions here are pure and return strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipeline.soc.describe import (
    alert_host,
    basename,
    describe_action,
    describe_event,
    describe_feature,
    node_title,
    score_text,
    truncate,
)
from pipeline.soc.tree_layout import TreeRow, actions_by_process, evidence_by_process, tree_rows
from schemas.alerts import ActionTaken, Alert, TreeNode
from schemas.events import BehaviorEvent

# C0 and C1 controls, DEL, and the Unicode bidi embeddings/overrides/isolates and line separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
MAX_EVIDENCE_PER_PROCESS = 6
_COLUMNS = (("TIME", 19), ("HOST", 18), ("SCORE", 5), ("MODE", 5), ("TACTIC", 19), ("DETECTION", 50))


def safe(text: str) -> str:
    """`text` with every control / bidi character shown as an escape (`\\x1b`, `\\u202e`)."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _cell(text: str, width: int) -> str:
    return truncate(safe(text), width).ljust(width)


def table_header() -> str:
    """The column titles of `table_row`."""
    return "  ".join(title.ljust(width) for title, width in _COLUMNS) + "  ALERT"


def table_row(alert: Alert) -> str:
    """One alert as one line (never more: newlines in the content are escaped)."""
    values = (
        alert.created_at.strftime("%Y-%m-%d %H:%M:%S"), alert_host(alert), score_text(alert.score),
        alert.mode.value, alert.tactic.value, alert.detection_name,
    )
    cells = [_cell(value, width) for value, (_, width) in zip(values, _COLUMNS, strict=True)]
    return "  ".join(cells) + "  " + safe(alert.alert_id)


def render_alert(alert: Alert, width: int = 110) -> str:
    """The whole alert: header, process tree with evidence and actions, top features."""
    lines = [*_header(alert), "", f"Process tree (root {safe(alert.process_tree.root_process_key)}):"]
    lines.extend(tree_lines(alert, width))
    _, loose = actions_by_process(alert)
    if loose:
        lines += ["", "Other actions:", *(f"  → {safe(describe_action(a))}" for a in loose)]
    if not alert.actions:
        lines += ["", "Actions: none"]
    lines += ["", "Top features (value, contribution to the score):"]
    lines += [f"  {safe(describe_feature(f))}" for f in alert.top_features] or ["  (none recorded)"]
    return "\n".join(truncate(line, max(width, 40)) for line in lines) + "\n"


def _header(alert: Alert) -> list[str]:
    threshold = f" (threshold {score_text(alert.threshold)})" if alert.threshold is not None else ""
    techniques = ", ".join(alert.techniques) or "-"
    lines = [
        f"{safe(alert.detection_name)}",
        f"  alert     {safe(alert.alert_id)}",
        f"  device    {safe(alert.device_id)}  host {safe(alert.hostname or '-')}  ({alert.platform.value})",
        f"  score     {score_text(alert.score)}{threshold}  tactic {alert.tactic.value}  "
        f"techniques {techniques}",
        f"  mode      {alert.mode.value}  model {safe(alert.model_version)}  "
        f"features {safe(alert.feature_version)}",
        f"  seen      {alert.first_seen.isoformat()} .. {alert.last_seen.isoformat()}",
    ]
    if alert.artifact_sha256 or alert.artifact_path:
        lines.append(f"  artifact  {safe(alert.artifact_path or '?')}  sha256 {alert.artifact_sha256 or '-'}")
    if alert.summary:
        lines.append(f"  summary   {safe(alert.summary)}")
    return lines


def tree_lines(alert: Alert, width: int = 110) -> list[str]:
    """The box-drawing tree: each process, its command line, evidence and the actions on it."""
    rows = tree_rows(alert.process_tree)
    evidence = evidence_by_process(alert.process_tree)
    actions, _ = actions_by_process(alert)
    lines: list[str] = []
    for index, row in enumerate(rows):
        has_children = index + 1 < len(rows) and rows[index + 1].depth > row.depth
        lines.append(_node_line(row))
        detail_prefix = _detail_prefix(row, has_children)
        details = _details(row.node, evidence.get(row.node.process_key, []),
                           actions.get(row.node.process_key, []))
        room = max(width - len(detail_prefix), 20)
        lines.extend(detail_prefix + truncate(detail, room) for detail in details)
    return lines


def _guides(row: TreeRow) -> str:
    return "".join("│   " if guide else "    " for guide in row.guides)


def _node_line(row: TreeRow) -> str:
    connector = "" if row.depth == 0 else ("└── " if row.last else "├── ")
    marker = "  ◀ scored" if row.node.scored else ""
    return f"{_guides(row)}{connector}{safe(node_title(row.node))}{marker}"


def _detail_prefix(row: TreeRow, has_children: bool) -> str:
    own = "" if row.depth == 0 else ("    " if row.last else "│   ")
    return _guides(row) + own + ("│   " if has_children else "    ")


def _details(node: TreeNode, events: Sequence[BehaviorEvent], actions: Sequence[ActionTaken]) -> list[str]:
    lines = [f"cmd   {safe(node.command_line)}"] if node.command_line else []
    if node.image and basename(node.image) != node.image:
        lines.append(f"image {safe(node.image)}")
    identity = "  ".join(part for part in (
        f"sha256 {node.sha256}" if node.sha256 else "", f"user {safe(node.user)}" if node.user else "",
    ) if part)
    if identity:
        lines.append(identity)
    lines += [f"evt   {safe(describe_event(event))}" for event in events[:MAX_EVIDENCE_PER_PROCESS]]
    if len(events) > MAX_EVIDENCE_PER_PROCESS:
        lines.append(f"evt   … {len(events) - MAX_EVIDENCE_PER_PROCESS} more")
    lines += [f"act → {safe(describe_action(action))}" for action in actions]
    return lines
