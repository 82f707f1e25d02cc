"""The per-device process forest: links, unknown parents, PID reuse, eviction, floods, state."""

from __future__ import annotations

import orjson
import pytest

from pipeline.behaviour import Counter
from pipeline.errors import StateError
from pipeline.eventkit import EventKit
from pipeline.lexicon import ImageClass
from pipeline.tree import NO_CHANGE, DeviceForest, TreeLimits
from pipeline.tree_state import forest_from_bytes, forest_from_dict, forest_to_bytes, forest_to_dict
from pipeline.windows import process_window, unpack

CMD = r"C:\Windows\System32\cmd.exe"
PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
WORD = r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE"
MINUTE = 60_000


def forest(kit: EventKit, *events: object, limits: TreeLimits | None = None) -> DeviceForest:
    built = DeviceForest(kit.device_id, kit.platform, limits)
    for event in events:
        built.apply(event)  # type: ignore[arg-type]
    return built


def test_process_starts_build_parent_links_and_children() -> None:
    kit = EventKit()
    f = forest(kit, kit.start("w", WORD, "winword /n a.docm"), kit.start("c", CMD, "cmd /c ver", parent="w"))
    assert f.nodes["c"].parent_key == "w"
    assert f.nodes["w"].children == ["c"]
    assert f.nodes["c"].image_cls is ImageClass.SHELL
    assert [a.key for a in f.ancestors("c")] == ["w"]
    assert [d.key for d in f.descendants("w")] == ["c"]


def test_unknown_parent_becomes_placeholder_then_is_filled_by_its_start() -> None:
    kit = EventKit()
    f = forest(kit, kit.start("child", CMD, "cmd", parent="ghost"))
    ghost = f.nodes["ghost"]
    assert ghost.placeholder and ghost.children == ["child"]
    assert f.stats.placeholders_created == 1

    f.apply(kit.start("ghost", WORD, "winword"))
    assert not ghost.placeholder and ghost.image == WORD and ghost.image_cls is ImageClass.OFFICE
    assert ghost.children == ["child"]
    assert f.stats.placeholders_filled == 1


def test_event_without_process_start_creates_the_node_from_event_image() -> None:
    kit = EventKit()
    f = forest(kit, kit.event("x", kit.write("x", r"C:\Temp\a.txt").payload, image=PS, parent="p"))
    node = f.nodes["x"]
    assert node.image == PS and not node.started and node.image_cls is ImageClass.SHELL
    assert node.parent_key == "p"
    f.apply(kit.start("x", PS, "powershell -nop", parent="p"))
    assert node.started and node.command_line == "powershell -nop"


def test_pid_reuse_never_merges_two_processes() -> None:
    kit = EventKit()
    f = forest(
        kit,
        kit.start("first", CMD, "cmd /c whoami", pid=4242),
        kit.write("first", r"C:\Users\u\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup\a.lnk"),
        kit.end("first", pid=4242),
        kit.start("second", CMD, "cmd /c ver", pid=4242),
    )
    first, second = f.nodes["first"], f.nodes["second"]
    assert first is not second and first.pid == second.pid == 4242
    assert first.exited and not second.exited
    assert process_window(second.evidence, f.watermark_ms)[Counter.FW_STARTUP] == 0
    assert process_window(first.evidence, f.watermark_ms)[Counter.FW_STARTUP] == 1
    assert second.command_line == "cmd /c ver"


def test_parent_earns_child_codes() -> None:
    kit = EventKit()
    f = forest(kit, kit.start("w", WORD), kit.start("c", CMD, parent="w"))
    window = process_window(f.nodes["w"].evidence, f.watermark_ms)
    assert window[Counter.CHILD_SPAWN] == 1 and window[Counter.CHILD_SHELL] == 1


def test_exited_subtree_is_evicted_after_ttl_but_live_descendants_keep_it() -> None:
    kit = EventKit()
    limits = TreeLimits(exited_ttl_ms=10 * MINUTE, idle_ttl_ms=600 * MINUTE)
    f = forest(kit, kit.start("a", CMD), kit.start("b", CMD, parent="a"), kit.start("c", CMD, parent="a"),
               kit.end("b"), kit.end("a"), limits=limits)  # fmt: skip
    kit.advance(11 * MINUTE)
    f.apply(kit.write("c", r"C:\Temp\x.txt"))  # c is alive: a stays, b (exited leaf) goes
    assert f.evict() == 1
    assert set(f.nodes) == {"a", "c"}
    f.apply(kit.end("c"))
    kit.advance(11 * MINUTE)
    f.apply(kit.start("z", CMD))
    assert f.evict() == 2
    assert set(f.nodes) == {"z"}
    assert f.stats.evicted_exited == 3


def test_idle_nodes_are_evicted_after_max_age() -> None:
    kit = EventKit()
    f = forest(kit, kit.start("quiet", CMD), limits=TreeLimits(idle_ttl_ms=30 * MINUTE))
    kit.advance(31 * MINUTE)
    f.apply(kit.start("busy", CMD))
    assert f.evict() == 1
    assert set(f.nodes) == {"busy"}
    assert f.stats.evicted_idle == 1


