"""The compiled fold applies the start of a new process under a known parent, and the end of a known
process, exactly as `apply` does.

Those are the process starts and ends the fold takes (a few % of a fleet's events each, and the most
Python per event before): for a start, a key the forest does not hold, a parent it does, room for
one more node. Every other start (an unknown parent, a placeholder filled, a redelivered or repeated
start, a full forest) and the end of a process not known yet are still `apply`'s. Forests built both
ways are compared field by field, and what the fold takes is checked to really be taken (else the
speed-up silently disappears).
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from forest_support import queued, snapshot, tree_path

from pipeline import tree
from pipeline.behaviour import Counter
from pipeline.eventkit import EventKit
from pipeline.tree import DeviceForest, TreeLimits
from schemas import codec, fastcodec

NOT_BUILT = "pipeline._cforest is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
IMAGES = [
    r"C:\Windows\System32\cmd.exe",
    r"C:\Windows\System32\rundll32.exe",
    r"C:\Users\a\AppData\Local\Temp\drop.exe",
    "/usr/bin/curl",
    r"C:\Windows\System32\whoami.exe",
]
COMMANDS = [
    "",
    "x.exe /q",
    "powershell -enc SQBFAFgA",
    "vssadmin delete shadows /all /quiet",
    "whoami /all",
    "netsh advfirewall firewall show rule name=all",  # a lone-command indicator only: kept as evidence
]


def _starts(seed: int, n: int = 200, step_ms: int | None = None) -> list[Any]:
    rng = random.Random(seed)
    kit = EventKit(
        "dev-s", start=datetime(2026, 5, 1, tzinfo=UTC), step_ms=step_ms or rng.choice([1, 30_000])
    )
    keys = ["root"]
    events = [kit.start("root", r"C:\Windows\explorer.exe", "explorer.exe")]
    for i in range(n):
        roll = rng.random()
        if roll < 0.6:
            key, parent = f"p{i}", rng.choice(keys) if rng.random() < 0.9 else f"ghost{i}"
            keys.append(key)
            fields = {
                "sha256": rng.choice([None, "a" * 64]),
                "user": rng.choice([None, "CORP\\a"]),
                "pid": rng.choice([None, 4, 1234]),
                "integrity_level": rng.choice([None, "High"]),
                "uid": rng.choice([None, 0, 1000]),
            }
            event = kit.start(key, rng.choice(IMAGES), rng.choice(COMMANDS), parent=parent, **fields)
            if rng.random() < 0.3:  # the envelope names another image than the payload
                event = event.model_copy(update={"image": rng.choice(["", *IMAGES])})
            events.append(event)
        elif roll < 0.7 and len(events) > 2:
            events.append(rng.choice(events[-5:]))  # redelivered, or a start seen twice
        else:
            events.append(kit.write(rng.choice(keys), r"C:\Users\a\AppData\Local\Temp\x.exe"))
    return events


def _build(events: list[Any], limits: TreeLimits | None, compiled: bool) -> tuple[Any, Any, list[str]]:
    applied = list[str]()
    assert tree._fold is not None, NOT_BUILT
    original = DeviceForest.apply

    def apply(self: DeviceForest, event: Any) -> Any:
        applied.append(event.process_key)
        return original(self, event)

    DeviceForest.apply = apply  # type: ignore[method-assign]
    try:
        with tree_path(compiled):
            forest = DeviceForest("dev-s", "windows", limits)
            changed: list[tuple[str, str, bool]] = []
            for lo in range(0, len(events), 23):
                assert forest.apply_run(events[lo : lo + 23], 0, changed) == len(events[lo : lo + 23])
    finally:
        DeviceForest.apply = original  # type: ignore[method-assign]
    return snapshot(forest), queued(changed), applied


@pytest.mark.parametrize(
    "limits", [None, TreeLimits(max_nodes=12, max_notable_per_node=1, max_evidence_per_node=3)]
)
@pytest.mark.parametrize("seed", range(8))
def test_new_processes_under_known_parents_build_the_same_forest_in_c(
    seed: int, limits: TreeLimits | None
) -> None:
    events = _starts(seed)
    for model in (events, [fastcodec.decode_events(codec.encode_event(e))[0] for e in events]):
        python, compiled = _build(model, limits, False), _build(model, limits, True)
        assert compiled[:2] == python[:2]
        if limits is None:  # (a full forest's starts are all `apply`'s)
            assert len(compiled[2]) < len(python[2]) / 4  # most starts no longer reach `apply`


def test_the_fold_takes_exactly_the_starts_it_can_apply_without_apply() -> None:
    kit = EventKit("dev-s", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [
        kit.start("root", r"C:\Windows\explorer.exe", "explorer.exe"),  # no parent: apply's
        kit.start("a", IMAGES[0], "whoami /all", parent="root"),  # new under a known parent: the fold's
        kit.start("b", IMAGES[1], "x", parent="ghost"),  # unknown parent (a placeholder): apply's
        kit.start("ghost", IMAGES[2], "x", parent="root"),  # fills the placeholder: apply's
        kit.start("a", IMAGES[0], "whoami /all", parent="root"),  # a start seen again: apply's
    ]
    _, changed, applied = _build(events, None, True)
    assert applied == ["root", "b", "ghost", "a"]
    assert ("dev-s", "a", True) in changed and ("dev-s", "root", True) in changed  # whoami /all is notable
    assert _build(events, TreeLimits(max_nodes=1), True)[2] == [
        "root",
        "a",
        "b",
        "ghost",
        "a",
    ]  # full: apply's


def test_the_start_of_a_new_process_before_1970_keeps_its_last_activity_at_zero() -> None:
    """(Not from a validated event, which is after 1990: the fold reads whatever the objects hold.)"""
    events = _starts(3, 30, step_ms=1)
    early = events[0].ts - datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=15)
    events = [e.model_copy(update={"ts": e.ts - early}) for e in events]
    assert events[0].ts < datetime(1970, 1, 1, tzinfo=UTC) < events[-1].ts
    python, compiled = _build(events, None, False), _build(events, None, True)
    assert compiled[:2] == python[:2]
    nodes = python[0]["nodes"].values()
    assert any(n["last_ms"][1] == 0 and n["start_ms"][1] < 0 for n in nodes)
    assert any(n["last_ms"][1] > 0 for n in nodes)


def test_the_child_codes_and_indicators_the_tree_names_are_the_ones_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tree, "child_codes", lambda image: (Counter.CHILD_SPAWN, Counter.LSASS_READ))
    monkeypatch.setattr(tree, "indicator_mask", lambda text: 0b100)
    events = _starts(5, 60)
    python, compiled = _build(events, None, False), _build(events, None, True)
    assert compiled[:2] == python[:2]
    nodes = compiled[0]["nodes"]
    assert all(node["cmd_mask"][1] == 0b100 for node in nodes.values() if node["started"][1])
    assert any(
        Counter.LSASS_READ in [code for _, code, _, _ in node["code_counts"][1]] for node in nodes.values()
    )


def test_a_start_with_only_a_lone_command_indicator_is_kept_as_evidence_without_a_notable_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process-creation-only alert (Security 4688) carries the command line that made it: its start is
    kept as notable evidence, in C as in Python, and it queues what it queued before (no ancestors
    re-scored for it)."""
    kit = EventKit("dev-s", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [
        kit.start("root", r"C:\Windows\explorer.exe", "explorer.exe"),
        kit.start("fw", r"C:\Windows\System32\netsh.exe", COMMANDS[5], parent="root"),
        kit.start("plain", r"C:\Windows\System32\netsh.exe", "netsh interface show interface", parent="root"),
    ]
    assert tree._fold is not None, NOT_BUILT

    def build(compiled: bool) -> tuple[DeviceForest, list[tuple[str, str, bool]]]:
        forest = DeviceForest("dev-s", "windows")
        changed: list[tuple[str, str, bool]] = []
        with tree_path(compiled):
            assert forest.apply_run(events, 0, changed) == 3
        return forest, queued(changed)

    for compiled in (False, True):
        forest, changed = build(compiled)
        assert list(forest.nodes["fw"].notable) == [events[1]]
        assert not forest.nodes["plain"].notable
        with monkeypatch.context() as m:
            m.setattr(tree, "lone_mask", lambda text: 0)
            before, changed_before = build(compiled)
        assert not before.nodes["fw"].notable
        assert changed == changed_before
    assert _build(events, None, True)[2] == ["root"]  # both starts were the fold's


def test_the_lone_mask_the_tree_names_is_the_one_the_fold_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree, "indicator_mask", lambda text: 0)
    monkeypatch.setattr(tree, "lone_mask", lambda text: int(text == "x.exe /q"))
    events = _starts(6, 60)
    python, compiled = _build(events, None, False), _build(events, None, True)
    assert compiled[:2] == python[:2]
    forest = DeviceForest("dev-s", "windows")
    with tree_path(True):
        forest.apply_run(events, 0, [])
    nodes = forest.nodes.values()
    kept = {n.command_line for n in nodes for e in n.notable if e.payload.kind == "process_start"}
    assert kept == {"x.exe /q"}


