"""State records of process forests: the incremental `ForestEncoder` against a whole re-encoding.

What an operator would notice if the encoder were wrong: after a crash, a restored device misses a
process, a parent link, evidence or an alert mark that the lost worker had (a different alert, or
the same one again). So every test here checks the encoder's record against a record encoded from
scratch of the same forest, and restores it, across streams that exercise every way a forest
changes: starts under known, unknown (placeholder) and remembered parents, evidence filling a
node's bounded memory, connections, script indicators, exits, TTL and flood eviction, keys seen
again after eviction, redelivered events, and alert marks set by the detector.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import orjson
import pytest
from worker_support import ransomware

from pipeline.detect import Detector
from pipeline.errors import StateError
from pipeline.eventkit import EventKit
from pipeline.model.provisional import ProvisionalRules
from pipeline.tree import DeviceForest, TreeLimits
from pipeline.tree_state import ForestEncoder, forest_from_bytes, forest_to_bytes, forest_to_dict
from schemas.codec import encode_batch
from schemas.events import BehaviorEvent, EventBatch
from schemas.fastcodec import Event, decode_events

CMD = r"C:\Windows\System32\cmd.exe"
PS = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
RUN_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run"
SMALL = TreeLimits(max_nodes=12, max_evidence_per_node=6, max_conns_per_node=3, max_notable_per_node=2,
                   exited_ttl_ms=2_000, idle_ttl_ms=5_000)


def fresh(forest: DeviceForest, since_ms: int = 0) -> bytes:
    """The record of a new encoder: every node encoded from the forest as it is now."""
    return forest_to_bytes(forest, since_ms)


def random_event(kit: EventKit, rng: random.Random, keys: list[str]) -> BehaviorEvent:
    """One of the ways a stream changes a forest (a fixed seed makes it reproducible)."""
    key = rng.choice(keys)
    roll = rng.random()
    if roll < 0.15:
        parent = rng.choice([None, rng.choice(keys), f"ghost-{rng.randrange(4)}"])  # known, none, unknown
        return kit.start(key, rng.choice([CMD, PS]), rng.choice(["cmd /c ver", "powershell -enc QQBBAA=="]),
                         parent=parent)
    if roll < 0.20:
        return kit.end(key)
    if roll < 0.45:
        return kit.write(key, rf"C:\Users\u\AppData\Local\Temp\f{rng.randrange(50)}.tmp")
    if roll < 0.55:
        return kit.reg(key, RUN_KEY, f"v{rng.randrange(3)}")
    if roll < 0.70:
        return kit.connect(key, f"10.0.0.{rng.randrange(9)}", 443)
    if roll < 0.80:
        return kit.load(key, CMD, signer="Microsoft Windows", signed=True)
    if roll < 0.88:
        return kit.script(key, rng.choice(["Get-Date", "IEX (New-Object Net.WebClient).DownloadString('x')"]))
    if roll < 0.95:
        kit.advance(rng.choice([10, 1_500, 6_000]))  # lets TTL eviction remove exited and idle nodes
        return kit.dns(key, "example.com")
    return kit.event(key, kit.write(key, r"C:\Temp\late.txt").payload, parent=rng.choice(keys))


@pytest.mark.parametrize("seed", range(12))
def test_incremental_records_equal_whole_ones_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    kit = EventKit(f"dev-{seed}")
    keys = [f"p{i}" for i in range(16)]  # more keys than SMALL.max_nodes: floods evict, keys come back
    forest, encoder = DeviceForest(kit.device_id, kit.platform, SMALL), ForestEncoder()
    sent: list[Event] = []
    for step in range(400):
        made = [random_event(kit, rng, keys) for _ in range(rng.randrange(1, 6))]
        batch: list[Event] = [*made]
        if rng.random() < 0.5:  # as the worker's fast decoder returns them (notable events: msgspec Structs)
            batch = list(decode_events(encode_batch(EventBatch.of(made))))
        if sent and rng.random() < 0.1:
            batch.append(rng.choice(sent))  # a redelivery: dropped, its nodes stamped all the same
        for event in batch:
            forest.apply(event)
        sent += batch
        if step % 7 == 0:
            forest.evict()
        if rng.random() < 0.1 and forest.nodes:  # the detector marks an incident's root
            rng.choice(list(forest.nodes.values())).alert_mark = f"Execution:{rng.choice(['high', 'medium'])}"
        if rng.random() < 0.3:
            record = encoder.encode(forest)
            assert record == fresh(forest), f"step {step}"
            assert orjson.dumps(orjson.loads(record)) == record  # exactly orjson's document, joined by hand
    assert encoder.rows_reused > 0 and encoder.rows_encoded > 0
    assert forest.stats.flood_evicted_exited + forest.stats.flood_evicted_idle > 0
    assert forest.stats.evicted_exited + forest.stats.evicted_idle > 0
    restored = forest_from_bytes(encoder.encode(forest), SMALL)
    assert forest_to_dict(restored) == forest_to_dict(forest)


@pytest.mark.parametrize("seed", range(4))
def test_incremental_records_equal_whole_ones_through_the_detector(seed: int) -> None:
    # As the worker runs it: events through `Detector.process` (its batched tree update, compiled
    # when `pipeline._cforest` is built; TTL eviction on device time; scoring and alert marks).
    rng = random.Random(1000 + seed)
    kit = EventKit(f"dev-{seed}")
    keys = [f"p{i}" for i in range(16)]
    detector, encoder = Detector(ProvisionalRules()), ForestEncoder()
    now, checked = 1_780_000_000_000, 0
    for _ in range(300):
        made = [random_event(kit, rng, keys) for _ in range(rng.randrange(1, 8))]
        batch = list(decode_events(encode_batch(EventBatch.of(made))))
        now += 5
        detector.process(batch, now)
        if rng.random() < 0.3:
            detector.flush(now)
            forest = detector.forests[kit.device_id]
            assert encoder.encode(forest) == fresh(forest)
            checked += 1
    assert checked > 50 and encoder.rows_reused > 0


def test_a_process_start_without_parent_key_updates_the_remembered_parent() -> None:
    # The start credits child codes to the parent linked earlier by another event; the event names
    # only the child, so the encoder must re-encode the parent from the child's link.
    kit = EventKit()
    forest, encoder = DeviceForest(kit.device_id, kit.platform), ForestEncoder()
    first = [kit.start("w", PS, "powershell"), kit.event("c", kit.write("c", r"C:\a").payload, parent="w")]
    for event in first:
        forest.apply(event)
    encoder.encode(forest)
    start = kit.start("c", CMD, "cmd /c whoami", parent=None)
    assert start.parent_process_key is None
    forest.apply(start)
    assert encoder.encode(forest) == fresh(forest)
    assert forest.nodes["w"].code_counts  # the parent did change


def test_unstamped_nodes_are_not_encoded_again() -> None:
    kit = EventKit()
    forest, encoder = DeviceForest(kit.device_id, kit.platform), ForestEncoder()
    events = [kit.start(f"p{i}", CMD, "cmd") for i in range(50)]
    for event in events:
        forest.apply(event)
    encoder.encode(forest)
    more = [kit.write("p7", r"C:\Temp\a.txt"), kit.write("p7", r"C:\Temp\b.txt")]
    for event in more:
        forest.apply(event)
    before = encoder.rows_encoded
    assert encoder.encode(forest) == fresh(forest)
    assert encoder.rows_encoded - before == 1 and encoder.rows_reused == 49


def test_an_empty_forest_is_orjsons_document_too() -> None:
    forest = DeviceForest("dev-e", "linux")
    record = forest_to_bytes(forest)
    assert record == orjson.dumps(orjson.loads(record))
    assert orjson.loads(record)["nodes"] == [] and orjson.loads(record)["exited"] == []


def test_ended_evicted_and_returning_processes_are_encoded_again() -> None:
    # Every way a node's row goes stale without its key changing: its end, its removal by TTL
    # eviction and a new process under the same key (a reused key after eviction).
    kit = EventKit()
    forest, encoder = DeviceForest(kit.device_id, kit.platform, SMALL), ForestEncoder()
    for event in [kit.start("a", CMD, "cmd"), kit.start("b", PS, "powershell")]:
        forest.apply(event)
    encoder.encode(forest)
    forest.apply(kit.end("a"))
    assert encoder.encode(forest) == fresh(forest)
    ends = {row[0]: row[10] for row in orjson.loads(encoder.encode(forest))["nodes"]}  # a's row reused now
    assert ends["a"] is not None and ends["b"] is None
    kit.advance(SMALL.idle_ttl_ms + SMALL.exited_ttl_ms)
    forest.apply(kit.write("b", r"C:\Temp\x"))
    assert forest.evict() == 1 and "a" not in forest
    assert encoder.encode(forest) == fresh(forest)
    forest.apply(kit.start("a", PS, "powershell -nop"))  # the key again: another process
    reused = encoder.rows_reused
    assert encoder.encode(forest) == fresh(forest)
    assert encoder.rows_reused == reused + 1  # b, unchanged since; the new a is encoded


def test_every_full_every_th_record_is_encoded_whole() -> None:
    kit = EventKit()
    forest, encoder = DeviceForest(kit.device_id, kit.platform), ForestEncoder(full_every=3)
    forest.apply(kit.start("p", CMD, "cmd"))
    encoder.encode(forest)
    forest.nodes["p"].command_line = "changed behind the encoder's back"  # a mutation no event announced
    seen = [orjson.loads(encoder.encode(forest))["nodes"][0][2] for _ in range(3)]
    assert seen == ["cmd", "cmd", "changed behind the encoder's back"]


def test_a_clean_node_keeps_the_evidence_it_was_encoded_with_and_a_stamped_one_is_trimmed() -> None:
    kit = EventKit()
    forest, encoder = DeviceForest(kit.device_id, kit.platform), ForestEncoder()
    events = [kit.start("old", CMD, "cmd"), kit.write("old", r"C:\Temp\a"), kit.start("new", CMD, "cmd"),
              kit.write("new", r"C:\Temp\b")]
    for event in events:
        forest.apply(event)
    encoder.encode(forest)
    kit.advance(60_000)
    later = [kit.write("new", r"C:\Temp\c")]
    forest.apply(later[0])
    since = forest.watermark_ms - 30_000
    restored = forest_from_bytes(encoder.encode(forest, keep_since_ms=since))
    assert list(restored.nodes["old"].evidence) == list(forest.nodes["old"].evidence)  # as encoded
    recent = [r for r in forest.nodes["new"].evidence if r >> 8 >= since]
    assert list(restored.nodes["new"].evidence) == recent
    assert 0 < len(recent) < len(forest.nodes["new"].evidence)
    assert restored.nodes["new"].code_counts == forest.nodes["new"].code_counts  # lifetime counts kept


def _two_records(later: Sequence[Event]) -> tuple[DeviceForest, bytes, int]:
    """A parent and a child, encoded; a minute later `later` is applied and the forest encoded again
    keeping only the last 30 s: (forest, that record, its cut-off)."""
    kit = EventKit()
    forest, encoder = DeviceForest(kit.device_id, kit.platform), ForestEncoder()
    for event in [kit.start("parent", PS, "powershell"), kit.write("parent", r"C:\Temp\a"),
                  kit.start("child", CMD, "cmd", parent="parent")]:
        forest.apply(event)
    encoder.encode(forest)
    kit.advance(60_000)
    for event in later:
        forest.apply(event)
    since = forest.watermark_ms - 30_000
    return forest, encoder.encode(forest, keep_since_ms=since), since


def test_a_node_an_event_names_only_as_its_parent_is_encoded_again() -> None:
    # As the worker's encoder always did (it named the events' process and parent keys): the parent,
    # which this write does not change, is encoded anew, so its old evidence leaves the record.
    kit = EventKit()
    kit.advance(60_000)
    later = [kit.event("child", kit.write("child", r"C:\Temp\b").payload, parent="parent")]
    forest, record, since = _two_records(later)
    assert record == fresh(forest, since)
    assert list(forest_from_bytes(record).nodes["parent"].evidence) == []
    assert forest.nodes["parent"].evidence  # the live forest still holds it


def test_a_redelivered_event_names_its_nodes_too() -> None:
    kit = EventKit()
    first = kit.write("parent", r"C:\Temp\a")  # the same seq and time as the second event above
    kit.advance(60_000)
    later = [kit.write("child", r"C:\Temp\c"), first]
    forest, record, since = _two_records(later)
    assert forest.stats.duplicates_dropped == 1
    assert record == fresh(forest, since)


def test_encoders_sharing_a_forest_each_see_every_change() -> None:
    kit = EventKit()
    forest = DeviceForest(kit.device_id, kit.platform)
    first, second = ForestEncoder(), ForestEncoder()
    forest.apply(kit.start("p", CMD, "cmd"))
    first.encode(forest)
    second.encode(forest)
    forest.apply(kit.write("p", r"C:\Temp\a"))
    assert second.encode(forest) == fresh(forest)  # moves the epoch on: `first` must still see the write
    assert first.encode(forest) == fresh(forest)
    assert first.rows_encoded == second.rows_encoded == 2


def test_alert_marks_set_by_the_detector_reach_the_next_record() -> None:
    phase1, phase2 = ransomware("dev-a", "ab" * 32)
    detector, encoder = Detector(ProvisionalRules()), ForestEncoder()
    now = 1_780_000_000_000
    detector.process(phase1, now)
    detector.flush(now)
    encoder.encode(detector.forests["dev-a"])
    decisions = detector.process(phase2, now) + detector.flush(now)
    assert decisions
    record = encoder.encode(detector.forests["dev-a"])
    assert record == fresh(detector.forests["dev-a"])
    marks = {row[0]: row[17] for row in orjson.loads(record)["nodes"] if row[17]}
    assert marks == {"dev-a-word": "Execution:high,Impact:critical"}  # no event of phase 2 named WINWORD


def test_a_record_of_the_previous_writer_is_read() -> None:
    # Written by the encoder this replaced (same layout: code counts sorted, notable events cut by
    # time): records already on a changelog restore as they did.
    previous = (
        b'{"v":2,"device_id":"dev-1","platform":"windows","watermark_ms":1714564800050,"seq_hwm":5,'
        b'"stats":{"events":5,"nodes_created":2,"placeholders_created":0,"placeholders_filled":0,'
        b'"evicted_exited":0,"evicted_idle":0,"flood_evicted_exited":0,"flood_evicted_idle":0,'
        b'"evidence_dropped":0,"duplicates_dropped":0,"parent_conflicts":0,"cycles_refused":0},"nodes":['
        b'["c","C:\\\\Windows\\\\System32\\\\cmd.exe","cmd",null,null,null,null,null,"w",1714564800050,'
        b'null,1714564800050,true,0,0,null,null,null,"",[],[],[]],'
        b'["w","C:\\\\Windows\\\\System32\\\\cmd.exe","cmd /c whoami",null,null,null,null,null,null,'
        b'1714564800010,null,1714564800050,true,2048,0,null,null,"Execution:high",'
        b'"Ih6eBjSPAQAFKJ4GNI8BAAYongY0jwEAADKeBjSPAQADMp4GNI8BAA==",[[1714564800030,"10.0.0.1",443]],'
        b'[{"schema_version":"1.0","event_id":"dev-1-4","device_id":"dev-1","seq":4,'
        b'"ts":"2024-05-01T12:00:00.040000Z","platform":"windows","process_key":"w",'
        b'"parent_process_key":null,"image":"C:\\\\Windows\\\\System32\\\\cmd.exe",'
        b'"payload":{"kind":"file_create","path":"C:\\\\Temp\\\\a.txt","sha256":null}}],'
        b'[[0,1],[3,1],[5,1],[6,1],[25,1],[26,1],[34,1]]]],"exited":[]}'
    )
    forest = forest_from_bytes(previous)
    node = forest.nodes["w"]
    assert node.alert_mark == "Execution:high" and node.cmd_mask == 2048 and len(node.code_counts) == 7
    assert forest.nodes["c"].parent_key == "w" and node.children == ["c"]
    (notable,) = node.notable
    assert isinstance(notable, dict) and notable["payload"]["kind"] == "file_create"
    assert list(node.conns) == [(1714564800030, "10.0.0.1", 443)] and len(node.evidence) == 5
    assert forest_from_bytes(forest_to_bytes(forest)).nodes["w"].code_counts == node.code_counts


@pytest.mark.parametrize("bad", [
    {"v": 3, "device_id": "dev-9"},  # a version this worker does not know
    {"v": 2, "device_id": "dev-9", "platform": "windows", "watermark_ms": 0, "seq_hwm": 0, "stats": {},
     "nodes": [["k"] * 22], "exited": []},  # a node row of the right length with wrong types
])
def test_unknown_versions_and_malformed_records_name_the_device(bad: dict[str, object]) -> None:
    with pytest.raises(StateError, match="dev-9"):
        forest_from_bytes(orjson.dumps(bad))
