"""An alert's process tree as a server-rendered SVG: no script, no CDN, nothing fetched.

Each process is a box on its own row, indented by depth, joined to its parent by elbow lines; the
scored process is highlighted. Every string from the alert passes through `esc` (control characters
made visible, then XML escaping of `& < > " '`), so a command line holding markup is drawn as text,
never parsed as SVG or HTML.
"""

from __future__ import annotations

from html import escape

from pipeline.soc.describe import node_title, truncate
from pipeline.soc.terminal import safe
from pipeline.soc.tree_layout import TreeRow, actions_by_process, evidence_by_process, tree_rows
from schemas.alerts import Alert

WIDTH = 960
ROW_HEIGHT = 52
BOX_HEIGHT = 42
INDENT = 30
MARGIN = 12
COMMAND_CHARS = 110
TOOLTIP_CHARS = 2000


def esc(text: str) -> str:
    """Text safe inside an SVG/HTML element or a quoted attribute; control characters made visible."""
    return escape(safe(text), quote=True)


def tree_svg(alert: Alert) -> str:
    """The `<svg>` element drawing the alert's process tree."""
    rows = tree_rows(alert.process_tree)
    evidence = evidence_by_process(alert.process_tree)
    actions, _ = actions_by_process(alert)
    height = MARGIN * 2 + ROW_HEIGHT * len(rows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="tree" id="process-tree" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'aria-label="process tree of alert {esc(alert.alert_id)}">',
    ]
    parts += _connectors(rows)
    for index, row in enumerate(rows):
        key = row.node.process_key
        parts.append(_box(row, index, len(evidence.get(key, ())), len(actions.get(key, ()))))
    parts.append("</svg>")
    return "\n".join(parts)


def _x(depth: int) -> int:
    return MARGIN + depth * INDENT


def _y(index: int) -> int:
    return MARGIN + index * ROW_HEIGHT


def _connectors(rows: list[TreeRow]) -> list[str]:
    """Elbow lines from each parent's left edge down and across to each child."""
    lines: list[str] = []
    last_at_depth: dict[int, int] = {}
    for index, row in enumerate(rows):
        last_at_depth[row.depth] = index
        if row.depth == 0:
            continue
        parent = last_at_depth[row.depth - 1]
        x_parent, y_child = _x(row.depth - 1) + 10, _y(index) + BOX_HEIGHT // 2
        lines.append(f'<path class="edge" d="M{x_parent} {_y(parent) + BOX_HEIGHT} '
                     f'V{y_child} H{_x(row.depth)}" />')
    return lines


def _box(row: TreeRow, index: int, evidence: int, actions: int) -> str:
    node = row.node
    x, y = _x(row.depth), _y(index)
    css = "node scored" if node.scored else "node"
    badges = " · ".join(part for part in (
        "scored" if node.scored else "", f"{evidence} evidence" if evidence else "",
        f"{actions} action{'s' if actions > 1 else ''}" if actions else "",
    ) if part)
    command = node.command_line or node.image or ""
    tooltip = esc(node.image or "?") + "&#10;" + esc(truncate(node.command_line or "", TOOLTIP_CHARS))
    return (
        f'<g class="{css}" data-process-key="{esc(node.process_key)}">'
        f"<title>{tooltip}</title>"
        f'<rect x="{x}" y="{y}" rx="5" width="{WIDTH - x - MARGIN}" height="{BOX_HEIGHT}" />'
        f'<text class="title" x="{x + 10}" y="{y + 17}">{esc(node_title(node))}'
        f'<tspan class="badge" dx="12">{esc(badges)}</tspan></text>'
        f'<text class="cmd" x="{x + 10}" y="{y + 34}">{esc(truncate(command, COMMAND_CHARS))}</text>'
        "</g>"
    )
