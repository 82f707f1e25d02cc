"""Hostile and odd input against the pipeline's C extensions: a clear error or the Python path, never a crash.

A worker must not die on bad input, and a fault in C (a read out of bounds, a freed object used)
kills the whole process, not one record. So this file feeds `pipeline._cforest` (the tree's hot
path) and `pipeline._ctrees` (the booster) what a hostile agent or a careless caller can shape:

- events that pass validation (`schemas.fastcodec.decode_events`) with extreme values: both ends of
  the accepted time range in far time zones, seqs up to 2**63 - 1 that jump and go back, unicode and
  64 KiB strings, redeliveries. The C path must build the forest the Python `apply` builds;
- objects no decoder produces but a caller could pass: another class's slot descriptor borrowed as a
  class attribute (Python refuses it; the slot cache once read memory outside the object), a codes
  table emptied while an event is classified (the borrowed function was once called after being
  freed), codes that are int-like but not ints, counters that are not small ints;
- matrices of the wrong dtype, byte order, layout, width or row count, read-only outputs, 0 rows.
Reference counts of everything a fold reads are checked after many runs, including runs a raising
codes function stops: a leaked reference per event would grow a worker's memory without bound.

Anything that could crash runs in a child interpreter with `PYTHONMALLOC=debug -X dev` (freed
memory is poisoned there, so a use after free faults instead of passing by luck), and the whole
file is run once more that way in a child, so a crash is a reported failure, not a dead pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from forest_support import queued, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import tree
from pipeline.compiled_model import CompiledTrees, native_trees
from pipeline.tree import DeviceForest, TreeLimits
from schemas import fastcodec
from schemas.errors import ContractError

ROOT = Path(__file__).resolve().parents[2]
CHILD = "RINGFENCE_CEXT_CHILD"  # set in the child run of this file: it must not start another one
NOT_BUILT = "the C extensions are not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"


def isolated(code: str) -> str:
    """Run `code` in a child interpreter with the debug allocator: its stdout, or fail with its stderr."""
    env = {**os.environ, "PYTHONMALLOC": "debug", CHILD: "1"}
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"child exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


# --- the tree's hot path (pipeline._cforest) ---------------------------------------------------------

FOLD_SETUP = """
    from datetime import UTC, datetime
    from pipeline import _cforest
    from pipeline.behaviour import CODES_BY_KIND, GENERIC_CODES, STRONG_CODES
    from pipeline.eventkit import EventKit
    from pipeline.node import ProcessNode
    from pipeline.tree import DeviceForest

    kit = EventKit("d", start=datetime(2026, 5, 1, tzinfo=UTC))
    forest = DeviceForest("d", "windows")
    forest.apply(kit.start("p", r"C:\\a.exe", "a"))

    def fold(events, codes=None):
        codes = dict(CODES_BY_KIND) if codes is None else codes
        return _cforest.fold(forest, events, 0, [], codes, set(STRONG_CODES), set(GENERIC_CODES))
