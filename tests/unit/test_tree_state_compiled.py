"""State records with the C loops (`pipeline._cstate`) and without: the same bytes, the same errors.

The evidence of every encoded process is packed (only the records new since its last encoding) and
base64'd, and its row written (`row_json`, else orjson), in C when the extension is built;
a worker without a compiler must write the same state records (another worker may restore them, and
an upgrade must not make a forest restore differently). So records are compared byte for byte across
the pipeline benchmark's stream and random streams, with both paths and with a switch between them
mid-stream; hostile input (records that are not ints or not in int64's range, evidence that is not a
sequence) must raise what Python raises, never crash; and the file runs once more in a child
interpreter with `PYTHONMALLOC=debug -X dev`.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import enum
import functools
import gc
import os
import random
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
from debug_child import passes_under_debug_allocator
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tree_state import SMALL, random_event

from pipeline import tree_state
from pipeline.detect import Detector
from pipeline.eventkit import EventKit
from pipeline.model.provisional import ProvisionalRules
from pipeline.node import ProcessNode
from pipeline.tree import DeviceForest
from pipeline.tree_state import ForestEncoder, forest_from_bytes, forest_to_bytes
from pipeline.windows import CODE_BITS
from schemas.fastcodec import FastEvent, decode_events

NOT_BUILT = "pipeline._cstate is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
try:
    from pipeline import _cstate
except ImportError:  # pragma: no cover - every test below then fails with NOT_BUILT (never skipped)
    _cstate = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _built() -> None:
    compiled = (tree_state._ctail, tree_state._cb64, tree_state._crow, tree_state._crows)
    assert _cstate is not None and None not in compiled, NOT_BUILT
CHILD = "RINGFENCE_CSTATE_CHILD"


@contextmanager
def state_path(compiled: bool) -> Iterator[None]:
    """Inside, state records are encoded with the C loops (`compiled`) or with Python alone."""
    saved = tree_state._ctail, tree_state._cb64, tree_state._crow, tree_state._crows
    tree_state._ctail, tree_state._cb64, tree_state._crow, tree_state._crows = (
        saved if compiled else (None, None, None, None))
    try:
        yield
    finally:
        tree_state._ctail, tree_state._cb64, tree_state._crow, tree_state._crows = saved


def python_evidence(records: Any, since_ms: int) -> str:
    with state_path(False):
        return tree_state._evidence_b64(tree_state._pack(records), since_ms)


def bench_stream(events: int) -> list[tuple[Any, ...]]:
    from bench._pipeline_data import records

    return [decode_events(value) for _, value in records(events, 50, 20)]


def test_the_benchmark_stream_gives_the_same_records_either_way() -> None:
    """Three encoders of one detector's forests, one with the C loop, one without, one switching paths
    each checkpoint: every record equal (each encoding moves the forest's epoch on, so each encoder
    also shows that the others' encodings do not hide a change from it)."""
    detector = Detector(ProvisionalRules())
    encoders = {"c": ForestEncoder(), "python": ForestEncoder(), "switching": ForestEncoder()}
    now, written = 1_700_000_000_000, 0
    for number, events in enumerate(bench_stream(30_000)):
        now += 40
        detector.process(events, now)
        if number % 100 != 99:
            continue
        for device in sorted(detector.forests):
            records = set()
            for name, encoder in encoders.items():
                with state_path(name == "c" or (name == "switching" and number // 100 % 2 == 0)):
                    records.add(detector.device_state(device, encoder))
            assert len(records) == 1, device
            written += 1
    assert written > 50


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_give_the_same_records_either_way(seed: int) -> None:
    rng = random.Random(seed)
    kit = EventKit("dev-r")
    keys = [f"p{i}" for i in range(16)]
    forests = {name: DeviceForest("dev-r", "windows", SMALL) for name in ("c", "python")}
    encoders = {name: ForestEncoder(full_every=7) for name in forests}
    for step in range(400):
        events = [random_event(kit, rng, keys) for _ in range(rng.randrange(1, 6))]
        for forest in forests.values():
            for event in events:
                forest.apply(event)
        if step % 9 == 0:
            since = forests["c"].watermark_ms - rng.choice([0, 500, 3_000, 10**9])
            records, wholes = set(), set()  # (an encoder's clean node keeps its evidence: not a whole record)
            for name, forest in forests.items():
                with state_path(name == "c"):
                    records.add(encoders[name].encode(forest, since))
                    wholes.add(forest_to_bytes(forest, since))
            assert len(records) == 1 and len(wholes) == 1
            restored = forest_from_bytes(records.pop(), SMALL)
            assert restored.recency_order() == forests["c"].recency_order()


@pytest.mark.parametrize(
    "records",
    [[], [0], [1, 2, 3], [-1], [-(1 << 63)], [(1 << 63) - 1], [True, False], list(range(1000)),
     [5 << CODE_BITS, 1 << CODE_BITS, 9 << CODE_BITS], [1 << CODE_BITS, 9 << CODE_BITS, 2 << CODE_BITS]],
)  # fmt: skip
@pytest.mark.parametrize("since_ms", [-(1 << 70), -(1 << 63), 0, 1, 3, 5, 8, 10**6, (1 << 63) - 1])
def test_evidence_is_the_same_base64_as_pythons(records: list[int], since_ms: int) -> None:
    expected = python_evidence(records, since_ms)
    for evidence in (deque(records), records, tuple(records)):
        assert _cstate.raw_b64(_cstate.evidence_tail(evidence, len(records)), since_ms, CODE_BITS) == expected


@pytest.mark.parametrize("count", [-1, 0, 1, 2, 3, 999, 1000, 1001, 10**9])
def test_a_tail_is_the_last_records_packed_as_python_packs_them(count: int) -> None:
    records = [(i << CODE_BITS) | (i % 7) for i in range(1000)]
    expected = tree_state._pack(records[len(records) - max(0, min(count, len(records))):])
    for evidence in (deque(records, maxlen=1000), records, tuple(records)):
        assert _cstate.evidence_tail(evidence, count) == expected


@pytest.mark.parametrize(
    ("records", "error"),
    [([1 << 63], OverflowError), ([-(1 << 63) - 1], OverflowError), ([1.5], TypeError), (["1"], TypeError),
     ([None], TypeError), ([1, object()], TypeError)],
)  # fmt: skip
def test_evidence_not_in_int64_raises_what_python_raises(records: list[Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        python_evidence(records, 0)
    with pytest.raises(error):
        _cstate.evidence_tail(deque(records), len(records))


def test_bad_arguments_are_errors_not_crashes() -> None:
    raw = tree_state._pack([1, 2])
    with pytest.raises(TypeError):
        _cstate.evidence_tail(5, 1)
    with pytest.raises(TypeError):
        _cstate.evidence_tail(iter([1]), 1)  # not sized
    with pytest.raises(TypeError):
        _cstate.evidence_tail([1], "1")
    with pytest.raises(TypeError):
        _cstate.raw_b64(bytearray(raw), 0, CODE_BITS)
    with pytest.raises(TypeError):
        _cstate.raw_b64(raw, "0", CODE_BITS)
    with pytest.raises(ValueError, match="code_bits"):
        _cstate.raw_b64(raw, 0, 99)
    with pytest.raises(ValueError, match="whole int64"):
        _cstate.raw_b64(raw[:-1], 0, CODE_BITS)
    with pytest.raises(TypeError):
        _cstate.raw_b64(raw, 0)  # type: ignore[call-arg]


class _Shrinking(list[int]):
    """A list whose reversed iteration ends early (a container changed while it is read)."""

    def __reversed__(self) -> Any:
        return iter([7])


def test_a_container_that_yields_fewer_records_than_its_length_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="shrank"):
        _cstate.evidence_tail(_Shrinking([1, 2, 3]), 3)


def test_a_busy_process_encoded_again_reads_only_its_new_records() -> None:
    # Its earlier records are kept as bytes with its row: the next encoding packs what was appended
    # since (an old record changed behind the encoder's back shows it: it is not read again). A deque's
    # records, as a build without pipeline._cring keeps them (a Ring is copied whole: the next test).
    kit = EventKit("d")
    forest, encoder = DeviceForest("d", "windows"), ForestEncoder()
    forest.apply(kit.start("p", "C:\\a.exe", "a"))
    forest.nodes["p"].evidence = deque(forest.nodes["p"].evidence, maxlen=512)
    for i in range(40):
        forest.apply(kit.write("p", f"C:\\Temp\\f{i}.tmp"))
    encoder.encode(forest)
    evidence = forest.nodes["p"].evidence
    first = evidence[0]
    evidence[0] = first + 1  # not a way the forest changes: only to see what is read
    forest.apply(kit.write("p", "C:\\Temp\\last.tmp"))
    row = orjson.loads(encoder.encode(forest))["nodes"][0]
    restored = np.frombuffer(base64.b64decode(row[18]), dtype="<i8").tolist()
    assert restored[0] == first and restored[1:] == list(evidence)[1:]
    assert len(restored) == len(evidence) > 40


def test_no_reference_is_leaked_per_event() -> None:
    kit = EventKit("d")
    events = [kit.start("p", "C:\\a.exe", "a", parent="root"), kit.write("p", "C:\\x")]
    forest = DeviceForest("d", "windows")
    for event in events:
        forest.apply(event)
    node = forest.nodes["p"]
    records = list(node.evidence)
    gc.collect()  # garbage of earlier tests (hypothesis' examples) may hold the watched objects
    before = (sys.getrefcount(node.evidence), *map(sys.getrefcount, records))
    for _ in range(10_000):
        raw = _cstate.evidence_tail(node.evidence, len(records))
        _cstate.raw_b64(raw, 0, CODE_BITS)
        _cstate.raw_b64(raw, 1 << 70, CODE_BITS)
    assert (sys.getrefcount(node.evidence), *map(sys.getrefcount, records)) == before


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the child run")
def test_this_file_passes_in_a_child_with_the_debug_allocator() -> None:
    passes_under_debug_allocator(__file__, CHILD)


def test_notable_events_in_one_msgspec_call_are_the_bytes_of_one_call_per_event() -> None:
    """`_notable_json` encodes fast events in one call; mixed (restored dicts, pydantic models) per event."""
    fast = [event for events in bench_stream(2_000) for event in events][:5]
    model = EventKit("d").start("p", "C:\\a.exe", "a")
    for notable in ((), tuple(fast), (fast[0], model), (fast[1], {"restored": "dict"}), (model,)):
        expected = b"[" + b",".join(map(tree_state._event_json, notable)) + b"]"
        assert tree_state._notable_json(notable) == expected


class Code(enum.IntEnum):  # the forest's code counts are keyed by an IntEnum (`pipeline.behaviour.Counter`)
    WRITE = 5


class Level(enum.StrEnum):
    HIGH = "high\u00e9\n"


class Text(str):
    def __str__(self) -> str:
        return "not what orjson writes"


WRITTEN = (  # values row_json writes itself, exactly as orjson does
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | st.sampled_from([Code.WRITE, 0, -0])
    | st.text() | st.sampled_from(["", "\x00\x1f\x7f\"\\/\b\f\n\r\t", "\u2028\ufeff\U0001f600", Level.HIGH,
                                   Text("x\"y")])
)  # fmt: skip
LEFT = (  # values orjson decides (writes, or refuses with its error): row_json returns None
    st.integers(1 << 63, 1 << 70) | st.integers(-(1 << 70), -(1 << 63) - 1) | st.floats(allow_nan=False)
    | st.just("\ud800 lone surrogate") | st.just(object()) | st.just((1, 2)) | st.just(b"bytes")
)  # fmt: skip
CONN = st.tuples(WRITTEN, WRITTEN, WRITTEN) | st.lists(WRITTEN, max_size=4)


RECORDS = st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=12)
SINCE = st.sampled_from([-(1 << 70), 0, 3 << CODE_BITS, 10**15, 1 << 70])


def orjson_row(fields: tuple[Any, ...], records: list[int], since_ms: int, conns: Any, notable: bytes,
               codes: dict[Any, Any]) -> Any:
    """The row `_encode_row` wrote before `row_json`: Python's evidence, orjson's JSON (or its error)."""
    evidence = python_evidence(records, since_ms)
    try:
        return orjson.dumps((*fields, evidence, tuple(conns), orjson.Fragment(notable), tuple(codes.items())))
    except orjson.JSONEncodeError as exc:
        return type(exc)


def c_row(fields: tuple[Any, ...], records: list[int], since_ms: int, conns: Any, notable: bytes,
          codes: dict[Any, Any]) -> bytes | None:
    return _cstate.row_json(fields, tree_state._pack(records), since_ms, CODE_BITS, conns, notable, codes)


@settings(max_examples=400, deadline=None)
@given(st.lists(WRITTEN, max_size=20).map(tuple), RECORDS, SINCE, st.lists(CONN, max_size=5),
       st.sampled_from([b"[]", b'[{"a":1}]']), st.dictionaries(WRITTEN, WRITTEN, max_size=6))
def test_a_row_of_values_it_writes_is_orjsons_bytes(
        fields: tuple[Any, ...], records: list[int], since_ms: int, conns: list[Any], notable: bytes,
        codes: dict[Any, Any]) -> None:
    for container in (conns, deque(conns), tuple(conns)):
        assert c_row(fields, records, since_ms, container, notable, codes) == orjson_row(
            fields, records, since_ms, container, notable, codes)


@settings(max_examples=300, deadline=None)
@given(st.lists(WRITTEN, max_size=6), LEFT, st.sampled_from(["field", "conn", "conn item", "code", "count"]))
def test_a_row_with_a_value_it_does_not_write_is_left_to_orjson(
        values: list[Any], left: Any, where: str) -> None:
    fields, conns, codes = tuple(values), [tuple(values)], {1: 2}
    if where == "field":
        fields += (left,)
    elif where == "conn":  # a connection that is the value, or holds a tuple (one level, no deeper)
        conns.append((left,) if isinstance(left, tuple) else left)
    elif where == "conn item":
        conns.append((1, left))
    else:
        codes = {left: 1} if where == "code" else {1: left}
    assert c_row(fields, [1, 2], 0, conns, b"[]", codes) is None  # the encoder then asks orjson


def test_a_node_whose_values_orjson_must_write_gives_the_same_record_either_way() -> None:
    kit = EventKit("d")
    forest = DeviceForest("d", "windows")
    forest.apply(kit.start("p", "C:\\a\u00e9.exe", "a \x01 \"b\"", parent="root"))
    forest.apply(kit.write("p", "C:\\x"))
    node = forest.nodes["p"]
    for pid in (1 << 63, (1 << 64) - 1, 7):  # past int64: orjson writes it (C leaves it)
        node.pid = pid
        records = set()
        for compiled in (True, False):
            with state_path(compiled):
                records.add(forest_to_bytes(forest))
        assert len(records) == 1 and forest_from_bytes(records.pop()).nodes["p"].pid == pid


class _Failing:
    def __iter__(self) -> Any:
        yield (1, "a", 2)
        raise RuntimeError("connections changed")


class _Reentrant:
    """Connections whose iterator writes another row (the buffer kept between calls is in use)."""

    def __init__(self) -> None:
        self.inner: bytes | None = None

    def __iter__(self) -> Any:
        yield (1, "a", 2)
        self.inner = c_row(("inner", 7), [9], 0, [(3, "b", 4)], b"[]", {2: 5})
        yield (5, "c", 6)


def test_a_row_written_while_another_is_being_written_leaves_both_intact() -> None:
    conns = _Reentrant()
    outer = c_row(("outer",) * 40, list(range(300)), 0, conns, b"[" + b" " * 3000 + b"]", {1: 2})
    assert outer == orjson_row(("outer",) * 40, list(range(300)), 0, [(1, "a", 2), (5, "c", 6)],
                               b"[" + b" " * 3000 + b"]", {1: 2})
    assert conns.inner == orjson_row(("inner", 7), [9], 0, [(3, "b", 4)], b"[]", {2: 5})
    huge = c_row(("x" * (3 << 20),), [], 0, [], b"[]", {})  # past the kept buffer's size: freed after
    assert huge is not None and len(huge) > 3 << 20
    assert c_row((1,), [], 0, [], b"[]", {}) == b'[1,"",[],[],[]]'


def test_bad_row_arguments_are_errors_not_crashes() -> None:
    good: tuple[Any, ...] = ((1,), b"", 0, CODE_BITS, [], b"[]", {})
    for at, bad in ((0, [1]), (1, "e"), (2, "0"), (3, None), (4, 5), (5, "[]"), (5, bytearray(b"[]")),
                    (6, [(1, 2)])):
        args = list(good)
        args[at] = bad
        with pytest.raises(TypeError):
            _cstate.row_json(*args)
    with pytest.raises(ValueError, match="code_bits"):
        _cstate.row_json((1,), b"", 0, 99, [], b"[]", {})
    with pytest.raises(ValueError, match="whole int64"):
        _cstate.row_json((1,), b"1234567", 0, CODE_BITS, [], b"[]", {})
    with pytest.raises(TypeError):
        _cstate.row_json((1,), b"", [])  # type: ignore[call-arg]
    with pytest.raises(RuntimeError, match="connections changed"):
        _cstate.row_json((1,), b"", 0, CODE_BITS, _Failing(), b"[]", {})


def test_no_reference_is_leaked_per_row() -> None:
    text, big, conn, raw = "C:\\a\u00e9 \"x\"", 1 << 65, (1, "10.0.0.1", 443), tree_state._pack([1, 2, 3])
    codes: dict[int, int] = {Code.WRITE: 3}
    watched = (text, big, conn, codes, Code.WRITE, raw)
    gc.collect()  # garbage of earlier tests (hypothesis' examples) may hold the watched objects
    before = tuple(map(sys.getrefcount, watched))
    for _ in range(10_000):
        assert _cstate.row_json((text, 1, None), raw, 0, CODE_BITS, [conn], b"[]", codes) is not None
        assert _cstate.row_json((text, big), raw, 1 << 70, CODE_BITS, [conn], b"[]", codes) is None
        assert _cstate.row_json((text,), raw, 2 << CODE_BITS, CODE_BITS, [conn, (big,)], b"[]", codes) is None
        with pytest.raises(RuntimeError):
            _cstate.row_json((text,), raw, 0, CODE_BITS, _Failing(), b"[]", codes)
    assert tuple(map(sys.getrefcount, watched)) == before


# ---------------------------------------------------------------- encode_rows: a node's row in C


def python_first_row(node: Any, since_ms: int) -> Any:
    """What `_encode_row` makes of a node never encoded, with Python and orjson alone (or its error)."""
    with state_path(False):
        try:
            row = tree_state._encode_row(node, since_ms, None, EPOCH)
        except (TypeError, ValueError, OverflowError, AttributeError, orjson.JSONEncodeError) as exc:
            return type(exc)
    return row_values(row)


def row_values(row: Any) -> Any:
    """A `_Row`'s fields (None for None), the node's by identity."""
    if row is None:
        return None
    return tuple(id(value) if name in ("node", "source") else value
                 for name, value in zip(ROW_FIELDS, attrgetter(*ROW_FIELDS)(row), strict=True))


ROW_FIELDS = tuple(field.name for field in dataclasses.fields(tree_state._Row))
EPOCH = 7


def c_first_rows(nodes: list[Any], since_ms: int, encode: Any = tree_state._JSON.encode) -> list[Any]:
    made = _cstate.encode_rows(nodes, [None] * len(nodes), since_ms, CODE_BITS, FastEvent, encode,
                               tree_state._Row, EPOCH)
    assert all(row is None or type(row) is tree_state._Row for row in made)
    return [row_values(row) for row in made]


@functools.cache
def one_device_events() -> list[Any]:
    stream = bench_stream(2_000)
    return [event for batch in stream for event in batch if event.device_id == stream[0][0].device_id]


def bench_node() -> Any:
    """A fresh copy of the bench's busiest process on one device (its own objects: tests change them)."""
    forest = DeviceForest("d", "windows")
    for event in one_device_events():
        forest.apply(event)
    return max(forest.nodes.values(), key=lambda node: len(node.notable) + len(node.conns))


@settings(max_examples=300, deadline=None)
@given(st.lists(WRITTEN, min_size=18, max_size=18), RECORDS, SINCE,
       st.lists(st.tuples(st.integers(-(1 << 63), (1 << 63) - 1), WRITTEN, WRITTEN), max_size=5),
       st.dictionaries(WRITTEN, st.integers(0, 1 << 40), max_size=6))
def test_a_first_row_in_c_is_the_row_python_writes(values: list[Any], records: list[int], since_ms: int,
                                                   conns: list[Any], codes: dict[Any, int]) -> None:
    node = ProcessNode("p")
    for name, value in zip(tree_state._FIELDS, values, strict=True):
        setattr(node, name, value)
    node.evidence, node.conns, node.code_counts = deque(records), deque(conns), codes
    node.notable = deque(one_device_events()[:3])
    (made,) = c_first_rows([node], since_ms)
    assert made == python_first_row(node, since_ms)


class _Deque(deque[Any]):
    pass


def _hostile(node: Any, what: str) -> None:
    """Make one thing about a node something `encode_rows` leaves to Python."""
    if what == "evidence not int":  # a deque's (a Ring refuses both: test_a_ring_refuses_what_it_cannot_hold)
        node.evidence = deque(node.evidence, maxlen=node.evidence.maxlen)
        node.evidence.append("7")
    elif what == "evidence past int64":
        node.evidence = deque(node.evidence, maxlen=node.evidence.maxlen)
        node.evidence.append(1 << 63)
    elif what == "evidence subclass":
        node.evidence = _Deque(node.evidence)
    elif what == "conns list":
        node.conns = list(node.conns)
    elif what == "conn not a tuple":
        node.conns.append([1, "a", 2])
    elif what == "conn stamp not int":
        node.conns.appendleft((1.5, "a", 2))
    elif what == "conn stamp past int64":
        node.conns.appendleft((1 << 64, "a", 2))
    elif what == "notable restored dict":
        node.notable.append({"restored": "dict"})
    elif what == "count not int":
        node.code_counts[3] = 2.0
    elif what == "counts overflow":
        node.code_counts.update({3: (1 << 63) - 1, 4: 1})
    elif what == "field float":
        node.pid = 1.5
    elif what == "field past int64":
        node.uid = 1 << 64
    elif what == "field lone surrogate":
        node.user = "\ud800"
    elif what == "codes not a dict":
        node.code_counts = list(node.code_counts.items())
    elif what == "no evidence slot":
        del node.evidence


HOSTILE = ["evidence not int", "evidence past int64", "evidence subclass", "conns list", "conn not a tuple",
           "conn stamp not int", "conn stamp past int64", "notable restored dict", "count not int",
           "counts overflow", "field float", "field past int64", "field lone surrogate", "codes not a dict",
           "no evidence slot"]


@pytest.mark.parametrize("what", HOSTILE)
def test_a_node_it_does_not_write_exactly_is_left_to_python(what: str) -> None:
    good, node = bench_node(), bench_node()
    _hostile(node, what)
    made = c_first_rows([good, node, good], 0)
    assert made[1] is None  # then `_encode_row` writes it, or raises its own error
    assert made[0] == made[2] == python_first_row(good, 0)
    if what != "no evidence slot":  # every other one: the encoder's record is Python's, or its error
        forest = DeviceForest("d", "windows")
        forest.nodes[node.key], forest._lru[node.key] = node, None
        outcomes: set[Any] = set()
        for compiled in (True, False):
            with state_path(compiled):
                try:
                    outcomes.add(ForestEncoder().encode(forest, 0))
                except (TypeError, ValueError, OverflowError, AttributeError, orjson.JSONEncodeError) as exc:
                    outcomes.add(type(exc))
        assert len(outcomes) == 1, outcomes


def test_an_encoder_that_fails_or_returns_no_bytes_leaves_the_node_to_python() -> None:
    node = bench_node()

    def failing(notable: Any) -> bytes:
        raise RuntimeError("no")

    for encode in (failing, lambda notable: "not bytes", lambda notable: bytearray(b"[]")):
        assert c_first_rows([node], 0, encode) == [None]


def test_an_encoder_that_changes_the_list_does_not_crash() -> None:
    nodes = [bench_node() for _ in range(3)]

    def clearing(notable: Any) -> bytes:
        nodes.clear()
        return b"[]"

    made = _cstate.encode_rows(nodes, [None] * 3, 0, CODE_BITS, FastEvent, clearing, tree_state._Row, EPOCH)
    assert len(made) == 3 and all(row is not None and row.notable_json == b"[]" for row in made)


def test_bad_encode_rows_arguments_are_errors_not_crashes() -> None:
    good: list[Any] = [[bench_node()], [None], 0, CODE_BITS, FastEvent, tree_state._JSON.encode,
                       tree_state._Row, 1]

    @dataclasses.dataclass(slots=True)
    class Short:  # a slotted class without all of _Row's fields
        node: Any

    class Frozen(tree_state._Row):  # not a direct subclass of object
        pass

    for at, bad in ((0, (1,)), (0, None), (1, (None,)), (1, []), (1, [None, None]), (2, "0"), (3, None),
                    (4, 5), (6, None), (6, int), (6, tuple), (6, Short), (6, Frozen), (6, dict)):
        args = list(good)
        args[at] = bad
        with pytest.raises(TypeError):
            _cstate.encode_rows(*args)
    with pytest.raises(ValueError, match="code_bits"):
        _cstate.encode_rows([], [], 0, 99, FastEvent, tree_state._JSON.encode, tree_state._Row, 1)
    with pytest.raises(TypeError):
        _cstate.encode_rows([], [], 0)  # type: ignore[call-arg]
    assert c_first_rows([object(), 5, None], 0) == [None] * 3


def test_no_reference_is_leaked_per_new_row() -> None:
    node = bench_node()
    _hostile(other := bench_node(), "conn stamp not int")
    watched = (node, node.evidence, node.conns, node.notable, node.code_counts, node.command_line,
               *node.notable, *node.conns, other, other.conns)
    gc.collect()  # garbage of earlier tests (hypothesis' examples) may hold the watched objects
    before = tuple(map(sys.getrefcount, watched))
    for _ in range(3_000):
        made = c_first_rows([node, other], 0)
        assert made[0] is not None and made[1] is None
    del made
    assert tuple(map(sys.getrefcount, watched)) == before


def test_a_row_made_in_c_is_one_the_collector_does_not_visit() -> None:
    """Neither the row nor its tuple of fast events is tracked (neither can be in a cycle); both are
    freed by their reference counts, through collections, as rows are replaced."""
    node = bench_node()
    (row,) = _cstate.encode_rows([node], [None], 0, CODE_BITS, FastEvent, tree_state._JSON.encode,
                                 tree_state._Row, 7)
    assert row.node is node and row.source is node.evidence and row.epoch == 7 and row.mark == node.alert_mark
    assert not gc.is_tracked(row) and not gc.is_tracked(row.notable) and row.notable == tuple(node.notable)
    assert row_values(row) == python_first_row(node, 0)
    before = sys.getrefcount(node)
    for _ in range(2_000):
        row = _cstate.encode_rows([node], [row], 0, CODE_BITS, FastEvent, tree_state._JSON.encode,
                                  tree_state._Row, 7)[0]
        gc.collect(0)
    assert sys.getrefcount(node) == before and row.node is node


def python_row(node: Any, previous: Any, since_ms: int) -> Any:
    with state_path(False):
        return row_values(tree_state._encode_row(node, since_ms, previous, EPOCH))


def c_row_from(node: Any, previous: Any, since_ms: int) -> Any:
    (row,) = _cstate.encode_rows([node], [previous], since_ms, CODE_BITS, FastEvent, tree_state._JSON.encode,
                                 tree_state._Row, EPOCH)
    return row_values(row)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 80), st.integers(-3, 3), st.booleans(),
       st.sampled_from(["same", "equal", "other", "dicts"]), st.sampled_from([0, 10**15, 1 << 70]))
def test_a_row_from_a_previous_row_in_c_is_the_row_python_writes(
        more: int, drift: int, same_source: bool, notable: str, since_ms: int) -> None:
    """Evidence kept from the previous row plus the records appended since (or all of them again when the
    counts or the deque do not match), notable JSON reused when the events are equal: as `_encode_row`."""
    node = bench_node()
    with state_path(False):
        previous = tree_state._encode_row(node, 0, None, 1)
    for i in range(more):  # appended since: the deque drops its oldest when full
        node.evidence.append(((10**12 + i) << CODE_BITS) | 3)
    node.code_counts[3] = node.code_counts.get(3, 0) + more + drift  # drift: counts that do not match
    if not same_source:
        node.evidence = deque(node.evidence, maxlen=node.evidence.maxlen)
    if notable == "equal":  # equal events, other objects: Python's == reuses the JSON
        node.notable = deque(msgspec.structs.replace(event) for event in node.notable)
    elif notable == "other":
        node.notable.append(one_device_events()[-1])
    elif notable == "dicts":
        previous.notable = tuple(orjson.loads(previous.notable_json))
    assert c_row_from(node, previous, since_ms) == python_row(node, previous, since_ms)


def test_a_previous_row_of_another_kind_leaves_the_node_to_python() -> None:
    node = bench_node()
    with state_path(False):
        previous = tree_state._encode_row(node, 0, None, 1)
    for name, value in (("notable", list(previous.notable)), ("notable_json", "[]"),
                        ("evidence", bytearray()), ("appended", 1.0), ("appended", 1 << 64)):
        odd = copy.copy(previous)
        setattr(odd, name, value)
        assert c_row_from(node, odd, 0) is None
    assert c_row_from(node, ("not", "a", "row"), 0) is None
    assert c_row_from(node, previous, 0) == python_row(node, previous, 0)


def test_a_node_whose_attribute_replaces_the_previous_rows_parts_does_not_crash() -> None:
    """A node attribute read through Python (an unset slot, a subclass' __getattr__) runs code that may
    replace the previous row's parts: the ones read before must still be alive when they are used
    (a use after free under the debug allocator before encode_rows held them)."""
    node = bench_node()
    with state_path(False):
        previous = tree_state._encode_row(node, 0, None, 1)

    class Lazy(ProcessNode):
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:
            if name != "user":
                raise AttributeError(name)
            previous.notable_json = bytes(bytearray(previous.notable_json))  # equal bytes, new objects:
            previous.evidence = bytes(bytearray(previous.evidence))  # the old ones are freed
            previous.notable = tuple(previous.notable)
            return "u"

    node.__class__ = Lazy
    del node.user
    for _ in range(3):
        assert c_row_from(node, previous, 0) == python_row(node, previous, 0)