@pytest.mark.parametrize("answer", ["raises", "not an int"])
def test_a_lone_mask_that_misbehaves_on_one_start_leaves_that_start_to_apply(
    monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """The fold hands the start to Python's `apply`, which meets the same answer: the same forest, the same
    error, in both paths."""
    real = tree.lone_mask

    def odd(text: str) -> Any:
        if text == COMMANDS[5]:
            if answer == "raises":
                raise RuntimeError("lone_mask bug")
            return 2.0
        return real(text)

    monkeypatch.setattr(tree, "lone_mask", odd)
    events = _starts(4, 80)
    assert any(getattr(e.payload, "command_line", None) == COMMANDS[5] for e in events)
    if answer == "raises":
        for compiled in (False, True):
            with tree_path(compiled), pytest.raises(RuntimeError, match="lone_mask bug"):
                DeviceForest("dev-s", "windows").apply_run(events, 0, [])
        return
    python, compiled = _build(events, None, False), _build(events, None, True)
    assert compiled[:2] == python[:2]
    assert len(compiled[2]) < len(python[2])  # the other starts were still the fold's


def test_the_fold_refuses_starts_without_the_lone_mask() -> None:
    """A fold that cannot keep a lone-command start as evidence would build another forest than Python."""
    assert tree._fold is not None, NOT_BUILT
    forest = DeviceForest("dev-s", "windows")
    short = (tree.child_codes, tree.indicator_mask, None)
    with pytest.raises(TypeError, match="lone_mask"):
        tree._fold(forest, [], 0, [], tree.CODES_BY_KIND, set(), set(), None, short)
    with pytest.raises(TypeError, match="lone_mask"):
        tree._fold(forest, [], 0, [], tree.CODES_BY_KIND, set(), set(), None, (*short, None))


def test_a_start_seen_again_does_not_keep_its_lone_command_line_twice() -> None:
    kit = EventKit("dev-s", start=datetime(2026, 5, 1, tzinfo=UTC))
    root = kit.start("root", r"C:\Windows\explorer.exe", "explorer.exe")
    fw = kit.start("fw", r"C:\Windows\System32\netsh.exe", COMMANDS[5], parent="root")
    again = fw.model_copy(update={"seq": fw.seq + 100})
    for compiled in (False, True):
        forest = DeviceForest("dev-s", "windows")
        with tree_path(compiled):
            forest.apply_run([root, fw, again], 0, [])
        assert list(forest.nodes["fw"].notable) == [fw]


def test_a_child_classifier_that_raises_raises_from_apply_with_nothing_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(image: str) -> tuple[Counter, ...]:
        raise RuntimeError("classifier bug")

    kit = EventKit("dev-s", start=datetime(2026, 5, 1, tzinfo=UTC))
    forest = DeviceForest("dev-s", "windows")
    forest.apply_run([kit.start("root", r"C:\Windows\explorer.exe", "x")], 0, [])
    monkeypatch.setattr(tree, "child_codes", broken)
    with pytest.raises(RuntimeError, match="classifier bug"):
        forest.apply_run([kit.start("a", IMAGES[0], "x", parent="root")], 0, [])
    assert forest.nodes["a"].parent_key == "root"  # as `apply` leaves it: linked before the codes


def test_the_fold_keeps_no_reference_to_the_starts_and_ends_it_applied_once_the_forest_is_gone() -> None:
    """A leak on this path would grow a worker by every process its fleet starts."""
    kit = EventKit("dev-s", start=datetime(2026, 5, 1, tzinfo=UTC))
    root = kit.start("root", r"C:\Windows\explorer.exe", "x")
    starts = [
        kit.start(f"p{i}", IMAGES[i % 5], COMMANDS[(0, 1, 5)[i % 3]], parent="root", sha256="b" * 64)
        for i in range(60)
    ]
    events = [root, *[fastcodec.decode_events(codec.encode_event(e))[0] for e in starts]]
    watched = [
        *events,
        *(e.payload for e in events),
        *(e.payload.image for e in events),
        *(e.ts for e in events),
    ]
    watched += [e.payload.command_line for e in events] + [e.payload.sha256 for e in events[1:]]
    ends = [fastcodec.decode_events(codec.encode_event(kit.end(f"p{i}")))[0] for i in range(60)]
    watched += [*ends, *(e.process_key for e in ends), *(e.ts for e in ends)]
    events += ends
    before = [sys.getrefcount(o) for o in watched]
    for _ in range(20):
        forest = DeviceForest("dev-s", "windows")
        changed: list[tuple[str, str, bool]] = []
        assert forest.apply_run(events, 0, changed) == len(events)
        assert len(forest.nodes) == 61 and forest.stats.nodes_created == 61 and len(forest.exit_order()) == 60
        del forest, changed
    assert [sys.getrefcount(o) for o in watched] == before


def test_the_end_of_a_known_process_is_applied_by_the_fold_as_apply_does() -> None:
    kit = EventKit("dev-s", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [
        kit.start("root", r"C:\Windows\explorer.exe", "x"),
        kit.start("a", IMAGES[0], "x", parent="root"),
        kit.start("b", IMAGES[1], "x", parent="root"),
        kit.end("b"),
        kit.end("a"),
        kit.end("b"),  # reported twice: a later end time, the exit order unchanged
        kit.end("nobody"),  # not known: `apply` creates it
        kit.write("a", r"C:\t\late.txt"),
    ]
    python, compiled = _build(events, None, False), _build(events, None, True)
    assert compiled[:2] == python[:2]
    assert compiled[2] == ["root", "nobody"]
    assert compiled[0]["exited"] == ["b", "a", "nobody"]
    ends = {key: node["end_ms"][1] for key, node in compiled[0]["nodes"].items()}
    assert ends["b"] == kit.now_ms - 20 and ends["a"] == kit.now_ms - 30 and ends["root"] is None
    assert ("dev-s", "b", False) in compiled[1]


def test_a_forest_whose_new_nodes_hold_odd_values_builds_the_same_forest_both_ways() -> None:
    """`_new_node` is the forest's own (a subclass may change it): the fold compares what it set as
    Python compares it, and a float last activity is replaced by the start's int time in both."""

    class OddForest(DeviceForest):
        def _new_node(self, key: str, *, placeholder: bool = False, keep: str | None = None) -> Any:
            node = super()._new_node(key, placeholder=placeholder, keep=keep)
            node.last_ms = -1.5  # type: ignore[assignment]
            return node

    events, results = _starts(6, 80), []
    for compiled in (False, True):
        with tree_path(compiled):
            forest = OddForest("dev-s", "windows")
            changed: list[tuple[str, str, bool]] = []
            forest.apply_run(events, 0, changed)
        results.append((snapshot(forest), queued(changed)))
    assert results[0] == results[1]
    assert all(isinstance(n["last_ms"][1], int) for n in results[1][0]["nodes"].values() if n["started"][1])
