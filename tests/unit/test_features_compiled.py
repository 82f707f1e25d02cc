"""The C feature rows and row contexts (`pipeline._cfeatures`) are the numpy rows and Python contexts.

A model trained on numpy's matrices scores the stream's C matrices, so any difference -- a float
summed in another order, a count over another window, a bit of another indicator -- is a silent
model change; a row context must hold the same nodes (by identity) in the same order. Forests here
come from the generated streams the tree's C path is tested on (every event kind, placeholders,
floods, duplicates, small limits) and from real OTRF recordings; rows are taken for every node at
several windows, in one call and split across calls, with descendants shared between rows and one
node seen under two window starts. Inputs the numpy path refuses are refused by C too, with a typed
error; the extension's own hostile-input checks are in tests/unit/test_cfeatures_hostile.py.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from shared_data import shared_datasets
from test_tree_compiled import SMALL, fast, stream

from agents.sysmon import FileStats, load_events
from pipeline import features
from pipeline.detect import Detector, DetectorConfig
from pipeline.features import N_BASE_FEATURES, N_FEATURES, RowContext, feature_matrix, row_context
from pipeline.model.provisional import ProvisionalRules
from pipeline.training.rows import replay_rows
from pipeline.training.simulate import (
    SimConfig,
    benign_workloads,
    simulate_attack,
    simulate_benign,
    techniques,
)
from pipeline.tree import DeviceForest, ProcessNode, TreeLimits
from schemas.events import Platform

NOT_BUILT = "pipeline._cfeatures is not built: `pip install -e .` or `setup.py build_ext --inplace` (gcc)"
WINDOWS = (1, 60_000, 300_000, 10**12)  # one ms, a minute, the default, everything


def numpy_matrix(contexts: Sequence[RowContext]) -> NDArray[np.float32]:
    matrix = np.zeros((len(contexts), N_FEATURES), dtype=np.float32)
    if contexts:
        features._numpy_rows(matrix, contexts)
    return matrix


def c_matrix(contexts: Sequence[RowContext]) -> NDArray[np.float32]:
    assert features._compiled_rows is not None, NOT_BUILT
    return feature_matrix(contexts)


def assert_same_bytes(contexts: Sequence[RowContext]) -> NDArray[np.float32]:
    expected, got = numpy_matrix(contexts), c_matrix(contexts)
    if expected.tobytes() != got.tobytes():
        row, col = (int(i[0]) for i in np.nonzero(expected != got))
        name = features.FEATURE_NAMES[col]
        pytest.fail(
            f"row {row} ({contexts[row].node.key}) {name}: numpy {expected[row, col]} C {got[row, col]}"
        )
    return got


def forest_of(events: Sequence[Any], limits: TreeLimits | None) -> DeviceForest:
    config = DetectorConfig() if limits is None else DetectorConfig(limits=limits)
    detector = Detector(ProvisionalRules(), config=config)
    detector.ingest(events, 0)
    (forest,) = detector.forests.values()
    return forest


def every_row(forests: Sequence[DeviceForest], window_ms: int) -> list[RowContext]:
    return [row_context(f, key, window_ms) for f in forests for key in sorted(f.nodes)]


def assert_same_contexts(forests: Sequence[DeviceForest], window_ms: int) -> None:
    compiled = features._compiled_context
    assert compiled is not None, NOT_BUILT
    for forest in forests:
        for key in forest.nodes:
            got = row_context(forest, key, window_ms)
            features._compiled_context = None
            try:
                expected = row_context(forest, key, window_ms)
            finally:
                features._compiled_context = compiled
            assert type(got) is RowContext and got == expected, key  # nodes compare by identity
    rows = [(forest, node) for forest in forests for node in forest.nodes.values()]
    got_all = features.row_contexts(rows, window_ms)  # a flush's contexts in one C call
    saved = features._compiled_contexts, features._compiled_context
    features._compiled_contexts = features._compiled_context = None
    try:
        expected_all = features.row_contexts(rows, window_ms)
    finally:
        features._compiled_contexts, features._compiled_context = saved
    assert all(type(c) is RowContext for c in got_all) and got_all == expected_all


@pytest.mark.parametrize("limits", [None, SMALL, TreeLimits(max_nodes=16, max_depth=2)])
@pytest.mark.parametrize("seed", range(10))
def test_generated_forests_give_the_same_bytes_at_every_window(seed: int, limits: TreeLimits | None) -> None:
    events = stream(seed, n=400)
    forest = forest_of(fast(events) if seed % 2 else events, limits)
    for window in WINDOWS:
        assert_same_contexts([forest], window)
        contexts = every_row([forest], window)
        whole = assert_same_bytes(contexts)
        cut = 1 + seed % 5  # the same rows in several calls: per-call tables change nothing
        parts = [c_matrix(contexts[lo : lo + cut]) for lo in range(0, len(contexts), cut)]
        assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_the_generated_forests_reach_what_the_rows_read() -> None:
    forest = forest_of(stream(4, n=400), None)
    matrix = assert_same_bytes(every_row([forest], 10**12))
    at = features.FEATURE_NAMES.index
    for name in ("parent_unknown", "desc_distinct_images", "own_distinct_dst_ip", "own_distinct_dst_port",
                 "sub_distinct_dst_ip", "desc_user_writable", "anc_credential_tool", "depth", "exited",
                 "lifetime_log", "sub_net_connect", "pair_shell_chain", "subtree_depth",
                 "gparent_shell", "desc_shell", "desc_credential_tool", "tree_ind_count"):  # fmt: skip
        assert matrix[:, at(name)].max() > 0, name
    assert matrix[:, at("parent_unknown")].min() == 0


def test_rows_of_several_forests_with_shared_and_repeated_nodes() -> None:
    forests = [forest_of(stream(seed, n=300, device=f"d{seed}"), None) for seed in range(3)]
    contexts = every_row(forests, 300_000)
    rng = random.Random(1)
    mixed = contexts + rng.sample(contexts, 40) + every_row(forests[:1], 60_000)  # a node, two starts
    rng.shuffle(mixed)
    assert_same_bytes(mixed)


def test_rows_of_otrf_recordings() -> None:
    root = shared_datasets("otrf")
    forests: list[DeviceForest] = []
    for relative in ("defense_evasion/cmd_mshta_vbscript_execute_psh.jsonl.gz",
                     "credential_access/empire_mimikatz_lsadump_patch.jsonl.gz"):  # fmt: skip
        events = sorted(load_events(root / relative, stats=FileStats()), key=lambda e: e.ts)
        detector = Detector(ProvisionalRules())
        detector.ingest(events, 0)
        forests += detector.forests.values()
    assert sum(len(f) for f in forests) > 60
    for window in WINDOWS:
        assert_same_contexts(forests, window)
        matrix = assert_same_bytes(every_row(forests, window))
        assert matrix.any()


def test_feature_matrix_without_the_extension_is_the_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    contexts = every_row([forest_of(stream(7), None)], 300_000)
    compiled = c_matrix(contexts)
    monkeypatch.setattr(features, "_compiled_rows", None)
    assert feature_matrix(contexts).tobytes() == compiled.tobytes()
    assert feature_matrix([]).shape == (0, N_FEATURES)


def test_the_c_path_is_used_when_built() -> None:
    contexts = every_row([forest_of(stream(2), None)], 300_000)[:3]
    assert features._compiled_rows is not None, NOT_BUILT
    with pytest.raises(ValueError, match="layout"):
        features._compiled_rows(
            contexts, np.zeros((3, N_FEATURES), np.float32), features.static_facts, (1, 2), ProcessNode
        )


def _broken(contexts: list[RowContext], **changes: object) -> list[RowContext]:
    node = contexts[0].node
    for name, value in changes.items():
        setattr(node, name, value)
    return contexts


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"evidence": ["not a packed record"]}, (TypeError, ValueError)),  # numpy: ValueError, C: TypeError
        ({"evidence": [1 << 70]}, OverflowError),
        ({"conns": [(1, "10.0.0.1")]}, ValueError),
        ({"cmd_mask": -1}, OverflowError),
        ({"cmd_mask": 1 << 64}, OverflowError),
    ],
)
def test_values_numpy_refuses_are_refused_by_c_with_a_typed_error(
    changes: dict[str, object], error: type[Exception] | tuple[type[Exception], ...]
) -> None:
    for matrix_of in (numpy_matrix, c_matrix):
        contexts = _broken(every_row([forest_of(stream(1), None)], 10**12)[:1], **changes)
        with pytest.raises(error):
            matrix_of(contexts)


def test_an_image_class_outside_the_catalogue_is_an_error_not_another_column() -> None:
    contexts = every_row([forest_of(stream(1), None)], 10**12)[:1]
    contexts[0].node.image_cls = 99  # type: ignore[assignment]
    with pytest.raises(ValueError, match="image class 99"):
        c_matrix(contexts)


def test_contexts_built_by_hand_read_as_numpy_reads_them() -> None:
    """Contexts built by hand (hunting, tests): lists instead of tuples, a forest deeper than its limit."""
    forest = forest_of(stream(5, n=400), TreeLimits(max_depth=2))
    contexts = [c._replace(ancestors=list(c.ancestors), descendants=list(c.descendants))  # type: ignore[arg-type]
                for c in every_row([forest], 300_000)]  # fmt: skip
    assert_same_bytes(contexts)


def test_a_context_of_a_key_the_forest_does_not_hold_is_a_key_error_either_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forest = forest_of(stream(3), None)
    with pytest.raises(KeyError):
        row_context(forest, "no such process")
    monkeypatch.setattr(features, "_compiled_context", None)
    with pytest.raises(KeyError):
        row_context(forest, "no such process")


@pytest.mark.parametrize("depth", [0, 1, 15, 16, 17, 40])
def test_ancestor_walks_short_and_long_are_the_forests_own(depth: int) -> None:
    """Walks of up to 16 ancestors fill their tuple from an array, longer ones through a list."""
    contexts = features._compiled_contexts
    assert contexts is not None, NOT_BUILT
    forest = forest_of(stream(0, n=10), TreeLimits(max_depth=64))
    root = forest.nodes["root"]
    for i in range(30):  # a chain of 30 below the root
        parent = "root" if i == 0 else f"c{i - 1}"
        forest.nodes[f"c{i}"] = type(root)(
            f"c{i}", image="a.exe", parent_key=parent, last_ms=forest.watermark_ms
        )
        forest.nodes[parent].children.append(f"c{i}")
    rows = [(forest, forest.nodes[k]) for k in ("c29", "c3", "root")]
    for row_type in (RowContext, tuple):
        built = contexts(rows, 300_000, row_type, depth, 256)
        assert [type(c) for c in built] == [row_type] * 3
        for (f, node), context in zip(rows, built, strict=True):
            assert list(context[2]) == f.ancestors(node.key, depth)


def test_wide_trees_are_cut_at_max_descendants_and_deep_ones_at_max_depth() -> None:
    forest = forest_of(stream(0, n=10), TreeLimits(max_depth=5))
    root = forest.nodes["root"]
    for i in range(features.MAX_DESCENDANTS + 40):  # a wide level, then a chain deeper than max_depth
        forest.nodes[f"w{i}"] = type(root)(
            f"w{i}", image="a.exe", parent_key="root", last_ms=forest.watermark_ms
        )
        root.children.append(f"w{i}")
    for i in range(8):
        parent = "w0" if i == 0 else f"c{i - 1}"
        forest.nodes[f"c{i}"] = type(root)(f"c{i}", parent_key=parent, last_ms=forest.watermark_ms)
        forest.nodes[parent].children.append(f"c{i}")
    root.children.append("w1")  # a key listed twice
    forest.nodes["c7"].children.append("root")  # a cycle
    context = row_context(forest, "root")
    assert len(context.descendants) == features.MAX_DESCENDANTS
    assert max(row_context(forest, "w0").depths) == 4  # levels 1..max_depth-1
    assert_same_contexts([forest], 300_000)
    assert_same_bytes(every_row([forest], 300_000))


def test_training_rows_of_simulated_trees_are_the_same_with_the_extension_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training computes its rows with the same functions: the matrices H1's model learns from do not
    depend on whether the machine that built them had gcc."""
    config = SimConfig()
    trees = [simulate_attack(tech, 0, config) for tech in techniques()[::7]]
    for platform in (Platform.WINDOWS, Platform.LINUX):
        trees += [
            simulate_benign(platform, name, fn, 1, config) for name, _, fn in benign_workloads(platform)[:3]
        ]
    blocks = [replay_rows(t.events, t.node_labels, t.tree_id, chunk_events=8) for t in trees]
    monkeypatch.setattr(features, "_compiled_rows", None)
    monkeypatch.setattr(features, "_compiled_context", None)
    for tree, block in zip(trees, blocks, strict=True):
        again = replay_rows(tree.events, tree.node_labels, tree.tree_id, chunk_events=8)
        assert again.matrix.tobytes() == block.matrix.tobytes() and again.labels == block.labels, tree.tree_id
    assert sum(len(b) for b in blocks) > 50


