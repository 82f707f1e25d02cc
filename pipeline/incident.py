"""An incident — one malicious subtree as the detector found it — and how it reads as an `Alert`.

The detector copies what it needs out of the mutable forest into these frozen values, so policy
and alert building are pure functions of them (and the forest may change or be evicted after).

An alert is validated once, whole: `alert_record` hands pydantic one nested structure of plain
values (strings for enums, dicts for the snapshot's nodes and edges, the top features and the
actions) and pydantic builds and checks every sub-model in its core, instead of ~15 sub-models each
constructed from Python first (with the name made once per incident: ~85 -> ~70 us of CPU per
`Policy.decide` on the replay's incidents; BENCHMARKS.md, Pipeline, "Session F"). Every field is
still validated (lengths, identifiers, finite numbers...), so an out-of-contract value from the
forest still raises a ValueError the detector counts, and never reaches the alerts topic. What is
derived from an incident more than once (its name, the artifact to block) is derived once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.lexicon import NON_ARTIFACT_CLASSES, ImageClass, Location, basename, location
from schemas.alerts import Alert, AlertAction, Tactic, detection_name
from schemas.commands import Command, CommandAction
from schemas.common import Mode, Platform
from schemas.verdicts import Verdict

MAX_SNAPSHOT_NODES = 512
MAX_SNAPSHOT_EVIDENCE = 256
_STRIP_PREFIXES = ("self_", "desc_", "anc_", "own_", "sub_", "img_", "pair_")


@dataclass(frozen=True, slots=True)
class Subject:
    """The identity of one process image, as exclusions see it."""

    image: str
    sha256: str | None = None
    signer: str | None = None


@dataclass(frozen=True, slots=True)
class NodeView:
    """An immutable copy of one process: what the alert shows and what commands act on."""

    key: str
    parent_key: str | None
    image: str
    command_line: str
    sha256: str | None
    user: str | None
    pid: int | None
    start_ms: int | None
    end_ms: int | None
    last_ms: int
    signer: str | None
    image_cls: ImageClass

    @property
    def subject(self) -> Subject:
        """Identity for exclusion matching."""
        return Subject(self.image, self.sha256, self.signer)


@dataclass(frozen=True, slots=True)
class Incident:
    """A malicious subtree, as the detector hands it to policy."""

    device_id: str
    platform: str
    root: NodeView
    scored: NodeView  # the process whose row scored highest
    nodes: tuple[NodeView, ...]  # root first, then its subtree (bounded)
    evidence: tuple[Any, ...]  # BehaviorEvents kept as notable on those nodes
    tactic: str
    score: float
    threshold: float
    tactic_scores: Mapping[str, float]
    top_features: tuple[tuple[str, float, float], ...]
    techniques: tuple[str, ...]
    model_version: str
    feature_version: str
    _name: str | None = field(default=None, init=False, repr=False, compare=False)
    _artifact: tuple[NodeView | None] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def artifact(self) -> NodeView | None:
        """The file to block: the scored process, the root, then any subtree member, if blockable
        (found once: exclusions, commands and the verdict all ask)."""
        if self._artifact is None:
            found = next((n for n in (self.scored, self.root, *self.nodes) if blockable(n)), None)
            object.__setattr__(self, "_artifact", (found,))
            return found
        return self._artifact[0]

    @property
    def variant(self) -> str:
        """`<Variant>` of the detection name: the strongest feature, CamelCased, without its prefix."""
        if not self.top_features:
            return "Gen"
        name = self.top_features[0][0]
        for prefix in _STRIP_PREFIXES:
            name = name.removeprefix(prefix)
        return "".join(part.capitalize() for part in name.split("_") if part)[:64] or "Gen"

    @property
    def name(self) -> str:
        """`Behavior:<Win32|Linux>/<Tactic>.<Variant>!ml` (made once: the alert, commands and verdict
        all carry it); ValueError when the platform, tactic or variant cannot make one."""
        if self._name is None:
            object.__setattr__(self, "_name", detection_name(Platform(self.platform), Tactic(self.tactic),
                                                             self.variant))  # fmt: skip
        return str(self._name)

    @property
    def provisional(self) -> bool:
        """Scored by a stand-in model."""
        return "provisional" in self.model_version


_SYSTEM_LOCATIONS = frozenset({Location.SYSTEM, Location.WINDOWS, Location.PROGRAM_FILES})


class Image(Protocol):
    """What `blockable` reads: a NodeView, or the forest's ProcessNode it copies (no copy needed)."""

    @property
    def image(self) -> str: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def image_cls(self) -> ImageClass: ...


def blockable(node: Image) -> bool:
    """May this image become a fleet-wide verdict / be quarantined?

    Never an operating-system tool by role (shells, LOLBins, office, browsers, services...) and never
    a file in the system or program directories (conhost.exe, /usr/bin/...): blocking those
    fleet-wide would break every machine. It needs a known sha256 too.
    """
    return (
        bool(node.sha256 and node.image)
        and node.image_cls not in NON_ARTIFACT_CLASSES
        and (location(node.image) not in _SYSTEM_LOCATIONS)
    )


