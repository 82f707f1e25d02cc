"""The feature list: names, one-line meanings and the version, shared by stream, training and hunting.

Kept apart from the computation (`pipeline.features`) so the list reads as a document: every
feature is a behaviour or a role, never a host, user, domain, lab path or Sysmon rule name.
`pipeline/FEATURES.md` is rendered from here (`render_markdown`) and a test keeps it current.
Changing a name, its order or its meaning is a new FEATURE_VERSION; a trained model refuses a
feature list that is not the one it was built for.
"""

from __future__ import annotations

from pipeline.behaviour import COUNTER_DOCS, Counter
from pipeline.indicators import INDICATORS, LONE_INDICATORS
from pipeline.lexicon import ImageClass

FEATURE_VERSION = "1.3"
BASE_FEATURE_VERSION = "1.0"
"""The list 1.1, 1.2 and 1.3 extend: its first `N_BASE_FEATURES` columns are 1.0's, unchanged."""
ANCESTOR_DEPTH = 3  # ancestors whose indicators form the row's context


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


def _lone_catalogue() -> tuple[tuple[str, str], ...]:
    """1.1's, 1.2's and 1.3's columns, appended after 1.0's: the lone-command indicators (`LONE_INDICATORS`)
    of the process's own command line and of its nearest ancestors'. Read by the process-creation view's
    booster (`pipeline.model.routed`); the full view's booster is fitted on 1.0's columns alone. 1.2
    added three indicators and reads -EncodedCommand arguments decoded (`indicators.lone_mask`); 1.3
    added `domain_enumeration`, `recovery_inhibit` and `recovery_tool`: a lone `net group "domain admins"
    /domain` or
    `wmic shadowcopy delete` was scored by the full booster, which never trains on the lone-command
    simulations' attacks (`pipeline.training.train.full_view_rows`)."""
    out = [(f"lone_{i.name}", f"own command line: {i.doc}") for i in LONE_INDICATORS]
    out += [(f"lone_anc_{i.name}", f"one of {ANCESTOR_DEPTH} nearest ancestors' command lines: {i.doc}")
            for i in LONE_INDICATORS]
    return tuple(out)


N_BASE_FEATURES = len(_catalogue())
_CATALOGUE = _catalogue() + _lone_catalogue()
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in _CATALOGUE)
FEATURE_DOCS: dict[str, str] = dict(_CATALOGUE)
N_FEATURES = len(FEATURE_NAMES)
_AT = {name: i for i, name in enumerate(FEATURE_NAMES)}


def feature_index(name: str) -> int:
    """Column of a feature; KeyError for an unknown name."""
    return _AT[name]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The text of pipeline/FEATURES.md (a test checks the committed file equals this)."""
    lines = [
        "# Features",
        "",
        f"Feature version **{FEATURE_VERSION}**, {N_FEATURES} features, computed by `pipeline/features.py`.",
        "Generated by `render_markdown()` in `pipeline/feature_catalogue.py`; do not edit by hand:",
        "`tests/unit/test_features.py` checks it is current.",
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