def test_the_c_layout_names_every_feature_column_exactly_once() -> None:
    """A column added to the numpy path only would be left zero by C: the layout must cover the list
    up to 1.1's lone-command columns, which both paths fill with the same Python (`_fill_lone`)."""
    layout = list(features._C_LAYOUT)
    n_features, n_cls, n_ind, n_cnt = layout[:4]
    img, parent, gparent, unknown = layout[7:11]
    pairs, rest = layout[11:35:3], layout[35:]
    singles = [*rest[:16], *rest[16:23], rest[23], rest[24], *rest[25:31:2]]  # static, process, desc
    self_ind, desc_ind, anc_ind, self_count, tree_count, own, sub, *distinct = rest[31:]
    columns = [*pairs, *singles, unknown, self_count, tree_count, *distinct]
    blocks = [(img, n_cls), (parent, n_cls), (gparent, n_cls), (self_ind, n_ind), (desc_ind, n_ind)]
    for first, width in [*blocks, (anc_ind, n_ind), (own, n_cnt), (sub, n_cnt)]:
        columns += range(first, first + width)
    assert n_features == N_FEATURES and sorted(columns) == list(range(N_BASE_FEATURES))
    lone = [i for i, name in enumerate(features.FEATURE_NAMES) if name.startswith("lone_")]
    assert lone == list(range(N_BASE_FEATURES, N_FEATURES))
