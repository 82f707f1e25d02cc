"""The feature vector of a process in the context of its ancestors and its window-active descendants.

One list, one version, shared by the stream, training and offline hunting (`FEATURE_NAMES`,
`FEATURE_DOCS`, `FEATURE_VERSION`; `pipeline/FEATURES.md` is rendered from them and a test keeps it
in sync). Features describe *behaviour and roles*, so they carry across labs and fleets: image
classes instead of names, directory classes instead of paths, command-line indicators instead of
strings, counts of behaviour in the window. Host, user and domain names, Sysmon rule names and
absolute paths never enter a feature.

`feature_matrix` computes many rows at once: evidence of every involved node is counted in one
vectorised pass (`pipeline.windows.count_windows`), subtrees are summed with one `reduceat`, and
indicator masks are unpacked to bits in one shift; the per-row Python is the tree walk only.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from pipeline import lexicon as lx
from pipeline.indicators import INDICATORS
from pipeline.lexicon import ImageClass, Location
from pipeline.tree import DeviceForest, ProcessNode
from pipeline.windows import (
    COUNTER_DOCS,
    DEFAULT_WINDOW_MS,
    Counter,
    count_windows,
    sliding_start,
    sum_groups,
)

FEATURE_VERSION = "1.0"
ANCESTOR_DEPTH = 3  # ancestors whose indicators form the row's context
MAX_DESCENDANTS = 256  # descendants per row (breadth first) counted into subtree features
_N_CLS = len(ImageClass)
_N_IND = len(INDICATORS)
_N_CNT = len(Counter)
_SHELLISH = frozenset({ImageClass.SHELL, ImageClass.SCRIPT_HOST})
_TOOLISH = _SHELLISH | {ImageClass.LOLBIN, ImageClass.ADMIN_TOOL}
_MASQUERADE_CLASSES = frozenset(
    {
        ImageClass.SHELL,
        ImageClass.LOLBIN,
        ImageClass.ADMIN_TOOL,
        ImageClass.SERVICE_HOST,
        ImageClass.SYSTEM_CORE,
        ImageClass.USER_SHELL,
        ImageClass.WMI,
    }
)
_USER_WRITABLE = frozenset({Location.TEMP, Location.USER_PROFILE, Location.PROGRAM_DATA})
_DOUBLE_EXT = ("pdf", "doc", "docx", "xls", "xlsx", "txt", "jpg", "png", "zip", "rtf")


def _catalogue() -> tuple[tuple[str, str], ...]:
    cls = [c.name.lower() for c in ImageClass]
    out: list[tuple[str, str]] = []
    out += [(f"img_{c}", f"the process image is a {c} (by file name)") for c in cls]
    out += [(f"parent_{c}", f"the parent image is a {c}") for c in cls]
    out += [("parent_unknown", "the parent is unknown (started before the agent, or its start was lost)")]
    out += [(f"gparent_{c}", f"the grandparent image is a {c}") for c in cls]
    out += [
        ("pair_office_tool", "an office/document process started a shell, script host, LOLBin or admin tool"),
        ("pair_browser_tool", "a browser started a shell, script host, LOLBin or admin tool"),
        ("pair_webserver_shell", "a web or database server started a shell or script host"),
        ("pair_service_shell", "a service host (services, svchost, systemd, cron) started a shell"),
        ("pair_wmi_shell", "the WMI provider host started a shell, script host or LOLBin"),
        ("pair_remote_shell", "a remote-access service (sshd, WinRM, psexec) started a shell"),
        ("pair_shell_lolbin", "a shell or script host started a LOLBin"),
        ("pair_shell_chain", "a shell whose parent is also a shell or script host"),
        ("img_loc_temp", "the image runs from a temp directory"),
        ("img_loc_user", "the image runs from a user profile"),
        ("img_loc_programdata", "the image runs from ProgramData or Users\\Public"),
        ("img_loc_system", "the image runs from a system directory"),
        ("img_loc_programfiles", "the image runs from Program Files, /opt or /usr/local"),
        ("img_masquerade", "a system/shell/admin tool name running outside the system directories"),
        ("img_double_ext", "the image name has a document extension before the executable one"),
        ("img_hidden_dir", "the image lives in a hidden (dot) directory"),
        ("img_unsigned", "the image was reported unsigned"),
        ("img_unknown", "only the process key is known (no image yet)"),
        ("priv_high", "integrity level High"),
        ("priv_system", "integrity level System or uid 0"),
        ("start_seen", "its process_start was seen"),
        ("exited", "the process has exited"),
        ("depth", "number of known ancestors (capped at 16)"),
        ("lifetime_log", "log1p of seconds between start and exit or the window end"),
        ("n_children", "children known (any time)"),
        ("n_descendants", "descendants active in the window"),
        ("subtree_depth", "deepest level below the process among window-active descendants"),
        ("desc_distinct_images", "distinct images among window-active descendants"),
        ("desc_shell", "window-active descendants that are shells or script hosts"),
        ("desc_lolbin", "window-active descendants that are LOLBins"),
        ("desc_admin_tool", "window-active descendants that are admin tools"),
        ("desc_user_writable", "window-active descendants running from user-writable directories"),
        ("cmd_len_log", "log1p of the command line length"),
        ("cmd_entropy", "Shannon entropy (bits/char) of the command line"),
        ("cmd_max_token_log", "log1p of the longest whitespace-separated token"),
        ("cmd_special_ratio", "share of shell metacharacters (^ ` $ | & ; < > % quotes) in the command line"),
    ]
    out += [(f"self_{i.name}", f"own command line/scripts: {i.doc}") for i in INDICATORS]
    out += [(f"desc_{i.name}", f"a window-active descendant: {i.doc}") for i in INDICATORS]
    out += [(f"anc_{i.name}", f"one of {ANCESTOR_DEPTH} nearest ancestors: {i.doc}") for i in INDICATORS]
    out += [
        ("self_ind_count", "distinct indicators in own command line/scripts"),
        ("tree_ind_count", "distinct indicators in the process, its ancestors and descendants"),
    ]
    out += [(f"own_{c.name.lower()}", f"own, in window: {COUNTER_DOCS[c]}") for c in Counter]
    out += [
        (f"sub_{c.name.lower()}", f"process + descendants, in window: {COUNTER_DOCS[c]}") for c in Counter
    ]
    out += [
        ("own_distinct_dst_ip", "distinct destination addresses contacted in the window"),
        ("own_distinct_dst_port", "distinct destination ports contacted in the window"),
        ("sub_distinct_dst_ip", "distinct destination addresses of the process and descendants"),
    ]
    return tuple(out)


_CATALOGUE = _catalogue()
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in _CATALOGUE)
FEATURE_DOCS: dict[str, str] = dict(_CATALOGUE)
N_FEATURES = len(FEATURE_NAMES)
_AT = {name: i for i, name in enumerate(FEATURE_NAMES)}
_IMG, _PARENT, _GPARENT = _AT["img_other"], _AT["parent_other"], _AT["gparent_other"]
_SCALARS = _AT["pair_office_tool"]  # first of the per-row scalar block
_N_SCALARS = _AT["self_" + INDICATORS[0].name] - _SCALARS
_SELF_IND, _DESC_IND, _ANC_IND = (_AT[f"{p}_{INDICATORS[0].name}"] for p in ("self", "desc", "anc"))
_OWN, _SUB = _AT["own_child_spawn"], _AT["sub_child_spawn"]


def feature_index(name: str) -> int:
    """Column of a feature; KeyError for an unknown name."""
    return _AT[name]


@dataclass(frozen=True, slots=True)
class RowContext:
    """The nodes one row is computed from."""

    forest: DeviceForest
    node: ProcessNode
    ancestors: tuple[ProcessNode, ...]
    descendants: tuple[ProcessNode, ...]
    depths: tuple[int, ...]  # level below `node` of each descendant (1 = child)
    window_start_ms: int


def row_context(forest: DeviceForest, key: str, window_ms: int = DEFAULT_WINDOW_MS) -> RowContext:
    """Gather the ancestors and window-active descendants of `key` (which must be in the forest)."""
    start = sliding_start(forest.watermark_ms, window_ms)
    node = forest.nodes[key]
    desc, depths = _descendants_with_depth(forest, node, start)
    return RowContext(forest, node, tuple(forest.ancestors(key, ANCESTOR_DEPTH)), desc, depths, start)


def _descendants_with_depth(
    forest: DeviceForest, node: ProcessNode, start_ms: int
) -> tuple[tuple[ProcessNode, ...], tuple[int, ...]]:
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
    _fill_classes(matrix, contexts)
    matrix[:, _SCALARS : _SCALARS + _N_SCALARS] = [_scalars(c) for c in contexts]
    _fill_indicators(matrix, contexts)
    _fill_counters(matrix, contexts)
    return matrix


def features_for(
    forest: DeviceForest, keys: Sequence[str], window_ms: int = DEFAULT_WINDOW_MS
) -> NDArray[np.float32]:
    """Convenience for training and hunting: rows for `keys` of one forest."""
    return feature_matrix([row_context(forest, key, window_ms) for key in keys])


def _fill_classes(matrix: NDArray[np.float32], contexts: Sequence[RowContext]) -> None:
    rows = np.arange(len(contexts))
    own = [int(c.node.image_cls) for c in contexts]
    parent = [_class_of(c.ancestors, 0) for c in contexts]
    grand = [_class_of(c.ancestors, 1) for c in contexts]
    matrix[rows, _IMG + np.array(own)] = 1.0
    for offset, classes in ((_PARENT, parent), (_GPARENT, grand)):
        known = np.array(classes) >= 0
        matrix[rows[known], offset + np.array(classes)[known]] = 1.0
    matrix[rows, _AT["parent_unknown"]] = [not c.ancestors or c.ancestors[0].placeholder for c in contexts]


def _class_of(ancestors: tuple[ProcessNode, ...], level: int) -> int:
    """Image class of the ancestor at `level`, -1 when unknown (missing or placeholder)."""
    if len(ancestors) <= level or ancestors[level].placeholder:
        return -1
    return int(ancestors[level].image_cls)


def _pairs(own: ImageClass, parent: ImageClass | None, grand: ImageClass | None) -> list[float]:
    return [
        parent is ImageClass.OFFICE and own in _TOOLISH,
        parent is ImageClass.BROWSER and own in _TOOLISH,
        parent is ImageClass.WEB_SERVER and own in _SHELLISH,
        parent is ImageClass.SERVICE_HOST and own in _SHELLISH,
        parent is ImageClass.WMI and (own in _SHELLISH or own is ImageClass.LOLBIN),
        parent is ImageClass.REMOTE_SERVICE and own in _SHELLISH,
        parent in _SHELLISH and own is ImageClass.LOLBIN,
        own in _SHELLISH and parent in _SHELLISH,
    ]


def _image_facts(node: ProcessNode) -> list[float]:
    image = node.image
    loc = lx.location(image) if image else Location.OTHER
    name = lx.basename(image)
    stem_ext = name.rsplit(".", 2)
    return [
        loc is Location.TEMP,
        loc is Location.USER_PROFILE,
        loc is Location.PROGRAM_DATA,
        loc is Location.SYSTEM,
        loc is Location.PROGRAM_FILES,
        _masquerade(image, node.image_cls, loc),
        len(stem_ext) == 3 and stem_ext[1] in _DOUBLE_EXT and stem_ext[2] in lx.EXECUTABLE_EXTENSIONS,
        "/." in image or "\\." in image,
        node.signed is False,
        not image,
    ]


def _masquerade(image: str, cls: ImageClass, loc: Location) -> bool:
    if cls not in _MASQUERADE_CLASSES:
        return False
    if "\\" in image:
        return loc not in (Location.SYSTEM, Location.WINDOWS)
    return loc in _USER_WRITABLE


def _scalars(ctx: RowContext) -> list[float]:
    node, anc, desc = ctx.node, ctx.ancestors, ctx.descendants
    parent = ImageClass(_class_of(anc, 0)) if _class_of(anc, 0) >= 0 else None
    grand = ImageClass(_class_of(anc, 1)) if _class_of(anc, 1) >= 0 else None
    integrity = (node.integrity_level or "").lower()
    end = node.end_ms if node.end_ms is not None else ctx.forest.watermark_ms
    lifetime = max(0, end - node.start_ms) / 1000 if node.start_ms is not None else 0.0
    classes = Tally(d.image_cls for d in desc)
    return [
        *_pairs(node.image_cls, parent, grand),
        *_image_facts(node),
        integrity == "high",
        integrity == "system" or node.uid == 0,
        node.started,
        node.exited,
        min(ctx.forest.depth(node.key), 16),
        math.log1p(lifetime),
        len(node.children),
        len(desc),
        max(ctx.depths, default=0),
        len({d.image for d in desc}),
        classes[ImageClass.SHELL] + classes[ImageClass.SCRIPT_HOST],
        classes[ImageClass.LOLBIN],
        classes[ImageClass.ADMIN_TOOL],
        sum(lx.location(d.image) in _USER_WRITABLE for d in desc),
        *command_line_stats(node.command_line),
    ]


@lru_cache(maxsize=65536)
def command_line_stats(command_line: str) -> tuple[float, float, float, float]:
    """(log1p length, entropy bits/char, log1p longest token, metacharacter share); cached per string."""
    text = command_line[:8192]
    if not text:
        return (0.0, 0.0, 0.0, 0.0)
    n = len(text)
    entropy = -sum(k / n * math.log2(k / n) for k in Tally(text).values())
    longest = max((len(t) for t in text.split()), default=0)
    special = sum(text.count(ch) for ch in "^`$|&;<>%\"'") / n
    return (math.log1p(len(command_line)), entropy, math.log1p(longest), special)


def _fill_indicators(matrix: NDArray[np.float32], contexts: Sequence[RowContext]) -> None:
    masks = np.zeros((len(contexts), 3), dtype=np.uint64)
    for row, ctx in enumerate(contexts):
        desc = anc = 0
        for d in ctx.descendants:
            desc |= d.mask
        for a in ctx.ancestors:
            anc |= a.mask
        masks[row] = (ctx.node.mask, desc, anc)
    bits = (masks[:, :, None] >> np.arange(_N_IND, dtype=np.uint64)) & np.uint64(1)
    for col, offset in enumerate((_SELF_IND, _DESC_IND, _ANC_IND)):
        matrix[:, offset : offset + _N_IND] = bits[:, col, :]
    matrix[:, _AT["self_ind_count"]] = bits[:, 0, :].sum(axis=1)
    matrix[:, _AT["tree_ind_count"]] = (bits.max(axis=1)).sum(axis=1)


def _fill_counters(matrix: NDArray[np.float32], contexts: Sequence[RowContext]) -> None:
    index: dict[int, int] = {}
    nodes: list[ProcessNode] = []
    starts: list[int] = []
    groups: list[list[int]] = []
    for ctx in contexts:
        group = []
        for node in (ctx.node, *ctx.descendants):
            pos = index.setdefault(id(node), len(nodes))
            if pos == len(nodes):
                nodes.append(node)
                starts.append(ctx.window_start_ms)
            group.append(pos)
        groups.append(group)
    counts = count_windows([n.evidence for n in nodes], np.array(starts, dtype=np.int64))
    matrix[:, _OWN : _OWN + _N_CNT] = counts[[g[0] for g in groups]]
    matrix[:, _SUB : _SUB + _N_CNT] = sum_groups(counts, groups)
    matrix[:, _AT["own_distinct_dst_ip"] :] = [_distinct(ctx) for ctx in contexts]


def _distinct(ctx: RowContext) -> tuple[int, int, int]:
    start = ctx.window_start_ms
    own = [(ip, port) for ts, ip, port in ctx.node.conns if ts >= start]
    sub = {ip for d in ctx.descendants for ts, ip, _ in d.conns if ts >= start}
    return len({ip for ip, _ in own}), len({port for _, port in own}), len(sub | {ip for ip, _ in own})


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The text of pipeline/FEATURES.md (a test checks the committed file equals this)."""
    lines = [
        "# Features",
        "",
        f"Feature version **{FEATURE_VERSION}**, {N_FEATURES} features. Generated from "
        "`pipeline/features.py`",
        "(`render_markdown()`); do not edit by hand — `tests/unit/test_features.py` checks it is current.",
        "",
        "A row describes one process in the context of its ancestors and of its descendants that were",
        "active in the sliding window (default 5 minutes, ending at the device's latest event time).",
        "Counts are raw numbers of events in the window. Nothing here names a host, user, domain, lab",
        "path or Sysmon rule: images are reduced to roles, paths to directory classes, command lines",
        "to behaviour indicators.",
        "",
        "| # | name | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| {i} | `{name}` | {_cell(FEATURE_DOCS[name])} |" for i, name in enumerate(FEATURE_NAMES)]
    return "\n".join(lines) + "\n"
