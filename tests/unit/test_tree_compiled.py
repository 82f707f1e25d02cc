"""The C hot path of the tree (`pipeline._cforest`) builds exactly the forest the Python `apply` builds.

Streams are generated to reach every branch `apply` has: starts under known, unknown and later
started parents, behaviour of known, unknown and placeholder processes, ends, scripts, an image
load of the process's own image, strong codes, redelivered events, late events, a restarted seq
counter, floods past `max_nodes` and evidence past its cap, with and without seq dedupe, and both
event models (pydantic `BehaviorEvent`, msgspec `FastEvent`). Forests are compared field by field
(every node slot, recency and exit order, counters) along with what each run queued to re-score.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from forest_support import queued, snapshot, tree_path

from pipeline import tree
from pipeline.behaviour import Counter
from pipeline.detect import Detector, DetectorConfig
from pipeline.eventkit import EventKit
from pipeline.features import feature_matrix, row_context
from pipeline.model.provisional import ProvisionalRules
from pipeline.tree import DeviceForest, TreeLimits
from schemas import codec, fastcodec

NOT_BUILT = "pipeline._cforest is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
IMAGES = [
    r"C:\Windows\System32\cmd.exe",
    r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
    r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE",
    r"C:\Users\a\AppData\Local\Temp\drop.exe",
    r"C:\Windows\System32\svchost.exe",
]
SMALL = TreeLimits(max_nodes=10, max_evidence_per_node=6, max_conns_per_node=3, max_notable_per_node=2)


def _event(kit: EventKit, rng: random.Random, keys: list[str]) -> Any:
    key = rng.choice(keys)
    roll = rng.random()
    if roll < 0.12:
        new = f"p{rng.randrange(40)}"
        parent = rng.choice([*keys, f"ghost{rng.randrange(5)}"])
        keys.append(new)
        command = rng.choice(["x.exe /q", "powershell -enc SQBFAFgA"])
        return kit.start(new, rng.choice(IMAGES), command, parent=parent)
    if roll < 0.16:
        return kit.end(key)
    if roll < 0.19:
        return kit.script(key, rng.choice(["Invoke-Mimikatz", "Get-Date"]))
    if roll < 0.24:
        return kit.load(key, kit._images.get(key) or IMAGES[0], signed=rng.random() < 0.5, signer="MS")
    if roll < 0.30:  # a process first seen by its behaviour (its start was never seen), or by its end
        unknown, image = f"u{rng.randrange(30)}", rng.choice(["", *IMAGES])
        first: list[Callable[[], Any]] = [
            lambda: kit.write(key, "x"),
            lambda: kit.connect(key, "10.0.0.9", 445),
            lambda: kit.access(key, r"C:\Windows\System32\lsass.exe", 0x1010),
            lambda: kit.reg(key, r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run", "x"),
            lambda: kit.load(key, image or IMAGES[0], signed=True, signer="MS"),  # its own image when named
            lambda: kit.end(key),
            lambda: kit.script(key, "Invoke-Mimikatz"),
        ]
        payload = rng.choice(first)().payload
        return kit.event(unknown, payload, image=image, parent=rng.choice([None, None, *keys]))
    temp = rf"C:\Users\a\AppData\Local\Temp\f{rng.randrange(9)}.{rng.choice(['tmp', 'exe'])}"
    makers: list[Callable[[], Any]] = [
        lambda: kit.write(key, temp),
        lambda: kit.reg(key, r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run", "x"),
        lambda: kit.reg(key, r"HKLM\Software\Vendor", f"v{rng.randrange(4)}"),
        lambda: kit.connect(key, f"10.0.0.{rng.randrange(4)}", rng.choice([443, 445, 5555])),
        lambda: kit.dns(key, "example.com"),
        lambda: kit.access(key, r"C:\Windows\System32\lsass.exe", rng.choice([0x1010, 0x1000])),
        lambda: kit.delete(key, r"C:\Users\a\x.bak"),
        lambda: kit.rename(key, r"C:\a\f.docx", r"C:\a\f.docx.locked"),
        lambda: kit.inject(key, r"C:\Windows\System32\svchost.exe"),
        lambda: kit.load(key, r"C:\Windows\System32\samlib.dll", signed=False),
    ]
    return rng.choice(makers)()


def stream(seed: int, n: int = 260, device: str = "dev-c") -> list[Any]:
    """One device's events, with redeliveries, late events and a restarted counter."""
    rng = random.Random(seed)
    kit = EventKit(device, start=datetime(2026, 5, 1, tzinfo=UTC), step_ms=rng.choice([5, 40_000]))
    keys = ["root"]
    events = [kit.start("root", r"C:\Windows\explorer.exe", "explorer.exe")]
    for _ in range(n):
        roll = rng.random()
        if roll < 0.06 and len(events) > 3:
            events.append(rng.choice(events[-10:]))  # redelivered: same seq, same time
        elif roll < 0.08:
            kit.seq = max(0, kit.seq - rng.randrange(1, 6))  # an agent restarted its counter
            events.append(_event(kit, rng, keys))
        else:
            events.append(_event(kit, rng, keys))
    return events


