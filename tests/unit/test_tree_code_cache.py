"""The compiled tree update remembers behaviour codes by the values that decide them, and stays exact.

`pipeline._cforest.fold` keeps, per payload kind, a dict from a payload's deciding fields
(`behaviour.CODE_FIELDS`) to the codes its classifier returned (`tree.CODE_CACHES`), so the common
event costs a dict lookup instead of a Python call. What a user would notice if it were wrong: a
file write or an LSASS read counted as something else. So: every classifier reads only the fields
it is keyed by; every remembered answer is the classifier's; odd values (0 and 1 where a bool is
expected, long strings, a patched classifier) never get another payload's answer; and a device
sending unique strings cannot grow the cache past its bound.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest
from forest_support import queued, snapshot, tree_path
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import _cforest, tree
from pipeline.behaviour import CODE_FIELDS, CODES_BY_KIND, Counter
from pipeline.eventkit import EventKit
from pipeline.tree import DeviceForest, TreeLimits
from schemas import codec, fastcodec

NOT_BUILT = "pipeline._cforest is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
ROOT_IMAGE = r"C:\Windows\explorer.exe"
PATHS = [
    r"C:\Users\a\AppData\Local\Temp\x.exe",
    r"C:\Users\a\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup\run.lnk",
    r"C:\Windows\System32\samlib.dll",
    r"C:\ProgramData\drop.zip",
    "/etc/cron.d/job",
    "/home/u/.ssh/authorized_keys",
    "relative\\odd\u00e9\u4e2d.ps1",
]


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    assert tree._fold is not None, NOT_BUILT
    caches: dict[str, Any] = {
        kind: (function, fields, {}) for kind, (function, fields, _) in tree.CODE_CACHES.items()
    }
    monkeypatch.setattr(tree, "CODE_CACHES", caches)
    return caches


def _payloads(kit: EventKit, rng: random.Random, key: str) -> Any:
    path = rng.choice(PATHS)
    makers = [
        lambda: kit.write(key, path, create=rng.random() < 0.5),
        lambda: kit.delete(key, rng.choice([path, r"C:\b\x.vhd", "/var/backups/a.bak"])),
        lambda: kit.rename(key, path, path + rng.choice([".locked", ".txt", ""])),
        lambda: kit.reg(
            key,
            rng.choice([r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run", r"HKLM\S\V"]),
            rng.choice([None, "x", "AppInit_DLLs"]),
        ),
        lambda: kit.connect(
            key,
            rng.choice(["10.0.0.1", "8.8.8.8", "::1", "fe80::1"]),
            rng.choice([0, 1, 22, 443, 445, 8443]),
            outbound=rng.random() < 0.7,
        ),
        lambda: kit.dns(key, "a.example"),
        lambda: kit.load(key, path, signed=rng.choice([None, True, False])),
        lambda: kit.access(
            key, rng.choice([r"C:\Windows\System32\lsass.exe", path]), rng.choice([0, 1, 0x10, 0x1F0FFF])
        ),
        lambda: kit.inject(key, rng.choice([r"C:\Windows\System32\svchost.exe", path])),
    ]
    return rng.choice(makers)()


def _stream(seed: int, n: int = 300) -> list[Any]:
    rng = random.Random(seed)
    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [kit.start("root", ROOT_IMAGE, "explorer.exe")]
    return events + [_payloads(kit, rng, "root") for _ in range(n)]


def _build(events: list[Any], compiled: bool) -> tuple[Any, Any]:
    with tree_path(compiled):
        forest = DeviceForest("dev-cache", "windows", TreeLimits(max_evidence_per_node=100_000))
        changed: list[tuple[str, str, bool]] = []
        for lo in range(0, len(events), 40):
            forest.apply_run(events[lo : lo + 40], 0, changed)
    return snapshot(forest), queued(changed)


class Recorder:
    """A payload that records which fields are read."""

    def __init__(self, payload: Any) -> None:
        self._payload, self.read = payload, set[str]()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._payload, name)


def test_every_cached_classifier_reads_only_the_fields_it_is_keyed_by() -> None:
    assert set(CODE_FIELDS) <= set(CODES_BY_KIND)
    uncached = set(CODES_BY_KIND) - set(CODE_FIELDS)
    assert uncached == {"process_start", "process_end", "script"}  # codes () or the tree's own
    for seed in range(4):
        for event in _stream(seed, 200)[1:]:
            recorder = Recorder(event.payload)
            CODES_BY_KIND[event.payload.kind](recorder)
            assert recorder.read <= set(CODE_FIELDS[event.payload.kind]), event.payload


@pytest.mark.parametrize("seed", range(6))
def test_forests_with_the_cache_equal_the_python_ones_and_it_holds_only_classifier_answers(
    seed: int, fresh_caches: dict[str, Any]
) -> None:
    events = _stream(seed)
    for model in (events, [fastcodec.decode_events(codec.encode_event(e))[0] for e in events]):
        python = _build(model, compiled=False)
        assert _build(model, compiled=True) == python  # the first run fills the caches
        assert _build(model, compiled=True) == python  # the second is answered from them
    assert sum(len(cache) for _, _, cache in fresh_caches.values()) > 20
    for kind, (function, fields, cache) in fresh_caches.items():
        for key, codes in cache.items():
            values = (key,) if len(fields) == 1 else key
            payload = type("P", (), dict(zip(fields, values, strict=True)))()
            assert codes == function(payload), (kind, key)


def _one_event_codes(event: Any) -> tuple[int, ...]:
    forest = DeviceForest(event.device_id, "windows", TreeLimits(dedupe_by_seq=False))
    root = forest._new_node("root")
    root.started = True
    root.set_image(ROOT_IMAGE)
    assert forest.apply_run([event], 0, []) == 1
    return tuple(record & 0xFF for record in forest.nodes["root"].evidence)


def test_zero_and_one_are_not_taken_for_false_and_true(
    monkeypatch: pytest.MonkeyPatch, fresh_caches: dict[str, Any]
) -> None:
    """0 == False and 1 == True as dict keys, but a classifier may tell them apart (`signed is False`):
    such values are classified, never answered from the cache."""

    def strict(payload: Any) -> tuple[Counter, ...]:
        return (Counter.LOAD_UNSIGNED,) if payload.signed is False else (Counter.LOAD_NETWORK,)

    monkeypatch.setitem(tree._CODES_BY_KIND, "image_load", strict)
    fresh_caches["image_load"] = (strict, CODE_FIELDS["image_load"], {})
    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    for flag, number in ((False, 0), (True, 1)):
        event = kit.load("root", r"C:\x\a.dll", signed=flag)
        odd = event.model_copy(update={"payload": event.payload.model_copy(update={"signed": number})})
        assert _one_event_codes(event) == strict(event.payload)
        assert _one_event_codes(odd) == strict(odd.payload) == (Counter.LOAD_NETWORK,)
    assert set(fresh_caches["image_load"][2]) == {(r"C:\x\a.dll", False), (r"C:\x\a.dll", True)}


def test_long_strings_are_classified_but_not_remembered(fresh_caches: dict[str, Any]) -> None:
    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    limit = _cforest.CODES_CACHE_CHARS
    at_limit = "C:\\Users\\a\\AppData\\Local\\Temp\\" + "a" * (limit - 34) + ".exe"
    past = at_limit.replace(".exe", "x.exe")
    assert len(at_limit) == limit
    for path in (at_limit, past):
        codes = _one_event_codes(kit.write("root", path))
        assert codes == CODES_BY_KIND["file_create"](kit.write("root", path).payload)
        assert Counter.FW_TEMP in codes and Counter.FW_EXECUTABLE in codes
    assert set(fresh_caches["file_create"][2]) == {at_limit}
    key, value_name = "HKLM\\" + "k" * (limit - 10), "v" * 6
    _one_event_codes(kit.reg("root", key, value_name))
    assert fresh_caches["registry_set"][2] == {}  # key and value name together are past the limit


def test_a_device_sending_unique_strings_cannot_grow_the_cache_past_its_bound(
    fresh_caches: dict[str, Any],
) -> None:
    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    forest = DeviceForest("dev-cache", "windows", TreeLimits(max_evidence_per_node=8, dedupe_by_seq=False))
    forest.apply_run([kit.start("root", ROOT_IMAGE, "x")], 0, [])
    bound = _cforest.CODES_CACHE_ENTRIES
    events = [kit.write("root", f"C:\\Users\\a\\AppData\\Local\\Temp\\{i}.exe") for i in range(bound + 500)]
    assert forest.apply_run(events, 0, []) == len(events)
    cache = fresh_caches["file_create"][2]
    assert 0 < len(cache) <= bound
    assert forest.nodes["root"].code_counts[Counter.FW_EXECUTABLE] == len(events)


def test_a_replaced_classifier_is_called_not_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    event = kit.dns("root", "a.example")
    assert _one_event_codes(event) == (Counter.DNS_QUERY,)  # remembered for dns_query now
    monkeypatch.setitem(tree._CODES_BY_KIND, "dns_query", lambda payload: (Counter.LSASS_READ,))
    assert _one_event_codes(event) == (Counter.LSASS_READ,)


@settings(max_examples=150, deadline=None)
@given(
    path=st.text(min_size=1, max_size=40) | st.sampled_from(PATHS),
    signed=st.sampled_from([None, True, False]),
    ip=st.sampled_from(["10.1.2.3", "8.8.8.8", "not an ip", "::ffff:8.8.8.8"]),
    port=st.integers(0, 65535),
    access=st.integers(0, 2**32 - 1),
)
def test_any_values_get_the_classifiers_codes_from_the_cache_too(
    path: str, signed: bool | None, ip: str, port: int, access: int
) -> None:
    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [
        kit.write("root", path),
        kit.rename("root", path, path + ".x"),
        kit.delete("root", path),
        kit.reg("root", path, path),
        kit.load("root", path, signed=signed),
        kit.connect("root", ip, port),
        kit.access("root", path, access),
        kit.inject("root", path),
    ]
    for event in events:
        expected = CODES_BY_KIND[event.payload.kind](event.payload)
        assert _one_event_codes(event) == expected == _one_event_codes(event), event.payload  # miss, hit


def test_a_classifier_replaced_during_a_fold_call_answers_the_events_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fold remembers each kind's classifier for the rest of its call, but only while `CODES_BY_KIND`
    and `CODE_CACHES` are unchanged: a classifier that swaps the table mid-record is honoured from the
    very next event, as `apply` (Python, one lookup per event) honours it."""
    original = tree._CODES_BY_KIND["dns_query"]

    def swapping(payload: Any) -> tuple[Counter, ...]:
        tree._CODES_BY_KIND["dns_query"] = lambda p: (Counter.LSASS_READ,)  # the table changes mid-call
        return tuple(original(payload))

    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [kit.start("root", ROOT_IMAGE, "explorer.exe")]
    events += [kit.dns("root", "a.example") for _ in range(3)]
    results = []
    for compiled in (False, True):
        monkeypatch.setitem(tree._CODES_BY_KIND, "dns_query", swapping)
        with tree_path(compiled):
            forest = DeviceForest("dev-cache", "windows")
            assert forest.apply_run(events, 0, []) == len(events)
        results.append(snapshot(forest))
        codes = [record & 0xFF for record in forest.nodes["root"].evidence]
        assert codes.count(Counter.LSASS_READ) == 2 and codes.count(Counter.DNS_QUERY) == 1, (compiled, codes)
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "strong",
    [
        frozenset({Counter.DNS_QUERY}),  # the codes' own kind of set: read as bits
        {Counter.DNS_QUERY},  # a plain set: asked as Python asks it
        frozenset({float(Counter.DNS_QUERY)}),  # equal to the code, but not an int: asked as Python asks it
        frozenset({Counter.DNS_QUERY, "odd"}),
    ],
)
def test_strong_and_generic_codes_are_the_sets_python_reads(
    monkeypatch: pytest.MonkeyPatch, strong: Any
) -> None:
    """Whatever sets `STRONG_CODES` and `GENERIC_CODES` are, the fold's notable events and re-scores are
    `apply`'s: a strong DNS query is notable at every sighting, not only the first."""
    monkeypatch.setattr(tree, "_STRONG", strong)
    monkeypatch.setattr(tree, "_GENERIC", frozenset({Counter.FILE_WRITE, 1.5}))
    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    events = [kit.start("root", ROOT_IMAGE, "explorer.exe")]
    events += [kit.dns("root", "a.example") if i % 2 else kit.write("root", PATHS[0]) for i in range(6)]
    built = [_build(events, compiled) for compiled in (False, True)]
    assert built[0] == built[1]
    changes = built[1][1]
    assert sum(1 for _, _, notable in changes if notable) >= 1


