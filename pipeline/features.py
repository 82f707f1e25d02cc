"""The feature vector of a process in the context of its ancestors and its window-active descendants.

One list, one version, shared by the stream, training and offline hunting (`FEATURE_NAMES`,
`FEATURE_DOCS`, `FEATURE_VERSION`, defined in `pipeline.feature_catalogue` and re-exported here;
`pipeline/FEATURES.md` is rendered from them and a test keeps it in sync). Features describe
*behaviour and roles*, so they carry across labs and fleets: image classes instead of names,
directory classes instead of paths, command-line indicators instead of strings, counts of
behaviour in the window. Host, user and domain names, Sysmon rule names and absolute paths never
enter a feature (command-line statistics are taken after `lexicon.anonymise`).

`feature_matrix` computes many rows at once. When the optional C extension `pipeline._cfeatures` is
built (setup.py) it fills the rows in C, reading every involved node once; otherwise `_numpy_rows`
does: evidence of every involved node is counted in one vectorised pass
(`pipeline.windows.count_windows`), subtrees are summed with one `reduceat`, and indicator masks are
unpacked to bits in one shift. Both fill the same bytes (tests/unit/test_features_compiled.py); what a
row is made of is defined here once and handed to C as `_C_LAYOUT`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from pipeline.behaviour import Counter
from pipeline.feature_catalogue import (
    ANCESTOR_DEPTH,
    FEATURE_DOCS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    N_BASE_FEATURES,
    N_FEATURES,
    feature_index,
    render_markdown,
)
from pipeline.indicators import INDICATORS, LONE_CACHED_CHARS, LONE_INDICATORS, lone_mask
from pipeline.lexicon import ImageClass
from pipeline.process_facts import command_line_stats, static_facts
from pipeline.tree import DeviceForest, ProcessNode
from pipeline.windows import DEFAULT_WINDOW_MS, count_windows, sliding_start

_compiled_rows: Callable[..., Any] | None
_compiled_lone: Callable[..., Any] | None
_compiled_context: Callable[..., RowContext] | None
_compiled_contexts: Callable[..., list[RowContext]] | None
try:  # rows and contexts in C (pipeline/_cfeatures.c); optional: without it Python and numpy compute the same
    from pipeline._cfeatures import context as _compiled_context
    from pipeline._cfeatures import contexts as _compiled_contexts
    from pipeline._cfeatures import lone_bits as _compiled_lone
    from pipeline._cfeatures import rows as _compiled_rows
except ImportError:  # pragma: no cover - depends on the build
    _compiled_rows = _compiled_lone = _compiled_context = _compiled_contexts = None

__all__ = [
    "ANCESTOR_DEPTH", "FEATURE_DOCS", "FEATURE_NAMES", "FEATURE_VERSION", "MAX_DESCENDANTS",
    "N_BASE_FEATURES", "N_FEATURES",
    "RowContext", "command_line_stats", "feature_index", "feature_matrix", "features_for", "render_markdown",
    "row_context", "row_contexts", "static_facts",
]  # fmt: skip
MAX_DESCENDANTS = 256  # descendants per row (breadth first) counted into subtree features
_N_CLS = len(ImageClass)
_N_IND = len(INDICATORS)
_N_CNT = len(Counter)
_SHELLISH = frozenset({ImageClass.SHELL, ImageClass.SCRIPT_HOST})
_TOOLISH = _SHELLISH | {ImageClass.LOLBIN, ImageClass.ADMIN_TOOL}


_AT = {name: i for i, name in enumerate(FEATURE_NAMES)}
_IMG, _PARENT, _GPARENT = _AT["img_other"], _AT["parent_other"], _AT["gparent_other"]
_SELF_IND, _DESC_IND, _ANC_IND = (_AT[f"{p}_{INDICATORS[0].name}"] for p in ("self", "desc", "anc"))
_OWN, _SUB = _AT["own_child_spawn"], _AT["sub_child_spawn"]


class RowContext(NamedTuple):
    """The nodes one row is computed from (a NamedTuple: built once per scored row, and a frozen
    dataclass's __init__ cost three times as much)."""

    forest: DeviceForest
    node: ProcessNode
    ancestors: tuple[ProcessNode, ...]
    descendants: tuple[ProcessNode, ...]
    depths: tuple[int, ...]  # level below `node` of each descendant (1 = child)
    window_start_ms: int


def row_context(forest: DeviceForest, key: str, window_ms: int = DEFAULT_WINDOW_MS) -> RowContext:
    """Gather the ancestors and window-active descendants of `key` (which must be in the forest)."""
    if _compiled_context is not None:
        return _compiled_context(forest, key, window_ms, RowContext, ANCESTOR_DEPTH, MAX_DESCENDANTS)
    start = sliding_start(forest.watermark_ms, window_ms)
    node = forest.nodes[key]
    desc, depths = _descendants_with_depth(forest, node, start)
    return RowContext(forest, node, tuple(forest.ancestors(key, ANCESTOR_DEPTH)), desc, depths, start)


def row_contexts(
    rows: Sequence[tuple[DeviceForest, ProcessNode]], window_ms: int = DEFAULT_WINDOW_MS
) -> list[RowContext]:
    """`row_context` of every (forest, node) row of a flush, in order (one C call when it is built)."""
    if _compiled_contexts is not None:
        return _compiled_contexts(rows, window_ms, RowContext, ANCESTOR_DEPTH, MAX_DESCENDANTS)
    return [row_context(forest, node.key, window_ms) for forest, node in rows]


def _descendants_with_depth(
    forest: DeviceForest, node: ProcessNode, start_ms: int
) -> tuple[tuple[ProcessNode, ...], tuple[int, ...]]:
    if not node.children:  # most rows are leaves
        return (), ()
    found: list[ProcessNode] = []
    depths: list[int] = []
    level, seen = [node], {node.key}
    for depth in range(1, forest.limits.max_depth):
        level = [c for n in level for k in n.children if k not in seen and (c := forest.nodes.get(k))]
        if not level or len(found) >= MAX_DESCENDANTS:
            break
        seen.update(n.key for n in level)
        active = [n for n in level if n.last_ms >= start_ms][: MAX_DESCENDANTS - len(found)]
        found += active
        depths += [depth] * len(active)
    return tuple(found), tuple(depths)


def feature_matrix(contexts: Sequence[RowContext]) -> NDArray[np.float32]:
    """One float32 row per context, columns in FEATURE_NAMES order."""
    matrix = np.zeros((len(contexts), N_FEATURES), dtype=np.float32)
    if not contexts:
        return matrix
    if _compiled_rows is not None:
        _compiled_rows(contexts, matrix, static_facts, _C_LAYOUT, ProcessNode)
    else:
        _numpy_rows(matrix, contexts)
    if _compiled_lone is not None:
        mask = lone_mask  # the remembered masks are `indicators.lone_mask`'s: another function starts afresh
        remember = mask is _REMEMBERED
        seen = _LONE_SEEN if remember else {}
        lone = (mask, seen, LONE_CACHED_CHARS, _LONE_SEEN_MAX, _LONE, _LONE_ANC, _N_LONE, remember)
        _compiled_lone(contexts, matrix, lone)
    else:
        _fill_lone(matrix, contexts)
    return matrix


_N_LONE = len(LONE_INDICATORS)
_LONE, _LONE_ANC = _AT[f"lone_{LONE_INDICATORS[0].name}"], _AT[f"lone_anc_{LONE_INDICATORS[0].name}"]
_LONE_SHIFTS = np.arange(_N_LONE, dtype=np.uint64)
# What `_cfeatures.lone_bits` remembers: `lone_mask` of command lines up to LONE_CACHED_CHARS characters,
# at most _LONE_SEEN_MAX of them (then it starts afresh); of a longer line, on its node (`ProcessNode.lone`,
# with the line it read), so that it is read once per process
_LONE_SEEN: dict[str, int] = {}
_LONE_SEEN_MAX = 4096
_REMEMBERED = lone_mask


def _fill_lone(matrix: NDArray[np.float32], contexts: Sequence[RowContext]) -> None:
    """The lone-command indicator bits (1.1, 1.2) of each row's own command line and its nearest
    ancestors' (`lone_mask`, cached per command line); rows whose process and ancestors match none stay
    zero. `_cfeatures.lone_bits` writes the same bytes without a Python loop per row (0.47-0.52 ->
    0.18-0.27 us per row on the pipeline benchmark's rows: BENCHMARKS.md, "Session W")."""
    masks = np.zeros((len(contexts), 2), dtype=np.uint64)
    any_set = False
    for row, ctx in enumerate(contexts):
        own = lone_mask(ctx.node.command_line)
        anc = 0
        for a in ctx.ancestors:
            anc |= lone_mask(a.command_line)
        if own or anc:
            masks[row] = own, anc
            any_set = True
    if any_set:
        bits = (masks[:, :, None] >> _LONE_SHIFTS) & np.uint64(1)
        matrix[:, _LONE : _LONE + _N_LONE] = bits[:, 0, :]
        matrix[:, _LONE_ANC : _LONE_ANC + _N_LONE] = bits[:, 1, :]


def _numpy_rows(matrix: NDArray[np.float32], contexts: Sequence[RowContext]) -> None:
    """Fill the zeroed `matrix` with numpy, many rows per call (the path without the C extension)."""
    table = _Table.of(contexts)
    _fill_classes(matrix, contexts, table)
    _fill_process(matrix, contexts, table)
    _fill_subtree(matrix, table)
    _fill_indicators(matrix, contexts, table)
    _fill_counters(matrix, contexts, table)


def features_for(
    forest: DeviceForest, keys: Sequence[str], window_ms: int = DEFAULT_WINDOW_MS
) -> NDArray[np.float32]:
    """Convenience for training and hunting: rows for `keys` of one forest."""
    return feature_matrix([row_context(forest, key, window_ms) for key in keys])


@dataclass(slots=True)
class _Table:
    """Every node the rows need, once per window start, as arrays; and which are each row's descendants."""

    nodes: list[ProcessNode]
    starts: NDArray[np.int64]  # window start per node (its forest's)
    own: NDArray[np.int64]  # row -> position of the row's process
    desc: NDArray[np.int64]  # positions of all rows' descendants, row by row
    desc_row: NDArray[np.int64]  # row of each entry in `desc`
    desc_sizes: NDArray[np.int64]  # descendants per row
    cls: NDArray[np.int64]  # image class per node
    static: NDArray[np.float32]  # static_facts per node

    @classmethod
    def of(cls, contexts: Sequence[RowContext]) -> _Table:
        index: dict[tuple[int, int], int] = {}  # (id(node), window start) -> position
        nodes: list[ProcessNode] = []
        starts: list[int] = []
        own: list[int] = []
        desc: list[int] = []
        groups = ((own, [(c.node,) for c in contexts]), (desc, [c.descendants for c in contexts]))
        for positions, members in groups:
            for context, group in zip(contexts, members, strict=True):
                for node in group:
                    at = (id(node), context.window_start_ms)
                    pos = index.get(at)
                    if pos is None:
                        pos = index[at] = len(nodes)
                        nodes.append(node)
                        starts.append(context.window_start_ms)
                    positions.append(pos)
        sizes = np.fromiter((len(c.descendants) for c in contexts), dtype=np.int64, count=len(contexts))
        return cls(
            nodes,
            np.array(starts, dtype=np.int64),
            np.array(own, dtype=np.int64),
            np.array(desc, dtype=np.int64),
            np.repeat(np.arange(len(contexts), dtype=np.int64), sizes),
            sizes,
            np.fromiter((n.image_cls for n in nodes), dtype=np.int64, count=len(nodes)),
            np.fromiter(
                chain.from_iterable(static_facts(n) for n in nodes), np.float32, count=len(nodes) * _N_STATIC
            ).reshape(len(nodes), _N_STATIC),
        )


def _fill_classes(matrix: NDArray[np.float32], contexts: Sequence[RowContext], table: _Table) -> None:
    rows = np.arange(len(contexts))
    own = table.cls[table.own]
    parent = np.fromiter((_class_of(c.ancestors, 0) for c in contexts), dtype=np.int64, count=len(contexts))
    grand = np.fromiter((_class_of(c.ancestors, 1) for c in contexts), dtype=np.int64, count=len(contexts))
    matrix[rows, _IMG + own] = 1.0
    for offset, classes in ((_PARENT, parent), (_GPARENT, grand)):
        known = classes >= 0
        matrix[rows[known], offset + classes[known]] = 1.0
    matrix[:, _AT["parent_unknown"]] = parent < 0
    _fill_pairs(matrix, own, parent)


def _class_of(ancestors: tuple[ProcessNode, ...], level: int) -> int:
    """Image class of the ancestor at `level`, -1 when unknown (missing or placeholder)."""
    if len(ancestors) <= level or ancestors[level].placeholder:
        return -1
    return int(ancestors[level].image_cls)


def _lookup(members: frozenset[ImageClass]) -> NDArray[np.bool_]:
    """Membership by class index; one extra False slot at the end answers -1 (unknown)."""
    table = np.zeros(_N_CLS + 1, dtype=np.bool_)
    table[[int(m) for m in members]] = True
    return table


_IS_SHELLISH, _IS_TOOLISH = _lookup(_SHELLISH), _lookup(_TOOLISH)


def _isin(classes: NDArray[np.int64], members: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return members[classes]


_PAIRS: tuple[tuple[str, frozenset[ImageClass], frozenset[ImageClass]], ...] = (
    ("pair_office_tool", frozenset({ImageClass.OFFICE}), _TOOLISH),
    ("pair_browser_tool", frozenset({ImageClass.BROWSER}), _TOOLISH),
    ("pair_webserver_shell", frozenset({ImageClass.WEB_SERVER}), _SHELLISH),
    ("pair_service_shell", frozenset({ImageClass.SERVICE_HOST}), _SHELLISH),
    ("pair_wmi_shell", frozenset({ImageClass.WMI}), _SHELLISH | {ImageClass.LOLBIN}),
    ("pair_remote_shell", frozenset({ImageClass.REMOTE_SERVICE}), _SHELLISH),
    ("pair_shell_lolbin", _SHELLISH, frozenset({ImageClass.LOLBIN})),
    ("pair_shell_chain", _SHELLISH, _SHELLISH),
)  # column, parent classes, own classes: set when the parent's class and the process's are in them


def _fill_pairs(matrix: NDArray[np.float32], own: NDArray[np.int64], parent: NDArray[np.int64]) -> None:
    for name, parents, owns in _PAIRS:
        matrix[:, _AT[name]] = _isin(parent, _lookup(parents)) & _isin(own, _lookup(owns))


_STATIC_COLUMNS = (
    "img_loc_temp", "img_loc_user", "img_loc_programdata", "img_loc_system", "img_loc_programfiles",
    "img_masquerade", "img_double_ext", "img_hidden_dir", "img_unsigned", "img_unknown",
    "priv_high", "priv_system", "cmd_len_log", "cmd_entropy", "cmd_max_token_log", "cmd_special_ratio",
)  # fmt: skip
_N_STATIC = len(_STATIC_COLUMNS) + 1  # + runs-from-user-writable (used for descendants)
_PROCESS_COLUMNS = (
    "start_seen", "exited", "depth", "lifetime_log", "n_children", "n_descendants", "subtree_depth",
)  # fmt: skip
_DESC_GROUPS = (
    ("desc_shell", _SHELLISH),
    ("desc_lolbin", frozenset({ImageClass.LOLBIN})),
    ("desc_admin_tool", frozenset({ImageClass.ADMIN_TOOL})),
)
_DEPTH_CAP = 16  # `depth` counts at most this many ancestors


def _bits(classes: Iterable[ImageClass]) -> int:
    return sum(1 << int(c) for c in set(classes))


# What `pipeline._cfeatures.rows` fills, in the order its read_layout reads: sizes, then columns
# (and class sets as bit masks) of each part of the row.
_C_LAYOUT: tuple[int, ...] = (
    N_FEATURES, _N_CLS, _N_IND, _N_CNT, _N_STATIC, ANCESTOR_DEPTH, _DEPTH_CAP,
    _IMG, _PARENT, _GPARENT, _AT["parent_unknown"],
    *chain.from_iterable((_AT[name], _bits(parents), _bits(owns)) for name, parents, owns in _PAIRS),
    *(_AT[c] for c in _STATIC_COLUMNS), *(_AT[c] for c in _PROCESS_COLUMNS),
    _AT["desc_distinct_images"], _AT["desc_user_writable"],
    *chain.from_iterable((_AT[name], _bits(members)) for name, members in _DESC_GROUPS),
    _SELF_IND, _DESC_IND, _ANC_IND, _AT["self_ind_count"], _AT["tree_ind_count"], _OWN, _SUB,
    _AT["own_distinct_dst_ip"], _AT["own_distinct_dst_port"], _AT["sub_distinct_dst_ip"],
)  # fmt: skip


def _fill_process(matrix: NDArray[np.float32], contexts: Sequence[RowContext], table: _Table) -> None:
    matrix[:, [_AT[c] for c in _STATIC_COLUMNS]] = table.static[table.own, : len(_STATIC_COLUMNS)]
    matrix[:, [_AT[c] for c in _PROCESS_COLUMNS]] = [_process_scalars(c) for c in contexts]


def _process_scalars(ctx: RowContext) -> tuple[float, ...]:
    node = ctx.node
    end = node.end_ms if node.end_ms is not None else ctx.forest.watermark_ms
    lifetime = max(0, end - node.start_ms) / 1000 if node.start_ms is not None else 0.0
    depths = ctx.depths
    return (node.started, node.exited, _depth(ctx), math.log1p(lifetime), len(node.children), len(depths),
            depths[-1] if depths else 0)  # fmt: skip


def _fill_subtree(matrix: NDArray[np.float32], table: _Table) -> None:
    """Descendant class counts, user-writable images and distinct images, by bincount over members."""
    n = len(matrix)
    row, cls = table.desc_row, table.cls[table.desc]
    by_class = np.bincount(row * _N_CLS + cls, minlength=n * _N_CLS).reshape(n, _N_CLS)
    for name, members in _DESC_GROUPS:
        matrix[:, _AT[name]] = by_class[:, sorted(members)].sum(axis=1)
    matrix[:, _AT["desc_user_writable"]] = np.bincount(row, weights=table.static[table.desc, -1], minlength=n)
    image_ids: dict[str, int] = {}
    images = np.fromiter(
        (image_ids.setdefault(table.nodes[p].image, len(image_ids)) for p in table.desc.tolist()),
        dtype=np.int64,
        count=len(table.desc),
    )
    distinct = np.unique(row * (len(image_ids) + 1) + images)
    matrix[:, _AT["desc_distinct_images"]] = np.bincount(distinct // (len(image_ids) + 1), minlength=n)


def _fill_indicators(matrix: NDArray[np.float32], contexts: Sequence[RowContext], table: _Table) -> None:
    masks = np.zeros((len(contexts), 3), dtype=np.uint64)
    node_masks = np.fromiter((n.mask for n in table.nodes), dtype=np.uint64, count=len(table.nodes))
    masks[:, 0] = node_masks[table.own]
    nonempty = table.desc_sizes > 0
    if table.desc.size:
        offsets = np.concatenate(([0], np.cumsum(table.desc_sizes)[:-1]))
        masks[nonempty, 1] = np.bitwise_or.reduceat(node_masks[table.desc], offsets[nonempty])
    for row, ctx in enumerate(contexts):
        anc = 0
        for a in ctx.ancestors:
            anc |= a.mask
        masks[row, 2] = anc
    bits = (masks[:, :, None] >> np.arange(_N_IND, dtype=np.uint64)) & np.uint64(1)
    for col, offset in enumerate((_SELF_IND, _DESC_IND, _ANC_IND)):
        matrix[:, offset : offset + _N_IND] = bits[:, col, :]
    matrix[:, _AT["self_ind_count"]] = bits[:, 0, :].sum(axis=1)
    matrix[:, _AT["tree_ind_count"]] = (bits.max(axis=1)).sum(axis=1)


def _fill_counters(matrix: NDArray[np.float32], contexts: Sequence[RowContext], table: _Table) -> None:
    counts = count_windows([n.evidence for n in table.nodes], table.starts)
    own = counts[table.own]
    matrix[:, _OWN : _OWN + _N_CNT] = own
    desc_sum = np.zeros_like(own)
    nonempty = table.desc_sizes > 0
    if table.desc.size:  # descendants are listed row by row: one segment sum per row (counts: exact)
        offsets = np.concatenate(([0], np.cumsum(table.desc_sizes)[:-1]))
        desc_sum[nonempty] = np.add.reduceat(counts[table.desc], offsets[nonempty], axis=0)
    matrix[:, _SUB : _SUB + _N_CNT] = own + desc_sum
    distinct = _AT["own_distinct_dst_ip"]
    matrix[:, distinct : distinct + 3] = [_distinct(ctx) for ctx in contexts]


def _distinct(ctx: RowContext) -> tuple[int, int, int]:
    """Distinct destination IPs and ports of the process, and IPs of its subtree, in the window."""
    start = ctx.window_start_ms
    ips, ports = _in_window(ctx.node.conns, start)
    own = sub = set(ips)
    for d in ctx.descendants:
        if d.conns:
            sub = sub.union(_in_window(d.conns, start)[0])  # a new set: `own` stays the process's
    return len(own), len(set(ports)), len(sub)


def _in_window(conns: deque[tuple[int, str, int]], start: int) -> tuple[Sequence[str], Sequence[int]]:
    """IPs and ports of the (ts, ip, port) records at or after `start` (columns at C speed when the
    whole deque is in the window, the usual case)."""
    if not conns:
        return (), ()
    times, ips, ports = zip(*conns, strict=True)
    if min(times) >= start:
        return ips, ports
    kept = [(ip, port) for ts, ip, port in conns if ts >= start]
    return [ip for ip, _ in kept], [port for _, port in kept]


def _depth(ctx: RowContext, cap: int = _DEPTH_CAP) -> int:
    """Known ancestors, at most `cap`; the walk starts above the ones `row_context` already found."""
    ancestors = ctx.ancestors
    if not ancestors or (len(ancestors) < ANCESTOR_DEPTH and ctx.forest.limits.max_depth >= ANCESTOR_DEPTH):
        return min(len(ancestors), cap)  # the chain ended below ANCESTOR_DEPTH
    nodes, depth, parent = ctx.forest.nodes, len(ancestors), ancestors[-1].parent_key
    while parent is not None and depth < cap and (up := nodes.get(parent)) is not None:
        depth, parent = depth + 1, up.parent_key
    return depth