def fast(events: list[Any]) -> list[Any]:
    """The same events as the worker's fast decoder returns them (msgspec Structs)."""
    out = [fastcodec.decode_events(codec.encode_event(event))[0] for event in events]
    assert all(isinstance(event, fastcodec.FastEvent) for event in out)
    return out


def build(events: list[Any], limits: TreeLimits | None, compiled: bool, chunk: int = 50) -> tuple[Any, Any]:
    """Apply in runs of `chunk` events, the forest's epoch moving every 37 (as a state encoding moves
    it), so the nodes each event stamps show in the snapshot."""
    assert tree._fold is not None, NOT_BUILT
    with tree_path(compiled):
        forest = DeviceForest(events[0].device_id, "windows", limits)
        changed: list[tuple[str, str, bool]] = []
        bounds = sorted({*range(0, len(events), chunk), *range(0, len(events), 37)})
        for lo, hi in zip(bounds, [*bounds[1:], len(events)], strict=True):
            forest.epoch = lo // 37
            assert forest.apply_run(events[lo:hi], 0, changed) == hi - lo
    return snapshot(forest), queued(changed)


@pytest.mark.parametrize("limits", [None, SMALL, TreeLimits(dedupe_by_seq=False, max_nodes=16)])
@pytest.mark.parametrize("seed", range(12))
def test_c_and_python_build_the_same_forest_and_queue_the_same_changes(seed: int, limits: TreeLimits) -> None:
    events = stream(seed)
    for model in (events, fast(events)):
        python, compiled = build(model, limits, False), build(model, limits, True, chunk=1 + seed * 7)
        assert compiled == python


def test_the_streams_reach_every_case_the_c_path_hands_back() -> None:
    events = stream(3)
    python, _ = build(events, SMALL, False)
    stats = python["stats"]
    for counter in ("duplicates_dropped", "placeholders_created", "placeholders_filled", "evidence_dropped",
                    "flood_evicted_exited", "parent_conflicts"):  # fmt: skip
        assert stats[counter] > 0, counter
    assert any(n["signer"][1] == "MS" for n in python["nodes"].values())  # own image load seen


