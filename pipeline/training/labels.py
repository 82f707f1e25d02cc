"""Label the recorded lab data: find each recording's attack processes from its adversary view.

OTRF labels a whole recording ("CredentialAccess"), yet most of its events are the lab host's
ordinary background. Training on every process of a recording as "attack" would teach the model
that svchost is malicious, so labels are moved from the recording onto processes:

1. *Clues* are read from `simulation.adversary_view` (the attacker's console): commands typed
   after a shell prompt, `execute -f X -a '...'` (Meterpreter), `shell ...` (Empire),
   `ShellCmd /shellcommand:"..."` (Covenant), bare command lines of atomic tests, and process ids
   the console printed (Empire's agent table, "Process 4392 created", "PID:8972").
2. A process_start *matches* a command when it runs the same executable and shares most of the
   command's distinctive tokens (paths, switches, arguments), or when its pid is a printed pid.
   *Weak* matches — a bare command without arguments (`systeminfo`, `hostname`) or a printed pid —
   also hit the host's own processes: Windows' diagnostics scripts run `systeminfo` too, and pids are
   reused. When one weak clue matches several processes (a bare command: starts more than
   `TWIN_SECONDS` apart; a pid: different command lines; not one process recorded by both Sysmon and
   Security 4688), a match whose ancestry is known is kept only when related to the other matches:
   it, or one of its ancestors below an anchor, is another match or an ancestor of one (the
   operator's shell, the implant). Without this, a lab host's `netsh trace stop`
   report (gatherNetworkInfo.vbs running `systeminfo`, `cmd`s that reused a printed pid) was labelled
   as the attack.
3. The attack tree is every matched process, all its descendants, and its ancestors up to and
   including the first shell or script host (never past an anchor such as explorer or services).

Everything not reached is benign background. Recordings where no clue matches are *unlabelled*
and left out entirely (their attack would otherwise be learned as benign). The `_`-prefixed
fields of the files are labels and provenance only and never reach a feature.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

from agents.sysmon.values import device_id_from_host, normalise_guid
from pipeline.lexicon import ANCHOR_CLASSES, ImageClass, Location, basename, image_class, location
from schemas.events import BehaviorEvent, ProcessStart

_SHELLISH = frozenset({ImageClass.SHELL, ImageClass.SCRIPT_HOST})
_STOP_AT = ANCHOR_CLASSES | {ImageClass.WMI, ImageClass.WEB_SERVER}
_DROPPED = frozenset({Location.TEMP, Location.USER_PROFILE, Location.PROGRAM_DATA})
"""Where an attacker's payload sits: walking up past the shell continues only through these."""
_PROMPTS = (
    re.compile(r"^\s*PS\s*(?:[A-Za-z]:\\[^>]*)?>\s*(?P<cmd>.+)$"),
    re.compile(r"^\s*[A-Za-z]:\\[^>]*>\s*(?P<cmd>.+)$"),
    re.compile(r"^\s*(?:\S+@\S+:\S*[$#]|\$|#)\s+(?P<cmd>.+)$"),
    re.compile(r"^\s*\(Empire: [^)]*\)\s*>\s*shell\s+(?P<cmd>.+)$"),
    re.compile(r"ShellCmd\s+/shellcommand:\"(?P<cmd>.+?)\"\s*$"),
    re.compile(
        r"^\s*(?:meterpreter|msf\d?)\s*.*?>\s*execute\s+-f\s+(?P<exe>\S+)(?:.*?-a\s+'(?P<args>[^']*)')?"
    ),
    re.compile(r"^TOOL> execute\s+-f\s+'?(?P<exe>[^']+?)'?\s+(?:-H\s+)?-a\s+'(?P<args>[^']*)'"),
    re.compile(r"^TOOL> (?:powershell_execute|shell)\s+\"?(?P<cmd>[^\"]+)\"?\s*$"),
    re.compile(r"^TOOL> (?P<cmd>(?!https?:)[^ ]+\.exe\b.*)$"),
    re.compile(r"\bexec\(\s*[\"'](?P<cmd>[^\"']+)[\"']\s*\)"),
)
_PIDS = (
    re.compile(r"Process\s+(\d{2,6})\s+created", re.I),
    re.compile(r"\bPID[:\s]+(\d{2,6})\b"),
    re.compile(r"ProcessID\s*:\s*(\d{2,6})"),
    re.compile(r"\s(?:powershell|cmd|rundll32|python|svchost|notepad)\s+(\d{2,6})\s+\d+/\d", re.I),
)
_TOKEN = re.compile(r"[A-Za-z0-9_.:\\/$%{}=+-]{3,}")
_STOP_TOKENS = frozenset(
    "the and for with from this that into /c /q /k cmd cmd.exe powershell powershell.exe exe c:\\windows "
    "c:\\windows\\system32 system32 windows true false null echo set get out-null".split()
)
_EXE_HINT = re.compile(r"^\"?([A-Za-z]:\\[^\"]+?\.exe|[\w.-]+\.exe|[\w-]+)\"?(?:\s|$)", re.I)