"""


def test_another_classes_slot_descriptor_is_refused_as_python_refuses_it() -> None:
    assert tree._fold is not None, NOT_BUILT
    out = isolated(
        FOLD_SETUP
        + """
    class Borrowing:  # ProcessNode's `key` slot as its own `device_id`: not a slot of this object
        __slots__ = ("a",)
        device_id = ProcessNode.__dict__["key"]

    event = Borrowing()
    event.a = "d"
    try:
        fold([event])
    except TypeError as exc:
        print("TypeError:", exc)
    """
    )
    assert "TypeError: descriptor 'key' for 'ProcessNode' objects doesn't apply" in out


def test_a_codes_function_dropped_while_its_event_is_classified_is_still_called_safely() -> None:
    assert tree._fold is not None, NOT_BUILT
    out = isolated(
        FOLD_SETUP
        + """
    table = {}

    class Payload:
        kind, dst_port = "network_connect", 443

        @property
        def dst_ip(self):
            table.clear()  # drops the only reference to the codes function being applied
            return "10.0.0.1"

    class Event:
        def __init__(self, event):
            for name in ("device_id", "ts", "seq", "process_key", "image", "parent_process_key"):
                setattr(self, name, getattr(event, name))
            self.payload = Payload()

    table["network_connect"] = (lambda held: lambda payload: (1,))([0] * 100_000)
    print("applied", fold([Event(kit.connect("p", "10.0.0.1", 443))], table))
    print(forest.nodes["p"].conns[-1][1:], forest.nodes["p"].code_counts)
    """
    )
    assert "applied 1" in out and "('10.0.0.1', 443) {1: 1}" in out


def test_thousands_of_event_types_through_the_slot_cache_each_read_at_its_own_offsets() -> None:
    """The cache holds 512 (type, name) pairs: entries are replaced and types released (by the collector,
    whose finalisers fold again from inside a fold). Each type puts `device_id` at another offset behind
    padding slots holding the forest's own device, so an offset of the wrong type would be seen."""
    assert tree._fold is not None, NOT_BUILT
    out = isolated(
        FOLD_SETUP
        + """
    results = []

    def make(i):
        class Reenter:  # released with its class: folds an event of a fresh type while folding
            def __del__(self):
                if i % 3 == 0:
                    results.append(fold([make(i + 10_000)]))

        pad = tuple(f"pad{j}" for j in range(i % 7))
        event = type(f"E{i}", (), {"__slots__": (*pad, "device_id"), "hook": Reenter()})()
        for name in pad:
            setattr(event, name, "d")
        event.device_id = f"other{i}"
        return event

    for i in range(2000):
        results.append(fold([make(i)]))
    print(len(results) >= 2000, set(results))
    """
    )
    assert "True {0}" in out


def test_codes_that_are_int_like_but_not_ints_are_refused_by_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`apply` packs `stamp | code`, which refuses an object with only `__index__`; C must not accept it."""
    assert tree._fold is not None, NOT_BUILT

    class IntLike:
        def __index__(self) -> int:
            return 3

    monkeypatch.setitem(tree._CODES_BY_KIND, "dns_query", lambda payload: (IntLike(),))
    for compiled in (False, True):
        forest, events = _started_forest(), [_decoded(_dns("p", 2, "2026-05-01T00:00:01Z"))]
        with _path(compiled), pytest.raises(TypeError):
            forest.apply_run(events, 0, [])
        assert forest.nodes["p"].code_counts == {}, compiled


@pytest.mark.parametrize("value", [2**70, 7.0])
def test_counters_that_are_not_small_ints_are_added_as_python_adds(value: Any) -> None:
    assert tree._fold is not None, NOT_BUILT
    results = []
    for compiled in (False, True):
        forest = _started_forest()
        forest.stats.events = forest.stats.duplicates_dropped = value
        events = [_decoded(_dns("p", seq, f"2026-05-01T00:00:0{seq}Z")) for seq in (2, 3, 3)]
        with _path(compiled):
            assert forest.apply_run(events, 0, []) == 3
        results.append(snapshot(forest))
    assert results[0] == results[1]
    assert (
        results[1]["stats"]["events"] == value + 2 and results[1]["stats"]["duplicates_dropped"] == value + 1
    )


def test_the_fold_keeps_no_reference_to_what_it_read_also_when_it_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every event, payload, time and codes function has its reference count back after many runs, and
    after runs stopped by a raising codes function (a leak here grows a worker forever)."""
    assert tree._fold is not None, NOT_BUILT
    raws = [_dns("p", seq, f"2026-05-01T00:{seq // 60:02d}:{seq % 60:02d}Z") for seq in range(2, 90)]
    for seq, raw in enumerate(raws):
        kind = ("file_write", "network_connect", "registry_set", "dns_query")[seq % 4]
        raw["payload"] = _payload(kind, "C:\\t\\x.txt" if seq % 8 else "10.0.0.1", bool(seq % 3))
    events = [_decoded(raw) for raw in raws]
    watched = [*events, *(e.payload for e in events), *(e.ts for e in events), *tree._CODES_BY_KIND.values()]
    before = [sys.getrefcount(o) for o in watched]
    for _ in range(30):
        _started_forest().apply_run(events, 0, [])
    assert [sys.getrefcount(o) for o in watched] == before

    def broken(payload: Any) -> tuple[()]:
        raise RuntimeError("classifier bug")

    monkeypatch.setitem(tree._CODES_BY_KIND, "registry_set", broken)
    for _ in range(30):
        with pytest.raises(RuntimeError, match="classifier bug"):
            _started_forest().apply_run(events, 0, [])
    monkeypatch.undo()
    assert [sys.getrefcount(o) for o in watched] == before