def test_a_payload_kind_read_from_its_class_follows_the_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec's payloads carry `kind` on the class (their tag), not on the instance: the fold remembers
    that value, but only while the class is unchanged. A class whose `kind` is replaced between two
    records is read anew, as Python's `apply` reads it."""

    class Payload:
        __slots__ = ()  # no instance dict: the class's value is what an instance reads
        kind = "dns_query"
        query = "a.example"

    kit = EventKit("dev-cache", start=datetime(2026, 5, 1, tzinfo=UTC))
    start = kit.start("root", ROOT_IMAGE, "explorer.exe")
    odd = [kit.dns("root", "a.example").model_copy(update={"payload": Payload()}) for _ in range(2)]
    results = []
    for compiled in (False, True):
        monkeypatch.setattr(Payload, "kind", "dns_query")
        with tree_path(compiled):
            forest = DeviceForest("dev-cache", "windows")
            assert forest.apply_run([start, odd[0]], 0, []) == 2
            Payload.kind = "process_end"  # the class changes between two records
            assert forest.apply_run([odd[1]], 0, []) == 1
        root = forest.nodes["root"]
        assert [record & 0xFF for record in root.evidence].count(Counter.DNS_QUERY) == 1, compiled
        assert root.end_ms == odd[1].ts.timestamp() * 1000, compiled  # the second was read as an end
        results.append(snapshot(forest))
    assert results[0] == results[1]