@dataclass(frozen=True, slots=True)
class Command:
    """One command the attacker ran: its executable name (lower-case, no .exe) and key tokens."""

    executable: str
    tokens: frozenset[str]
    text: str


@dataclass(frozen=True, slots=True)
class Clues:
    """What an adversary view tells us to look for."""

    commands: tuple[Command, ...]
    pids: frozenset[int]

    @property
    def empty(self) -> bool:
        """Nothing to match."""
        return not self.commands and not self.pids


@dataclass(frozen=True, slots=True)
class Recording:
    """One OTRF file and its labels (read from the inventory and metadata, never from events)."""

    path: Path
    rel: str
    dataset_id: str
    tactic: str
    techniques: tuple[str, ...]
    title: str
    adversary_view: str


@dataclass(frozen=True, slots=True)
class Labelled:
    """Labels of one recording's processes."""

    node_labels: dict[str, str]  # attack process key -> tactic
    matches: tuple[tuple[str, str], ...]  # (process key, why) of the seed matches

    @property
    def found(self) -> bool:
        """True when the adversary view reached at least one process."""
        return bool(self.matches)


def load_catalog(root: Path) -> list[Recording]:
    """Every recording of the OTRF folder, with tactic, techniques and adversary view."""
    inventory = json.loads((root / "_inventory.json").read_text(encoding="utf-8"))
    out = []
    for entry in inventory:
        rel = entry.get("out")
        if not rel or not (root / rel).is_file():
            continue
        view = _adversary_view(root, entry)
        out.append(
            Recording(
                root / rel,
                rel,
                str(entry.get("dataset_id") or rel),
                str(entry["tactic"]),
                tuple(entry.get("techniques") or ()),
                str(entry.get("title") or ""),
                view,
            )
        )
    return sorted(out, key=lambda rec: rec.rel)


def _adversary_view(root: Path, entry: Mapping[str, object]) -> str:
    """The metadata's adversary_view plus its `simulation.tools[].script` lines.

    Read from `_metadata/<dataset_id>.yaml`, else from the metadata file named in the inventory.
    """
    names = [f"{entry.get('dataset_id')}.yaml"]
    if isinstance(entry.get("metadata"), str):
        names.append(Path(str(entry["metadata"])).name)
    for name in names:
        path = root / "_metadata" / name
        if path.is_file():
            meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            simulation = (meta.get("simulation") or {}) if isinstance(meta, dict) else {}
            scripts = [
                str(t.get("script"))
                for t in simulation.get("tools") or ()
                if isinstance(t, dict) and t.get("script")
            ]
            return "\n".join([str(simulation.get("adversary_view") or ""), *(f"TOOL> {s}" for s in scripts)])
    return ""


def extract_clues(view: str) -> Clues:
    """Commands and process ids in an attacker's console transcript."""
    lines = view.splitlines()
    commands = [c for line in lines if (c := _command_of(line)) is not None]
    if not commands and lines and _EXE_HINT.match(lines[0].strip()):
        commands = [c for line in lines[:3] if (c := _command(line.strip())) is not None]
    pids = {int(m) for pattern in _PIDS for m in pattern.findall(view)}
    return Clues(tuple(commands), frozenset(pids))


def _command_of(line: str) -> Command | None:
    for pattern in _PROMPTS:
        match = pattern.search(line)
        if match is None:
            continue
        groups = match.groupdict()
        text = groups.get("cmd") or f"{groups.get('exe', '')} {groups.get('args') or ''}"
        return _command(text.strip())
    return None


def _command(text: str) -> Command | None:
    """Executable and distinctive tokens of a command line; None for trivial input."""
    head = _EXE_HINT.match(text)
    if head is None:
        return None
    exe = basename(head.group(1)).removesuffix(".exe")
    tokens = frozenset(
        t
        for t in (m.lower().strip("\"'") for m in _TOKEN.findall(text[head.end() :]))
        if t not in _STOP_TOKENS and not t.isdigit()
    )
    if exe in ("cd", "dir", "cls", "exit", "back", "info", "agents", "interact", "usemodule", "run", "help"):
        return None
    return Command(exe, tokens, text)