def _built_seeing_apply(events: list[Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    """`build` with the C path, and the events the Python `apply` was called for."""
    calls: list[Any] = []
    real_apply = DeviceForest.apply

    def apply(self: DeviceForest, event: Any) -> Any:
        calls.append(event)
        return real_apply(self, event)

    with monkeypatch.context() as patched:
        patched.setattr(DeviceForest, "apply", apply)
        return build(events, None, True), calls


def test_the_first_behaviour_of_an_unknown_process_is_applied_in_c_as_apply_applies_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process seen first by its behaviour (its start came before the agent, the log or the state began:
    most of a recording's first minutes) gets its node, image and evidence from the fold without a call of
    the Python `apply`, the same forest as `apply` builds; one without an image (a placeholder to fill) or
    naming a parent (a link to make) is still `apply`'s."""
    kit = EventKit("dev-f", start=datetime(2026, 5, 1, tzinfo=UTC), step_ms=5)
    kinds = [lambda k: kit.write(k, r"C:\Users\a\AppData\Local\Temp\x.exe"),
             lambda k: kit.access(k, r"C:\Windows\System32\lsass.exe", 0x1010),
             lambda k: kit.connect(k, "10.0.0.9", 445),
             lambda k: kit.load(k, r"C:\Windows\System32\samlib.dll", signed=False)]  # fmt: skip
    root = kit.start("root", r"C:\Windows\explorer.exe", "explorer.exe")  # no parent: `apply`'s
    events = [root]
    for i in range(40):
        made = kinds[i % len(kinds)](f"seen-{i % 13}")  # 13 processes, each first seen by behaviour
        events.append(kit.event(f"seen-{i % 13}", made.payload, image=IMAGES[i % len(IMAGES)]))
    for model in (events, fast(events)):
        python = build(model, None, False)
        compiled, calls = _built_seeing_apply(model, monkeypatch)
        assert compiled == python
        assert calls == model[:1]  # the first event of each of the 13 processes too was the fold's
        assert python[0]["stats"]["nodes_created"] == 14 and python[0]["stats"]["placeholders_created"] == 0
        assert python[0]["nodes"]["seen-3"]["image"] == ("str", IMAGES[3])
    no_image = kit.event("ghost", kit.write("g", "x").payload, image="")  # a placeholder to fill later
    linked = kit.event("child", kit.write("c", "x").payload, image=IMAGES[0], parent="root")  # a link
    for odd in (no_image, linked):
        compiled, calls = _built_seeing_apply([root, odd], monkeypatch)
        assert calls == [root, odd] and compiled == build([root, odd], None, False)


def test_a_run_stops_at_another_devices_event() -> None:
    mine, other = stream(1, 20, "dev-a"), stream(2, 5, "dev-b")
    forest = DeviceForest("dev-a", "windows")
    changed: list[tuple[str, str, bool]] = []
    assert forest.apply_run([*mine, *other, *mine], 0, changed) == len(mine)
    assert {device for device, _, _ in changed} == {"dev-a"} and len(forest.nodes) > 1


def test_an_event_whose_codes_raise_raises_from_apply_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    events = stream(4, 30)
    forest = DeviceForest(events[0].device_id, "windows")
    forest.apply_run(events, 0, [])

    def broken(payload: Any) -> tuple[()]:
        raise RuntimeError("classifier bug")

    monkeypatch.setitem(tree._CODES_BY_KIND, "dns_query", broken)
    kit = EventKit(events[0].device_id, start=datetime(2027, 1, 1, tzinfo=UTC))
    root, counted = forest.nodes["root"], forest.stats.events
    writes = root.code_counts.get(Counter.FILE_WRITE, 0)
    with pytest.raises(RuntimeError, match="classifier bug"):
        forest.apply_run([kit.write("root", r"C:\t\a.txt"), kit.dns("root", "x.example")], 0, [])
    assert root.code_counts[Counter.FILE_WRITE] == writes + 1  # the write before it was applied
    assert forest.stats.events == counted + 2  # apply counts an event before classifying it


def test_the_detector_scores_and_decides_the_same_with_either_path() -> None:
    events = [e for seed in range(6) for e in stream(seed, 200, f"dev-{seed % 3}")]
    random.Random(9).shuffle(events)
    results = []
    for compiled in (False, True):
        with tree_path(compiled):
            detector = Detector(ProvisionalRules(), config=DetectorConfig(max_rows=64, max_delay_ms=0))
            decisions = []
            for lo in range(0, len(events), 37):
                decisions += detector.process(events[lo : lo + 37], 1_777_600_000_000 + lo)
            rows = [row_context(f, k, 300_000) for f in detector.forests.values() for k in sorted(f.nodes)]
        decided = [d.model_dump_json() for d in decisions]
        results.append((feature_matrix(rows), decided, detector.forest_stats()))
    assert np.array_equal(results[0][0], results[1][0]) and results[0][1:] == results[1][1:]
    assert results[0][1]  # the streams do alert


def test_event_times_are_read_to_the_millisecond_as_timestamp_reads_them() -> None:
    """The C path reads UTC datetimes from their fields (other zones through `timestamp()`)."""
    rng = random.Random(5)
    kit = EventKit("dev-t", start=datetime(2026, 5, 1, tzinfo=UTC))
    base = [kit.start("p", IMAGES[0], "x")]
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    times = [datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), datetime(1900, 3, 1, tzinfo=UTC)]
    times += [
        datetime(rng.randrange(1901, 2400), rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24),
                 rng.randrange(60), rng.randrange(60), rng.randrange(1_000_000), tzinfo=rng.choice(zones))
        for _ in range(400)
    ]  # fmt: skip
    for ts in times:
        event = kit.write("p", r"C:\t\a.txt").model_copy(update={"ts": ts})
        expected = int(ts.timestamp() * 1000)
        for compiled in (False, True):
            with tree_path(compiled):
                forest = DeviceForest("dev-t", "windows", TreeLimits(dedupe_by_seq=False))
                forest.apply_run([*base, event], 0, [])
            assert forest.nodes["p"].evidence[-1] >> 8 == expected, (ts, compiled)


def test_values_the_c_path_does_not_read_go_to_apply_unchanged() -> None:
    """A node whose last activity is not a plain int (or an event time past the packed range) is
    applied by `apply`, so both paths still agree."""
    events = stream(7, 40)
    results = []
    for compiled in (False, True):
        with tree_path(compiled):
            forest = DeviceForest(events[0].device_id, "windows")
            forest.apply_run(events[:20], 0, [])
            forest.nodes["root"].last_ms = float(forest.nodes["root"].last_ms)  # type: ignore[assignment]
            kit = EventKit(events[0].device_id, start=datetime(2026, 6, 1, tzinfo=UTC))
            late = [kit.dns("root", "a.example"), kit.write("root", r"C:\t\b.txt"), *events[20:]]
            changed: list[tuple[str, str, bool]] = []
            forest.apply_run(late, 0, changed)
        results.append((snapshot(forest), queued(changed)))
    assert results[0] == results[1]
    assert isinstance(results[1][0]["nodes"]["root"]["last_ms"][1], int)  # the dns event set an int again


@pytest.mark.parametrize("evidence", ["unbounded deque", "list"])
def test_evidence_that_is_not_a_bounded_deque_is_appended_and_counted_as_apply_does(evidence: str) -> None:
    """The C path counts what a full deque drops from its length; any other container (a deque without
    maxlen, a list a hostile state could hold) goes the way `_add_evidence` goes: same records, same
    counters, or the same error."""
    events = stream(5, 120)
    results = []
    for compiled in (False, True):
        with tree_path(compiled):
            forest = DeviceForest(events[0].device_id, "windows", SMALL)
            forest.apply_run(events[:20], 0, [])
            for node in forest.nodes.values():
                node.evidence = deque(node.evidence) if evidence == "unbounded deque" else list(node.evidence)
            try:
                forest.apply_run(events[20:], 0, [])
                results.append(snapshot(forest))
            except AttributeError as exc:  # a list has no maxlen: `_add_evidence` raises, so must the fold
                results.append(str(exc))
    assert results[0] == results[1]
    assert (evidence == "list") == isinstance(results[0], str)


def test_a_kind_equal_to_a_known_one_but_not_the_same_string_is_classified_alike() -> None:
    """Event kinds are interned class attributes, compared by identity in C; a kind that only equals
    one (built at run time) is still compared by value."""
    kit = EventKit("dev-k", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [kit.start("p", IMAGES[0], "x"), kit.write("p", r"C:\t\a.txt"), kit.end("p")]
    results = []
    for compiled in (False, True):
        with tree_path(compiled):
            forest = DeviceForest("dev-k", "windows")
            changed: list[tuple[str, str, bool]] = []
            for event in events:
                runtime_kind = "".join(["process", "_", event.payload.kind.split("_")[1]])
                if event.payload.kind == runtime_kind:
                    payload = event.payload.model_copy(update={"kind": runtime_kind})
                    assert payload.kind is not event.payload.kind
                    event = event.model_copy(update={"payload": payload})
                forest.apply_run([event], 0, changed)
            results.append((snapshot(forest), queued(changed)))
    assert results[0] == results[1]
    assert results[0][0]["nodes"]["p"]["end_ms"] is not None