def stable_id(*parts: str) -> str:
    """A 32-hex id derived from `parts` (same input, same id: redelivery never duplicates)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def alert_id_for(incident: Incident) -> str:
    """Deterministic alert id: (device, root process_key, tactic, model version)."""
    return stable_id(incident.device_id, incident.root.key, incident.tactic, incident.model_version)


def utc(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def alert_record(
    incident: Incident,
    alert_id: str,
    mode: Mode,
    commands: Sequence[Command],
    verdicts: Sequence[Verdict],
    enforced: bool,
    now: datetime,
) -> Alert:
    """The Alert for `incident`; actions list commands/verdicts, marked `audited` when not enforced."""
    return _alert(incident, alert_id, mode, _actions(commands, verdicts, enforced), now)


def audit_record(incident: Incident, alert_id: str, mode: Mode, now: datetime) -> Alert:
    """The Alert of an incident that is not enforced, without building the commands and verdict it lists.

    Equal to `alert_record(..., commands, verdicts, enforced=False, ...)` for the commands and verdict
    `pipeline.policy.Policy` makes in block mode (tests/unit/test_policy.py holds the two equal): kill
    the root's tree; quarantine the artifact and publish a verdict for its sha256 (lower-cased, as
    the verdict's contract stores it), when there is one.
    """
    actions: list[dict[str, Any]] = [
        {"action": AlertAction.KILL_PROCESS_TREE, "target": incident.root.key[:4096], "command_id": None,
         "audited": True},
    ]  # fmt: skip
    artifact = incident.artifact
    if artifact is not None and artifact.sha256 is not None:
        actions += [
            {"action": AlertAction.QUARANTINE_FILE, "target": artifact.image[:4096], "command_id": None,
             "audited": True},
            {"action": AlertAction.PUBLISH_VERDICT, "target": artifact.sha256.lower(), "audited": True},
        ]  # fmt: skip
    return _alert(incident, alert_id, mode, actions, now)


def _alert(
    incident: Incident, alert_id: str, mode: Mode, actions: list[dict[str, Any]], now: datetime
) -> Alert:
    nodes = incident.nodes[:MAX_SNAPSHOT_NODES]
    return Alert.model_validate({
        "alert_id": alert_id, "device_id": incident.device_id, "platform": incident.platform,
        "detection_name": incident.name, "tactic": incident.tactic, "techniques": incident.techniques[:64],
        "score": min(max(incident.score, 0.0), 1.0),
        "tactic_scores": {k: min(max(v, 0.0), 1.0) for k, v in incident.tactic_scores.items()},
        "threshold": incident.threshold, "model_version": incident.model_version,
        "feature_version": incident.feature_version, "artifact_sha256": incident.scored.sha256,
        "artifact_path": incident.scored.image or None, "process_tree": _snapshot(incident, nodes),
        "top_features": [{"name": n, "value": v, "contribution": c} for n, v, c in
                         incident.top_features[:64]],
        "mode": mode, "actions": actions,
        "first_seen": utc(min(n.start_ms if n.start_ms is not None else n.last_ms for n in nodes)),
        "last_seen": utc(max(n.last_ms for n in nodes)), "created_at": now, "summary": _summary(incident),
    })  # fmt: skip


def _snapshot(incident: Incident, nodes: tuple[NodeView, ...]) -> dict[str, Any]:
    keys = {n.key for n in nodes}
    scored = incident.scored.key
    return {
        "root_process_key": incident.root.key,
        "nodes": [
            {
                "process_key": n.key, "parent_process_key": n.parent_key, "image": n.image or None,
                "command_line": n.command_line or None, "sha256": n.sha256, "user": n.user, "pid": n.pid,
                "started_at": None if n.start_ms is None else utc(n.start_ms),
                "ended_at": None if n.end_ms is None else utc(n.end_ms), "scored": n.key == scored,
            }
            for n in nodes
        ],
        "edges": [
            {"parent": n.parent_key, "child": n.key}
            for n in nodes
            if n.parent_key in keys and n.parent_key is not None
        ][:MAX_SNAPSHOT_NODES],
        "evidence": incident.evidence[:MAX_SNAPSHOT_EVIDENCE],
    }  # fmt: skip


_ACTION_OF = {
    CommandAction.KILL_PROCESS_TREE: AlertAction.KILL_PROCESS_TREE,
    CommandAction.QUARANTINE_FILE: AlertAction.QUARANTINE_FILE,
}


def _actions(
    commands: Sequence[Command], verdicts: Sequence[Verdict], enforced: bool
) -> list[dict[str, Any]]:
    taken: list[dict[str, Any]] = [
        {"action": _ACTION_OF[c.action], "target": (c.process_key or c.path or "")[:4096],
         "command_id": c.command_id if enforced else None, "audited": not enforced}
        for c in commands
        if c.action in _ACTION_OF
    ]  # fmt: skip
    taken += [
        {"action": AlertAction.PUBLISH_VERDICT, "target": v.artifact_id, "audited": not enforced}
        for v in verdicts
    ]
    return taken


def _summary(incident: Incident) -> str:
    label = f"PROVISIONAL model {incident.model_version}" if incident.provisional else incident.model_version
    drivers = ", ".join(name for name, _, _ in incident.top_features[:3]) or "n/a"
    return (
        f"[{label}] {incident.tactic} in the tree of {basename(incident.root.image) or incident.root.key} "
        f"({len(incident.nodes)} processes); {basename(incident.scored.image) or incident.scored.key} "
        f"scored {incident.score:.2f}; drivers: {drivers}"
    )