def matches(start: ProcessStart, command: Command) -> bool:
    """Same executable (image or first command-line token) and most distinctive tokens shared."""
    line = start.command_line.lower()
    exe = basename(start.image).removesuffix(".exe")
    same_exe = exe == command.executable or command.executable in line[:200]
    if not same_exe:
        return False
    if not command.tokens:
        return basename(start.image).removesuffix(".exe") == command.executable
    shared = sum(1 for t in command.tokens if t in line)
    return shared >= max(1, round(0.5 * len(command.tokens)))


def label_events(
    events: Sequence[BehaviorEvent], recording: Recording, pid_keys: Mapping[int, set[str]] | None = None
) -> Labelled:
    """Attack processes of one recording (see module docstring).

    `pid_keys` maps printed pids to process keys seen in the raw records (`raw_pid_keys`), for
    attacker processes that started before the recording and so have no process_start.
    """
    clues = extract_clues(recording.adversary_view)
    hint = HINTS.get(Path(recording.rel).name.removesuffix(".jsonl.gz"))
    if hint is not None:
        clues = Clues((*clues.commands, *hint), clues.pids)
    starts = [
        (e.process_key, e.ts.timestamp(), e.payload) for e in events if isinstance(e.payload, ProcessStart)
    ]
    seeds, ambiguous = _seeds(starts, clues)
    parent_of, image_of = _lineage(events)
    known = {e.process_key for e in events}
    for pid, keys in (pid_keys or {}).items():
        if pid in clues.pids and len(keys) <= 4:
            fresh = [k for k in sorted(keys) if k in known and k not in seeds]
            seeds.update((k, f"pid {pid} (raw record)") for k in fresh)
    seeds = _related(seeds, ambiguous, parent_of, image_of)
    if not seeds:
        return Labelled({}, ())
    attack = _expand(parent_of, image_of, set(seeds))
    return Labelled(dict.fromkeys(sorted(attack), recording.tactic), tuple(sorted(seeds.items())))


_PID_FIELDS = (
    ("ProcessId", "ProcessGuid"),
    ("SourceProcessId", "SourceProcessGUID"),
    ("SourceProcessId", "SourceProcessGuid"),
)


def raw_pid_keys(lines: Iterable[bytes], pids: frozenset[int]) -> dict[int, set[str]]:
    """pid -> Sysmon ProcessGuids (normalised like the mapper's keys) from raw JSON Lines records."""
    found: dict[int, set[str]] = {}
    if not pids:
        return found
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        for pid_field, guid_field in _PID_FIELDS:
            pid, guid = _as_pid(record.get(pid_field)), normalise_guid(record.get(guid_field))
            if pid in pids and guid is not None:
                found.setdefault(pid, set()).add(guid)
    return found


_HOST_FIELDS = ("Computer", "Hostname", "computer_name", "ComputerName", "computer", "hostname")


def raw_hosts(lines: Iterable[bytes]) -> set[str]:
    """Device ids (as the mapper derives them) of the hosts named in raw JSON Lines records."""
    hosts: set[str] = set()
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            name = next((record[k] for k in _HOST_FIELDS if record.get(k)), None)
            host = device_id_from_host(name)
            hosts.add(host or "unknown-host")
    return hosts


