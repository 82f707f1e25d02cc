"""Terminal rendering of alerts: the tree an analyst reads, and hostile content made harmless."""

from __future__ import annotations

from datetime import timedelta

from test_soc_samples import HOSTILE, NOW, SHA_M, alert

from pipeline.soc.terminal import render_alert, safe, table_header, table_row, tree_lines
from pipeline.soc.tree_layout import tree_rows
from schemas.alerts import ActionTaken, AlertAction, ProcessTreeSnapshot, TreeEdge, TreeNode
from schemas.common import Mode


def _snapshot(*nodes: TreeNode, root: str = "a", edges: tuple[TreeEdge, ...] = ()) -> ProcessTreeSnapshot:
    return ProcessTreeSnapshot(root_process_key=root, nodes=nodes, edges=edges)


def _node(key: str, parent: str | None = None, minute: int = 0) -> TreeNode:
    return TreeNode(process_key=key, parent_process_key=parent, image=f"/usr/bin/{key}",
                    started_at=NOW + timedelta(minutes=minute))


def test_tree_rows_are_depth_first_with_children_by_start_time() -> None:
    nodes = (_node("a"), _node("late", "a", 5), _node("early", "a", 1), _node("kid", "early", 2))
    rows = tree_rows(_snapshot(*nodes))
    assert [(r.node.process_key, r.depth, r.last) for r in rows] == [
        ("a", 0, True), ("early", 1, False), ("kid", 2, True), ("late", 1, True)]
    assert rows[2].guides == (True,)  # "early" has a later sibling: its column keeps a guide line


def test_tree_rows_survive_cycles_duplicates_and_parents_outside_the_snapshot() -> None:
    rows = tree_rows(_snapshot(
        _node("a", "outside"), _node("a", "x"), _node("x", "y"), _node("y", "x"),
        edges=(TreeEdge(parent="a", child="z"),),
    ))
    keys = [r.node.process_key for r in rows]
    assert keys[0] == "a"  # the alert's root first, though its parent is unknown
    assert sorted(keys) == ["a", "x", "y"]  # each node once; the x<->y cycle still shown; edge to z ignored


def test_a_very_deep_chain_does_not_exhaust_the_recursion_limit() -> None:
    chain = [_node("p0")] + [_node(f"p{i}", f"p{i - 1}") for i in range(1, 512)]
    rows = tree_rows(_snapshot(*chain, root="p0"))
    assert [r.depth for r in rows] == list(range(512))


def test_tree_lines_draw_boxes_with_evidence_and_actions_under_their_process() -> None:
    lines = tree_lines(alert(), width=200)
    text = "\n".join(lines)
    assert lines[0] == "WINWORD.EXE (pid 100)"
    assert "├── powershell.exe (pid 200)" in text
    assert "│   └── m.exe (pid 300)  ◀ scored" in text
    assert "└── cmd.exe (pid 400)" in text
    m_block = text[text.index("m.exe (pid 300)"):text.index("cmd.exe (pid 400)")]
    assert "evt   process_access C:\\Windows\\System32\\lsass.exe access 0x1010" in m_block
    assert "evt   network_connect tcp 203.0.113.9:443 (evil.example)" in m_block
    assert "act → quarantine_file C:\\Users\\bob\\m.exe [command c2]" in m_block
    assert f"act → publish_verdict {SHA_M}" in m_block
    word_block = text[:text.index("powershell.exe (pid 200)")]
    assert "act → kill_process_tree {W} [command c1]" in word_block


def test_hostile_command_line_cannot_forge_rows_or_drive_the_terminal() -> None:
    rendered = render_alert(alert(), width=400)
    assert "\x1b" not in rendered and "\u202e" not in rendered
    assert "\\x1b[2J\\x0aFAKE ROW \\u202eexe.txt" in rendered
    assert not any(line.startswith("FAKE ROW") for line in rendered.splitlines())
    assert safe("ok\ttab\x7f\x9b") == "ok\\x09tab\\x7f\\x9b"


def test_long_command_lines_are_truncated_to_the_width() -> None:
    long = alert().model_copy(deep=True)
    node = long.process_tree.nodes[0].model_copy(update={"command_line": "A" * 5000})
    tree = long.process_tree.model_copy(update={"nodes": (node, *long.process_tree.nodes[1:])})
    lines = tree_lines(long.model_copy(update={"process_tree": tree}), width=80)
    assert all(len(line) <= 80 for line in lines)
    assert any(line.endswith("A…") for line in lines)


def test_render_alert_shows_header_features_and_audit_mode() -> None:
    rendered = render_alert(alert(mode=Mode.AUDIT))
    assert rendered.startswith("Behavior:Win32/CredentialAccess.LsassAccess!ml\n")
    assert "score     0.970 (threshold 0.800)  tactic CredentialAccess  techniques T1003.001" in rendered
    assert "(audit: not sent)" in rendered
    assert "lsass_access = 1 (+2.310)" in rendered.split("Top features")[1]


def test_actions_that_match_no_process_are_listed_apart() -> None:
    odd = alert().model_copy(update={"actions": (
        ActionTaken(action=AlertAction.KILL_PROCESS_TREE, target="{GONE}", command_id="c9"),)})
    rendered = render_alert(odd)
    assert "Other actions:\n  → kill_process_tree {GONE} [command c9]" in rendered


def test_table_row_is_one_line_aligned_under_the_header() -> None:
    hostile = alert(hostname="ws\n-042\x1b[31m")
    row = table_row(hostile)
    assert "\n" not in row and "\x1b" not in row
    header = table_header()
    assert row.index("0.970") == header.index("SCORE")
    assert row.endswith("  al-1")
    assert HOSTILE not in row