KEYS = ["p0", "p1", "p2", "k" * 128, "{~}!"]
ZONES = [
    UTC,
    timezone(timedelta(hours=14)),
    timezone(-timedelta(hours=12)),
    timezone(timedelta(hours=5, minutes=45)),
]
TEXT = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["\U0001f600" * 9, "e\u0301" * 5, "\u202etxt.exe", "A" * 65_536, "C:\\a.exe"]),
)
TIMES = st.one_of(
    st.sampled_from(
        [
            datetime(1990, 1, 1, tzinfo=UTC),
            datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
        ]
    ),
    st.datetimes(datetime(1990, 1, 2), datetime(2099, 12, 30)).map(lambda t: t.replace(tzinfo=UTC)),
)
SEQS = st.one_of(st.integers(0, 50), st.sampled_from([2**31, 2**32 - 1, 2**53 + 1, 2**63 - 2, 2**63 - 1]))


def _payload(kind: str, text: str, flag: bool) -> dict[str, Any]:
    by_kind: dict[str, dict[str, Any]] = {
        "process_start": {"image": text, "command_line": text},
        "process_end": {"exit_code": -(2**63) if flag else 2**63 - 1},
        "file_create": {"path": text},
        "file_write": {"path": text, "bytes_written": 2**63 - 1},
        "registry_set": {"key": "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\" + text},
        "network_connect": {"dst_ip": text[:64], "dst_port": 65535 if flag else 0},
        "dns_query": {"query": text},
        "image_load": {"path": text, "signed": flag, "signer": text},
        "process_access": {"target_image": "C:\\Windows\\System32\\lsass.exe", "granted_access": 2**32 - 1},
        "script": {"content": text},
    }
    return {"kind": kind, **by_kind[kind]}


@st.composite
def raw_events(draw: st.DrawFn) -> dict[str, Any]:
    ts = draw(TIMES).astimezone(draw(st.sampled_from(ZONES)))
    kind = draw(
        st.sampled_from(
            ["file_write"] * 4
            + [
                "process_start",
                "process_end",
                "file_create",
                "registry_set",
                "network_connect",
                "dns_query",
                "image_load",
                "process_access",
                "script",
            ]
        )
    )
    return {
        "event_id": f"e{draw(st.integers(0, 10**6))}",
        "device_id": "dev-h",
        "seq": draw(SEQS),
        "ts": ts.isoformat(),
        "platform": "windows",
        "process_key": draw(st.sampled_from(KEYS)),
        "parent_process_key": draw(st.sampled_from([None, *KEYS])),
        "image": draw(st.one_of(st.none(), st.just(""), TEXT)),
        "payload": _payload(kind, draw(TEXT), draw(st.booleans())),
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    st.lists(raw_events(), min_size=1, max_size=30),
    st.lists(st.integers(0, 29), max_size=6),
    st.sampled_from(
        [
            None,
            TreeLimits(max_nodes=3, max_evidence_per_node=2, max_conns_per_node=1),
            TreeLimits(dedupe_by_seq=False),
        ]
    ),
    st.integers(1, 7),
)
def test_validated_but_extreme_streams_build_the_same_forest_either_way(
    raws: list[dict[str, Any]], redelivered: list[int], limits: TreeLimits | None, chunk: int
) -> None:
    assert tree._fold is not None, NOT_BUILT
    events = [event for raw in raws for event in _validated(raw)]
    events += [events[i] for i in redelivered if i < len(events)]  # a redelivery: same object again
    if not events:
        return
    outcomes = [_build(events, limits, compiled, chunk) for compiled in (False, True)]
    assert outcomes[0] == outcomes[1]
    assert not isinstance(outcomes[1][0], str), outcomes[1][0]  # validated events never make apply raise


# --- the booster (pipeline._ctrees) ---------------------------------------------------------------

WIDTH, CLASSES = 6, 3


def _forest(depth: int = 2, thresholds: list[float] | None = None) -> tuple[CompiledTrees, Any]:
    """One tree per class (so a class's margin is its base plus one leaf, exact in numpy and C)."""
    internal = (1 << depth) - 1
    rng = np.random.default_rng(depth)
    chosen = np.asarray(thresholds or rng.normal(size=CLASSES * internal), dtype=np.float32)
    compiled = CompiledTrees(
        depth,
        rng.integers(0, WIDTH, size=CLASSES * internal).astype(np.intp),
        np.resize(chosen, CLASSES * internal).astype(np.float32),
        rng.random(CLASSES * internal) < 0.5,
        (np.arange(CLASSES << depth, dtype=np.float32) + 1) / np.float32(8),  # distinct, exact, never -0.0
        np.eye(CLASSES, dtype=np.float32),
        np.asarray([0.5, -0.25, 2.0], dtype=np.float32),
    )
    native = native_trees(compiled, WIDTH)
    assert native is not None, NOT_BUILT
    return compiled, native


def _out(rows: int) -> Any:
    return np.empty((rows, CLASSES), np.float32)


ODD_CALLS: dict[str, tuple[Any, Any, type[Exception], str]] = {
    "float64 matrix": (np.zeros((2, WIDTH)), _out(2), TypeError, "format 'f'"),
    "big-endian matrix": (np.zeros((2, WIDTH), ">f4"), _out(2), TypeError, "format 'f'"),
    "int32 matrix": (np.zeros((2, WIDTH), np.int32), _out(2), TypeError, "format 'f'"),
    "bytes of the right size": (bytes(2 * WIDTH * 4), _out(2), TypeError, "format 'f'"),
    "a list": ([[0.0] * WIDTH] * 2, _out(2), TypeError, "bytes-like"),
    "strided matrix": (np.zeros((2, 2 * WIDTH), np.float32)[:, ::2], _out(2), ValueError, "contiguous"),
    "Fortran-order matrix": (
        np.asfortranarray(np.ones((2, WIDTH), np.float32)),
        _out(2),
        ValueError,
        "contiguous",
    ),
    "wider matrix": (np.zeros((2, WIDTH + 1), np.float32), _out(2), ValueError, "features"),
    "fewer out rows": (np.zeros((3, WIDTH), np.float32), _out(2), ValueError, "classes"),
    "more out rows": (np.zeros((3, WIDTH), np.float32), _out(4), ValueError, "classes"),
    "out of another width": (
        np.zeros((2, WIDTH), np.float32),
        np.empty((2, CLASSES + 1), np.float32),
        ValueError,
        "classes",
    ),
    "read-only out": (
        np.zeros((2, WIDTH), np.float32),
        np.broadcast_to(np.float32(0), (2, CLASSES)),
        ValueError,
        "read-only|contiguous|writable",
    ),
    "float64 out": (np.zeros((2, WIDTH), np.float32), np.empty((2, CLASSES)), TypeError, "format 'f'"),
}


@pytest.mark.parametrize("method", ["predict", "margins"])
@pytest.mark.parametrize("case", sorted(ODD_CALLS))
def test_the_c_trees_refuse_odd_matrices_with_a_clear_error(case: str, method: str) -> None:
    matrix, out, error, message = ODD_CALLS[case]
    _, native = _forest()
    with pytest.raises((error, BufferError), match=message):
        getattr(native, method)(matrix, out)


def test_the_c_trees_score_zero_rows_and_float_views_of_raw_memory() -> None:
    compiled, native = _forest()
    native.predict(np.zeros((0, WIDTH), np.float32), _out(0))
    rows = np.arange(2 * WIDTH, dtype=np.float32).reshape(2, WIDTH) - 5
    out = _out(2)
    native.margins(memoryview(bytearray(rows.tobytes())).cast("f"), out)  # any buffer of format 'f'
    assert np.array_equal(out, compiled.margins(rows))


def test_a_forest_cannot_be_initialised_twice_even_after_a_failed_first_try() -> None:
    from pipeline import _ctrees

    compiled, native = _forest()
    args = (
        compiled.features.astype(np.int32),
        compiled.thresholds,
        compiled.default_left.astype(np.int32),
        compiled.leaves,
        np.arange(CLASSES, dtype=np.int32),
        compiled.intercept,
        compiled.depth,
        WIDTH,
    )
    with pytest.raises(RuntimeError, match="already initialised"):
        native.__init__(*args)
    forest = _ctrees.Forest.__new__(_ctrees.Forest)
    with pytest.raises(ValueError, match="NaN threshold"):
        forest.__init__(*args[:1], np.full_like(compiled.thresholds, np.nan), *args[2:])  # type: ignore[misc]
    with pytest.raises(RuntimeError, match="already initialised"):
        forest.__init__(*args)  # type: ignore[misc]
    with pytest.raises(RuntimeError, match="not initialised"):
        forest.predict(np.zeros((1, WIDTH), np.float32), _out(1))


EXTREME = [0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, -1.0, 0.5]
FLOATS = st.one_of(st.sampled_from([*EXTREME, np.nan]), st.floats(width=32, allow_nan=True))


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(st.sampled_from(EXTREME), min_size=1, max_size=8),
    st.lists(st.lists(FLOATS, min_size=WIDTH, max_size=WIDTH), min_size=1, max_size=21),
)
def test_the_c_trees_pick_the_leaf_numpy_descends_to_at_extreme_values(
    depth: int, thresholds: list[float], rows: list[list[float]]
) -> None:
    """Infinite and signed-zero thresholds and values, subnormals and NaN reach the same leaves, with
    every scoring kernel (rows one at a time, blocks of 8 with padded tails, SIMD: 32-bit leaf sets up
    to depth 5, 64-bit at 6)."""
    from pipeline import _ctrees

    compiled, native = _forest(depth, thresholds)
    matrix = np.asarray(rows, dtype=np.float32)
    expected = compiled.margins(matrix)
    for kernel in _ctrees.kernels():
        previous = _ctrees.use_kernel(kernel)
        try:
            out = _out(len(rows))
            native.margins(matrix, out)
        finally:
            _ctrees.use_kernel(previous)
        assert np.array_equal(out, expected), kernel