def _as_pid(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _hint(executable: str, *tokens: str) -> Command:
    return Command(executable, frozenset(tokens), f"(hint) {executable} {' '.join(tokens)}")


HINTS: dict[str, tuple[Command, ...]] = {
    # Recordings whose adversary view holds no matchable command; hints come from the recording's
    # title (the technique it documents), never from its events.
    "cmd_dumping_ntds_dit_file_volume_shadow_copy": (
        _hint("vssadmin", "shadow"), _hint("cmd", "ntds.dit"), _hint("reg", "save"),
    ),
    "cmd_process_herpaderping_mimiexplorer": (_hint("processherpaderping"),),
    "rdp_interactive_taskmanager_lsass_dump": (_hint("taskmgr"),),
}


def _seeds(
    starts: Sequence[tuple[str, float, ProcessStart]], clues: Clues
) -> tuple[dict[str, str], set[str]]:
    """Matched process keys with the reason, and the keys of ambiguous weak matches (module docstring)."""
    found: dict[str, str] = {}
    weak: dict[str, list[tuple[str, float]]] = {}
    lines = {key: start.command_line for key, _, start in starts}
    for key, ts, start in starts:
        if start.pid is not None and start.pid in clues.pids:
            weak.setdefault(f"pid {start.pid}", []).append((key, ts))
        hits = [command for command in clues.commands if matches(start, command)]
        if not hits:
            continue
        best = next((c for c in hits if c.tokens), hits[0])
        found[key] = f"command: {best.text[:80]}"
        if not best.tokens:
            weak.setdefault(f"bare {best.text}", []).append((key, ts))
    ambiguous: set[str] = set()
    for clue, keys in weak.items():
        if clue.startswith("pid") and len(keys) > 4:  # more hits than 4 means pid reuse: ignore the pid
            continue
        if clue.startswith("pid"):
            found.update((k, clue) for k, _ in keys if k not in found)
        if _several_processes(clue, keys, lines):
            ambiguous.update(k for k, _ in keys if clue.startswith("bare") or found[k] == clue)
    return found, ambiguous


TWIN_SECONDS = 2.0
"""Matches of one bare command that start within this many seconds of each other are one process seen
twice (a Sysmon event 1 and a Security 4688 record of the same start), not two processes."""


def _several_processes(clue: str, keys: Sequence[tuple[str, float]], lines: Mapping[str, str]) -> bool:
    """Did one weak clue match distinct processes? A bare command: starts further apart than
    `TWIN_SECONDS`. A pid: different command lines (a 4688 twin without one is not different)."""
    if clue.startswith("bare"):
        times = [ts for _, ts in keys]
        return max(times) - min(times) > TWIN_SECONDS
    return len({" ".join(lines[k].lower().split()) for k, _ in keys} - {""}) > 1


def _related(
    seeds: Mapping[str, str], weak: set[str], parent_of: Mapping[str, str | None], image_of: Mapping[str, str]
) -> dict[str, str]:
    """Seeds, less the ambiguous weak ones outside the lineage of the others (all when none is left);
    a match whose parent is unknown cannot be placed and is kept."""
    strong = [k for k in seeds if k not in weak]
    if not strong:
        return dict(seeds)
    lineage = set(strong)
    for key in strong:
        lineage.update(_ancestors(key, parent_of, image_of))
    def kept(key: str) -> bool:
        if key in lineage or parent_of.get(key) not in image_of:
            return True
        return any(a in lineage for a in _ancestors(key, parent_of, image_of))

    return {key: why for key, why in seeds.items() if kept(key)}


def _ancestors(key: str, parent_of: Mapping[str, str | None], image_of: Mapping[str, str]) -> list[str]:
    """Known ancestors of `key` below the first anchor, WMI host or web server."""
    found: list[str] = []
    parent = parent_of.get(key)
    for _ in range(16):
        if parent is None or image_class(image_of.get(parent, "")) in _STOP_AT:
            break
        found.append(parent)
        parent = parent_of.get(parent)
    return found


def _lineage(events: Sequence[BehaviorEvent]) -> tuple[dict[str, str | None], dict[str, str]]:
    """Parent and image of every process the events mention, started in the recording or not."""
    parent_of: dict[str, str | None] = {}
    image_of: dict[str, str] = {}
    for e in events:
        if isinstance(e.payload, ProcessStart):
            parent_of[e.process_key] = e.parent_process_key
            image_of[e.process_key] = e.payload.image
            if e.payload.parent_image and e.parent_process_key:
                image_of.setdefault(e.parent_process_key, e.payload.parent_image)
        else:
            if e.parent_process_key is not None:
                parent_of.setdefault(e.process_key, e.parent_process_key)
            if e.image:
                image_of.setdefault(e.process_key, e.image)
    return parent_of, image_of


def _expand(parent_of: Mapping[str, str | None], image_of: Mapping[str, str], seeds: set[str]) -> set[str]:
    """Seeds, their descendants, and their ancestors up to the first shell (stopping at anchors)."""
    children: dict[str, list[str]] = {}
    for key, parent in parent_of.items():
        if parent is not None:
            children.setdefault(parent, []).append(key)
    attack = set(seeds)
    stack = list(seeds)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in attack:
                attack.add(child)
                stack.append(child)
    for seed in seeds:
        attack.update(_shell_ancestors(seed, parent_of, image_of))
    return attack


def _shell_ancestors(
    seed: str, parent_of: Mapping[str, str | None], image_of: Mapping[str, str]
) -> list[str]:
    """Non-anchor ancestors up to the first shell, and beyond it only through dropped payloads."""
    found: list[str] = []
    shell_seen = False
    key = parent_of.get(seed)
    for _ in range(16):
        if key is None or key not in image_of:
            break
        cls = image_class(image_of[key])
        if cls in _STOP_AT:
            break
        if shell_seen and location(image_of[key]) not in _DROPPED:
            break
        found.append(key)
        shell_seen = shell_seen or cls in _SHELLISH
        key = parent_of.get(key)
    return found
