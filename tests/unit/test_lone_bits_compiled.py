"""The lone-command columns in C (`pipeline._cfeatures.lone_bits`) are `features._fill_lone`'s bytes.

Both boosters read these columns: the lone booster is chosen by them (`pipeline.model.routed.lone_rows`),
so a bit set in one path and not the other silently sends a row to the other booster. Rows here come
from the hand-written probes (every lone indicator the probes show, under seen and unseen parents,
with the commands as ancestors of each other) and the simulated lone-view trees; hostile command lines
(not a str, empty, longer than the cache takes, a flood of distinct lines) give what `_fill_lone` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from pipeline import features
from pipeline.detect import Detector
from pipeline.eventkit import EventKit
from pipeline.features import N_BASE_FEATURES, N_FEATURES, RowContext, feature_matrix, row_context
from pipeline.indicators import LONE_CACHED_CHARS, lone_mask
from pipeline.model.provisional import ProvisionalRules
from pipeline.training.probes import ATTACK_PROBES, BENIGN_PROBES, probe_events
from pipeline.tree import DeviceForest

NOT_BUILT = "pipeline._cfeatures is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
WINDOW_MS = 300_000
# what `feature_matrix` hands `lone_bits`
LONE_C = (lone_mask, features._LONE_SEEN, LONE_CACHED_CHARS, features._LONE_SEEN_MAX, features._LONE,
          features._LONE_ANC, features._N_LONE, True)  # fmt: skip


def python_bits(contexts: Sequence[RowContext]) -> np.ndarray[Any, np.dtype[np.float32]]:
    matrix = np.zeros((len(contexts), N_FEATURES), dtype=np.float32)
    features._fill_lone(matrix, contexts)
    return matrix


def c_bits(contexts: Sequence[RowContext]) -> np.ndarray[Any, np.dtype[np.float32]]:
    assert features._compiled_lone is not None, NOT_BUILT
    matrix = np.zeros((len(contexts), N_FEATURES), dtype=np.float32)
    features._compiled_lone(contexts, matrix, LONE_C)
    return matrix


def forest_of(events: Sequence[Any]) -> DeviceForest:
    detector = Detector(ProvisionalRules())
    detector.ingest(events, 0)
    (forest,) = detector.forests.values()
    return forest


def contexts_of(forest: DeviceForest) -> list[RowContext]:
    return [row_context(forest, key, WINDOW_MS) for key in sorted(forest.nodes)]


def chained(lines: Sequence[tuple[str, str]], device: str = "chain-host") -> list[Any]:
    """Each command the child of the one before: every row has ancestors with lone indicators."""
    kit = EventKit(device, step_ms=1000)
    events, parent = [], "unseen-parent"
    for i, (image, line) in enumerate(lines, 1):
        events.append(kit.start(f"c{i}", image, line, parent=parent))
        parent = f"c{i}"
    return events


def probe_contexts() -> list[RowContext]:
    contexts: list[RowContext] = []
    for i, probe in enumerate(ATTACK_PROBES + BENIGN_PROBES):
        contexts += contexts_of(forest_of(probe_events(probe, device=f"probe-{i}")))
    commands = [command for probe in ATTACK_PROBES for command in probe.commands]
    for lo in range(0, len(commands), 5):
        contexts += contexts_of(forest_of(chained(commands[lo : lo + 5], device=f"chain-{lo}")))
    return contexts


def test_probe_rows_give_the_same_bytes_and_reach_own_and_ancestor_bits() -> None:
    contexts = probe_contexts()
    expected, got = python_bits(contexts), c_bits(contexts)
    assert got.tobytes() == expected.tobytes()
    lone_columns = got[:, N_BASE_FEATURES:]
    own = got[:, features._LONE : features._LONE + features._N_LONE]
    anc = got[:, features._LONE_ANC : features._LONE_ANC + features._N_LONE]
    assert own.any() and anc.any() and (lone_columns.sum(axis=0) > 0).sum() >= 10
    assert not got[:, :N_BASE_FEATURES].any()  # only its own columns are written


def test_feature_matrix_with_and_without_the_c_bits_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    contexts = probe_contexts()
    compiled = feature_matrix(contexts)
    monkeypatch.setattr(features, "_compiled_lone", None)
    assert feature_matrix(contexts).tobytes() == compiled.tobytes()
    assert compiled[:, N_BASE_FEATURES:].any()


def test_simulated_lone_view_rows_give_the_same_bytes() -> None:
    from itertools import islice

    from pipeline.training.simulate import SimConfig, lone_view_corpus

    config = SimConfig(seed=3, lone_view_attacks_per_technique=1, lone_view_benign_trees=40)
    contexts: list[RowContext] = []
    for tree in islice(lone_view_corpus(config), 150):
        contexts += contexts_of(forest_of(tree.events))
    got = c_bits(contexts)
    assert got.tobytes() == python_bits(contexts).tobytes() and got.any()


def _one_context(line: object) -> list[RowContext]:
    contexts = contexts_of(forest_of(chained([("C:\\Windows\\System32\\net.exe", "net user x /add")])))
    contexts[0].node.command_line = line  # type: ignore[assignment]
    return contexts


ODD_LINES = [
    "",
    "net share data=C:\\ /grant:everyone,full",
    "x" * (LONE_CACHED_CHARS + 1),
    "auditpol /clear /y " + "a" * LONE_CACHED_CHARS,
    None,
]


@pytest.mark.parametrize("line", ODD_LINES)
def test_empty_long_and_missing_lines_read_as_lone_mask_reads_them(line: object) -> None:
    contexts = _one_context(line)
    assert c_bits(contexts).tobytes() == python_bits(contexts).tobytes()


@pytest.mark.parametrize("line", [b"net user x /add", 42])
def test_a_command_line_lone_mask_refuses_is_refused_by_c_with_its_error(line: object) -> None:
    contexts = _one_context(line)
    with pytest.raises(TypeError):
        python_bits(contexts)
    with pytest.raises(TypeError):
        c_bits(contexts)


def test_lines_longer_than_the_cache_takes_stay_out_of_the_shared_cache() -> None:
    """A long line's mask is kept on its own node only (evicted with it), never in the cache every
    device shares: a hostile device cannot pin megabytes there."""
    long_line = "wevtutil cl Security " + "y" * LONE_CACHED_CHARS
    contexts = _one_context(long_line)
    feature_matrix(contexts)
    assert long_line not in features._LONE_SEEN
    assert contexts[0].node.lone == (long_line, lone_mask(long_line))
    short = "wevtutil cl System"
    feature_matrix(_one_context(short))
    assert features._LONE_SEEN[short] == lone_mask(short)


def test_a_line_longer_than_the_cache_takes_is_read_once_per_process() -> None:
    """An attack's long launcher line (an encoded PowerShell stager is ~5,000 characters) is an ancestor of
    every row of its subtree, at every flush: it is read once per process, remembered on its node, and
    read again only when the node's line is another. Without `remember`, every call reads it."""
    launcher = "powershell.exe -noP -sta -w 1 -enc " + "SQBFAFgA" * (LONE_CACHED_CHARS // 8 + 1)
    contexts = contexts_of(forest_of(chained([
        (r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe", launcher),
        (r"C:\Windows\System32\net.exe", "net user x /add"),
        (r"C:\Windows\System32\wevtutil.exe", "wevtutil cl Security"),
    ])))  # fmt: skip
    read: list[str] = []

    def counted(text: str) -> int:
        read.append(text)
        return lone_mask(text)

    parts = list(LONE_C)
    parts[0], parts[1] = counted, {}
    assert features._compiled_lone is not None, NOT_BUILT
    for _ in range(5):
        matrix = np.zeros((len(contexts), N_FEATURES), dtype=np.float32)
        features._compiled_lone(contexts, matrix, tuple(parts))
        assert matrix.tobytes() == python_bits(contexts).tobytes()
    assert read.count(launcher) == 1 and len(read) == 3  # the two short lines: once each, in `seen`
    (root,) = [c.node for c in contexts if c.node.command_line == launcher]
    assert root.lone == (launcher, lone_mask(launcher))
    root.command_line = launcher.replace("-sta", "-mta")  # another line: read afresh, bits follow it
    features._compiled_lone(contexts, np.zeros((len(contexts), N_FEATURES), np.float32), tuple(parts))
    line = root.command_line
    assert read.count(line) == 1 and root.lone == (line, lone_mask(line))
    read.clear()
    parts[7] = False
    for _ in range(3):
        features._compiled_lone(contexts, np.zeros((len(contexts), N_FEATURES), np.float32), tuple(parts))
    reading = [c for c in contexts if c.node is root or root in c.ancestors]  # its row, its descendants'
    assert len(reading) == 3 and read.count(root.command_line) == 3 * len(reading)


def test_another_mask_function_is_not_answered_from_the_remembered_masks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contexts = _one_context("net share data=C:\\ /grant:everyone,full")
    assert feature_matrix(contexts)[:, N_BASE_FEATURES:].any()  # remembered now
    monkeypatch.setattr(features, "lone_mask", lambda text: 0)
    assert not feature_matrix(contexts)[:, N_BASE_FEATURES:].any()


def test_a_flood_of_distinct_lines_keeps_the_remembered_masks_bounded() -> None:
    contexts = _one_context("")
    node = contexts[0].node
    for i in range(features._LONE_SEEN_MAX + 50):
        node.command_line = f"net share s{i}=C:\\ /grant:everyone,full"
        assert c_bits(contexts).tobytes() == python_bits(contexts).tobytes() or i % 1000 != 0
    assert 0 < len(features._LONE_SEEN) <= features._LONE_SEEN_MAX


def test_a_mask_function_that_breaks_its_contract_is_an_error_not_a_guess() -> None:
    contexts = _one_context("net user y /add")
    matrix = np.zeros((len(contexts), N_FEATURES), dtype=np.float32)
    seen: dict[str, int] = {}
    parts = list(LONE_C)
    assert features._compiled_lone is not None, NOT_BUILT
    for bad, error in ((lambda text: "3", TypeError), (lambda text: -1, OverflowError),
                       (lambda text: 1 << 64, OverflowError)):  # fmt: skip
        parts[0], parts[1] = bad, seen
        with pytest.raises(error):
            features._compiled_lone(contexts, matrix, tuple(parts))
    assert not matrix.any() and not seen
    with pytest.raises(ValueError, match="lone_bits"):
        features._compiled_lone(contexts, np.zeros((len(contexts) + 1, N_FEATURES), np.float32), LONE_C)
    with pytest.raises(TypeError, match="lone_bits"):
        features._compiled_lone(contexts, matrix, LONE_C[:7])


def test_the_remembered_and_the_computed_masks_hold_no_reference_they_should_not() -> None:
    """A cache hit and a miss each read the command line and the mask once and let both go: a
    reference kept per call would grow with every row the stream ever scores."""
    import sys

    contexts = _one_context("")
    node = contexts[0].node
    hit, miss = "net share kept=C:\\ /grant:everyone,full", "net share fresh=C:\\ /grant:everyone,full"
    node.command_line = hit
    c_bits(contexts)  # now remembered
    before = sys.getrefcount(hit), sys.getrefcount(features._LONE_SEEN[hit])
    for _ in range(1000):
        c_bits(contexts)
    assert (sys.getrefcount(hit), sys.getrefcount(features._LONE_SEEN[hit])) == before
    node.command_line = miss
    features._LONE_SEEN.clear()
    c_bits(contexts)
    mask = lone_mask(miss)  # the int object its cache hands out every time
    assert mask != 0
    kept = sys.getrefcount(miss), sys.getrefcount(mask)
    for _ in range(1000):
        features._LONE_SEEN.clear()  # a miss every time: `lone_mask` is called and its answer stored
        c_bits(contexts)
    features._LONE_SEEN.clear()
    c_bits(contexts)
    assert (sys.getrefcount(miss), sys.getrefcount(mask)) == kept


def test_a_refused_matrix_is_a_clear_error_that_keeps_no_reference() -> None:
    """`rows` and `lone_bits` refuse a matrix that is not writable float32 in C order with one row per
    context; the contexts they copied and the buffer they took are let go on that path too (counted
    after a first round, so that an error kept from the last call does not count, then after 1,000 more)."""
    import sys

    from pipeline.features import _C_LAYOUT, static_facts
    from pipeline.tree import ProcessNode

    contexts = probe_contexts()[:3]
    rows = features._compiled_rows
    assert rows is not None and features._compiled_lone is not None, NOT_BUILT
    shape = (3, N_FEATURES)
    readonly = np.zeros(shape, np.float32)
    readonly.flags.writeable = False
    fortran, strided = np.asfortranarray(np.zeros(shape, np.float32)), np.zeros(shape, np.float32)[:, ::2]
    bad = [np.zeros(shape, np.float64), np.zeros((2, N_FEATURES), np.float32), strided, fortran, readonly]
    calls = [lambda m: features._compiled_lone(contexts, m, LONE_C),
             lambda m: rows(contexts, m, static_facts, _C_LAYOUT, ProcessNode)]  # fmt: skip

    def refuse_all(times: int) -> list[int]:
        for call in calls:
            for matrix in bad:
                for _ in range(times):
                    with pytest.raises((ValueError, BufferError)):
                        call(matrix)
        return [sys.getrefcount(c) for c in contexts] + [sys.getrefcount(m) for m in bad]

    assert refuse_all(10) == refuse_all(1000)
    with pytest.raises(ValueError, match="rows: matrix must be float32"):
        rows(contexts, np.zeros((3, N_FEATURES + 1), np.float32), static_facts, _C_LAYOUT, ProcessNode)