def test_flood_evicts_oldest_exited_first_then_oldest_idle_and_counts() -> None:
    kit = EventKit()
    f = forest(kit, limits=TreeLimits(max_nodes=3))
    for event in (kit.start("old", CMD), kit.start("done", CMD), kit.end("done"), kit.start("busy", CMD)):
        f.apply(event)
    f.apply(kit.start("new1", CMD))  # full: the exited node goes first, though "old" is older
    assert set(f.nodes) == {"old", "busy", "new1"}
    assert f.stats.flood_evicted_exited == 1
    f.apply(kit.start("new2", CMD))  # nothing exited: the least recently active goes
    assert set(f.nodes) == {"busy", "new1", "new2"}
    assert f.stats.flood_evicted_idle == 1
    assert len(f) <= 3


def test_flood_of_one_device_stays_bounded() -> None:
    kit = EventKit()
    f = forest(kit, limits=TreeLimits(max_nodes=50, max_evidence_per_node=8))
    for i in range(500):
        f.apply(kit.start(f"p{i}", CMD, parent=f"parent{i % 7}"))
    for _ in range(20):
        f.apply(kit.write("p499", r"C:\Temp\x.tmp"))
    assert len(f) <= 50
    assert len(f.nodes["p499"].evidence) == 8
    assert f.stats.evidence_dropped >= 12
    assert f.stats.flood_evicted_idle > 0


def test_newest_evidence_is_kept_when_a_node_floods() -> None:
    kit = EventKit()
    f = forest(kit, kit.start("p", CMD), limits=TreeLimits(max_evidence_per_node=2))
    for path in (r"C:\Temp\a.tmp", r"C:\Temp\b.tmp", r"C:\Windows\System32\c.log"):
        f.apply(kit.write("p", path))
    codes = {unpack(x)[1] for x in f.nodes["p"].evidence}
    assert codes == {Counter.FILE_WRITE, Counter.FW_SYSTEM}


def test_redelivered_events_are_dropped_but_a_restarted_agent_is_accepted() -> None:
    kit = EventKit()
    events = [kit.start("p", CMD), kit.write("p", r"C:\Temp\a.tmp")]
    f = forest(kit, *events)
    before = len(f.nodes["p"].evidence)
    assert [f.apply(e) for e in events] == [NO_CHANGE, NO_CHANGE]
    assert f.stats.duplicates_dropped == 2 and len(f.nodes["p"].evidence) == before
    kit.seq = 0  # the agent lost its counter; its new events are newer
    f.apply(kit.write("p", r"C:\Temp\b.tmp"))
    assert len(f.nodes["p"].evidence) == before + 2  # file_write + fw_temp


def test_cycles_and_self_parents_are_refused_and_walks_terminate() -> None:
    kit = EventKit()
    f = forest(
        kit, kit.start("a", CMD, parent="b"), kit.start("b", CMD, parent="a"), kit.start("s", CMD, parent="s")
    )
    assert f.nodes["b"].parent_key is None
    assert f.stats.cycles_refused == 2
    assert [n.key for n in f.ancestors("a")] == ["b"]
    assert f.depth("a") == 1


def test_generic_behaviour_is_rescored_with_back_off_but_strong_behaviour_always() -> None:
    kit = EventKit()
    f = forest(kit, kit.start("p", CMD))
    rescored = [bool(f.apply(kit.dns("p", f"h{i}.example")).keys) for i in range(9)]
    assert rescored == [True, True, False, True, False, False, False, True, False]
    run_key = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run"
    changes = [f.apply(kit.reg("p", run_key, f"v{i}")) for i in range(3)]
    assert all(c.keys == ("p",) and c.notable for c in changes)


def test_state_round_trip_keeps_everything_the_detector_needs() -> None:
    kit = EventKit()
    enc = "powershell -enc " + "A" * 40
    f = forest(kit, kit.start("w", WORD, "winword"), kit.start("p", PS, enc, parent="w"),
               kit.connect("p", "203.0.113.9", 4444), kit.end("w"))  # fmt: skip
    f.nodes["w"].alert_mark = "Execution:high"
    restored = forest_from_bytes(forest_to_bytes(f))
    assert forest_to_dict(restored) == forest_to_dict(f)
    assert restored.nodes["w"].children == ["p"] and restored.exit_order() == ["w"]
    kept = restored.nodes["p"].notable[0]  # restored evidence stays a dict until an alert shows it
    assert isinstance(kept, dict) and kept["payload"]["kind"] == "process_start"
    restored.apply(kit.start("c", CMD, parent="p"))
    assert restored.nodes["p"].children == ["c"]


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1, 2]", orjson.dumps({"v": 99, "device_id": "d"})],
)
def test_corrupt_state_is_a_state_error(data: bytes) -> None:
    with pytest.raises(StateError):
        forest_from_bytes(data)


def test_state_with_a_bad_node_names_the_device() -> None:
    kit = EventKit("dev-7")
    data = forest_to_dict(forest(kit, kit.start("p", CMD)))
    data["nodes"][0][-4] = [(1 << 40) << 8 | 250]  # behaviour code that does not exist
    with pytest.raises(StateError, match="dev-7"):
        forest_from_dict(data)
    data["nodes"][0] = ["too", "short"]
    with pytest.raises(StateError):
        forest_from_dict(data)


def test_every_evidence_record_pushed_out_of_a_full_node_is_counted() -> None:
    kit = EventKit()
    f = forest(kit, kit.start("p", CMD), limits=TreeLimits(max_evidence_per_node=3))
    for _ in range(5):
        f.apply(kit.write("p", r"C:\Users\u\AppData\Local\Temp\f.tmp"))  # two codes each
    recorded = sum(f.nodes["p"].code_counts.values())
    assert recorded == 10 and len(f.nodes["p"].evidence) == 3
    assert f.stats.evidence_dropped == recorded - 3