# --- the same file again in a child with the debug allocator ----------------------------------------


@pytest.mark.skipif(os.environ.get(CHILD) == "1", reason="this is the child run")
def test_this_file_passes_again_under_the_debug_allocator_in_a_child() -> None:
    """Every in-process case above once more with PYTHONMALLOC=debug -X dev: a crash is reported here."""
    code = f"import sys, pytest; sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', {__file__!r}]))"
    out = isolated(code)
    assert " passed" in out and "failed" not in out


# --- helpers ----------------------------------------------------------------------------------------


class _path:
    """Context: the forest's C fold on (compiled) or off."""

    def __init__(self, compiled: bool) -> None:
        self.compiled, self.fold = compiled, tree._fold

    def __enter__(self) -> None:
        tree._fold = self.fold if self.compiled else None

    def __exit__(self, *exc: object) -> None:
        tree._fold = self.fold


def _dns(key: str, seq: int, ts: str) -> dict[str, Any]:
    return {
        "event_id": f"e{seq}",
        "device_id": "dev-h",
        "seq": seq,
        "ts": ts,
        "platform": "windows",
        "process_key": key,
        "payload": {"kind": "dns_query", "query": "x.example"},
    }


def _validated(raw: dict[str, Any]) -> tuple[Any, ...]:
    """The event as the worker decodes it, or nothing when validation refuses it."""
    try:
        return fastcodec.decode_events(orjson.dumps(raw))
    except ContractError:
        return ()


def _decoded(raw: dict[str, Any]) -> Any:
    (event,) = fastcodec.decode_events(orjson.dumps(raw))
    return event


def _started_forest() -> DeviceForest:
    forest = DeviceForest("dev-h", "windows")
    start = {
        **_dns("p", 1, "2026-05-01T00:00:00Z"),
        "payload": {"kind": "process_start", "image": "C:\\a.exe"},
    }
    forest.apply(_decoded(start))
    return forest


def _build(events: list[Any], limits: TreeLimits | None, compiled: bool, chunk: int) -> Any:
    """The forest and re-score queue after the events in chunks, or the error that stopped it."""
    forest, changed = DeviceForest("dev-h", "windows", limits), list[tuple[str, str, bool]]()
    with _path(compiled):
        try:
            for lo in range(0, len(events), chunk):
                assert forest.apply_run(events[lo : lo + chunk], 0, changed) == len(events[lo : lo + chunk])
        except Exception as exc:  # compared: both paths must fail the same way
            return repr(exc), snapshot(forest)
    return snapshot(forest), queued(changed)
