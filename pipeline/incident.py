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

An alert is also written once: the values handed to pydantic are already its JSON values (times as
`UtcTimestamp` text, sha256 lower-cased, every field in order), so `orjson.dumps` of them is the very
bytes the validated model would dump to, and `pipeline.outputs` sends those (`WRITTEN`) instead of
dumping the model again; commands and verdicts are signed from their values likewise (`VALUES`).
Decoded evidence is handed over as the models it stands for, built without validating the decoded
events again (`pipeline.evidence`: the decoder proved them), and written from its own JSON (msgspec's,
the same bytes as the model's dump). Before, every alert was dumped again in the outputs and each
evidence event was validated into a model by itself: ~200 -> ~100 us of CPU per incident in place
(BENCHMARKS.md, Pipeline, "Session H — the incident path"; tests/unit/test_incident_json.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import islice
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import orjson

from pipeline.evidence import evidence_models
from pipeline.lexicon import NON_ARTIFACT_CLASSES, ImageClass, Location, basename, location
from schemas.alerts import Alert, AlertAction, Tactic, detection_name
from schemas.codec import encode
from schemas.commands import Command, CommandAction
from schemas.common import SCHEMA_VERSION, Mode, Platform, format_utc
from schemas.events import BehaviorEvent
from schemas.fastcodec import FastEvent
from schemas.verdicts import Verdict

MAX_SNAPSHOT_NODES = 512
MAX_SNAPSHOT_EVIDENCE = 256
_STRIP_PREFIXES = ("self_", "desc_", "anc_", "own_", "sub_", "img_", "pair_")
T = TypeVar("T")
_FAST_JSON = msgspec.json.Encoder()


class Written(Generic[T]):
    """What a decision was validated from, held by identity until the outputs take it.

    An alert's JSON is written once (`_alert`) and the model validated from the same values, so
    `pipeline.outputs` sends those bytes instead of dumping the model again; a command's JSON values
    are signed as they are (`schemas.signing.signed_json_of`). Bounded: decisions nobody writes out
    (hunting, tests, `bench.core_replay`) push the older half out once the limit is reached; a decision
    not found is dumped as before (the same bytes).
    """

    def __init__(self, limit: int = 256) -> None:
        self._held: dict[int, tuple[object, T]] = {}  # insertion-ordered: the first key is the oldest
        self._limit = limit

    def keep(self, model: object, written: T) -> None:
        """Hold `written` for `model` (the model itself is held too, so its id cannot be reused meanwhile).

        At the limit the older half goes at once, the newer half copied into a fresh dict: deleting the
        oldest entry per call left a hole at the dict's front, which finding the next oldest walked over
        again (up to ~400 slots per alert once full: 1.76 -> 1.37 us per `keep` in `bench.core_replay`).
        """
        held = self._held
        if len(held) >= self._limit:
            held = self._held = dict(islice(held.items(), len(held) // 2, None))
        held[id(model)] = (model, written)

    def take(self, model: object) -> T | None:
        """What is held for this very object, once; None when there is nothing."""
        held = self._held.pop(id(model), None)
        return held[1] if held is not None and held[0] is model else None


WRITTEN: Written[bytes] = Written()
"""Alerts' JSON bytes."""
VALUES: Written[dict[str, Any]] = Written()
"""Signed records' JSON values, unsigned (`pipeline.policy`)."""


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
        return _variant(self.top_features[0][0] if self.top_features else None)

    @property
    def name(self) -> str:
        """`Behavior:<Win32|Linux>/<Tactic>.<Variant>!ml` (made once: the alert, commands and verdict
        all carry it; the same few names recur over incidents: remembered per platform, tactic and
        strongest feature); ValueError when the platform, tactic or variant cannot make one."""
        if self._name is None:
            feature = self.top_features[0][0] if self.top_features else None
            object.__setattr__(self, "_name", _detection_name(self.platform, self.tactic, feature))
        return str(self._name)

    @property
    def provisional(self) -> bool:
        """Scored by a stand-in model."""
        return "provisional" in self.model_version


@lru_cache(maxsize=1024)
def _variant(feature: str | None) -> str:
    if feature is None:
        return "Gen"
    for prefix in _STRIP_PREFIXES:
        feature = feature.removeprefix(prefix)
    return "".join(part.capitalize() for part in feature.split("_") if part)[:64] or "Gen"


@lru_cache(maxsize=1024)
def _detection_name(platform: str, tactic: str, feature: str | None) -> str:
    return detection_name(Platform(platform), Tactic(tactic), _variant(feature))


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


@lru_cache(maxsize=256)
def utc(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime (remembered: a flush's decisions share their clock)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@lru_cache(maxsize=256)
def utc_text(value: datetime) -> str:
    """`schemas.common.UtcTimestamp`'s text of a datetime, as the contracts write it (remembered: every
    decision of a flush is created at the flush's time)."""
    return format_utc(value)


@lru_cache(maxsize=4096)
def ms_text(ms: int) -> str:
    """`utc_text(utc(ms))`, remembered: a flush's decisions share their clock, an alert's times its nodes'.
    A node's time is mostly new, so it is formatted straight from the datetime: not through `utc`'s and
    `utc_text`'s memories, which would keep it twice more for nothing (and push the flush's clock out)."""
    return format_utc(datetime.fromtimestamp(ms / 1000, tz=UTC))


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
            {"action": AlertAction.PUBLISH_VERDICT, "target": artifact.sha256.lower(), "command_id": None,
             "audited": True},
        ]  # fmt: skip
    return _alert(incident, alert_id, mode, actions, now)


def _alert(
    incident: Incident, alert_id: str, mode: Mode, actions: list[dict[str, Any]], now: datetime
) -> Alert:
    """The alert as JSON values, validated whole by the contract and written once; the bytes are kept
    for the outputs (`WRITTEN`). Values are given as the contract's own dump writes them (times as
    `UtcTimestamp` text, sha256 lower-cased, floats as floats), so the validated model dumps to
    these very bytes (tests/unit/test_incident_json.py). Evidence is validated inside that one call
    (a decoded event as the model it stands for, built without validating it again: `pipeline.evidence`)
    and written from its own JSON."""
    nodes = incident.nodes[:MAX_SNAPSHOT_NODES]
    threshold = float(incident.threshold)
    if not math.isfinite(threshold):  # JSON has no NaN: orjson would write null, an absent threshold
        raise ValueError(f"alert {alert_id}: threshold {threshold} is not a finite number")
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "alert_id": alert_id, "device_id": incident.device_id,
        "hostname": None, "platform": incident.platform, "detection_name": incident.name,
        "tactic": incident.tactic, "techniques": incident.techniques[:64],
        "score": _probability(incident.score),
        "tactic_scores": _probabilities(incident.tactic_scores),
        "threshold": threshold, "model_version": incident.model_version,
        "feature_version": incident.feature_version, "artifact_sha256": sha256_text(incident.scored.sha256),
        "artifact_path": incident.scored.image or None, "process_tree": _snapshot(incident, nodes),
        "top_features": [{"name": n, "value": float(v), "contribution": float(c)} for n, v, c in
                         incident.top_features[:64]],
        "mode": mode, "actions": actions,
        "first_seen": ms_text(_first_ms(nodes)), "last_seen": ms_text(max([n.last_ms for n in nodes])),
        "created_at": utc_text(now),
        "summary": _summary(incident),
    }  # fmt: skip
    snapshot: dict[str, Any] = body["process_tree"]
    evidence = incident.evidence[:MAX_SNAPSHOT_EVIDENCE]
    snapshot["evidence"] = evidence_models(evidence)  # validated as models, then written as JSON
    alert: Alert = _validate_alert(body)
    try:
        snapshot["evidence"] = _evidence_json(evidence)
        data = orjson.dumps(body)
    except (orjson.JSONEncodeError, UnicodeEncodeError) as exc:  # a lone surrogate: a str, but no JSON
        raise ValueError(f"alert {alert_id} cannot be written as JSON: {exc}") from None
    WRITTEN.keep(alert, data)
    return alert


_validate_alert = Alert.__pydantic_validator__.validate_python
"""`Alert.model_validate`, without its Python frame (the same validator, called with the same defaults)."""


def _first_ms(nodes: Sequence[NodeView]) -> int:
    """When the snapshot's first process started (its last event when its start is unknown)."""
    return min([n.last_ms if n.start_ms is None else n.start_ms for n in nodes])


def _probabilities(scores: Mapping[str, float]) -> dict[str, float]:
    """`_probability` of every value: the dict itself when each is already a float in [0, 1] (the model's;
    pydantic copies what it validates, and the body is only read), else a clamped copy."""
    for v in scores.values():
        if type(v) is not float or not 0.0 <= v <= 1.0:
            return {k: _probability(v) for k, v in scores.items()}
    return scores if type(scores) is dict else dict(scores)


def _probability(value: float) -> float:
    value = float(value)
    return value if 0.0 <= value <= 1.0 else min(max(value, 0.0), 1.0)  # NaN stays NaN: refused


def sha256_text(sha256: str | None) -> str | None:
    """A sha256 as the contracts store and write it (`Sha256Hex` lower-cases what it accepts)."""
    return None if sha256 is None else sha256.lower()


def _snapshot(incident: Incident, nodes: tuple[NodeView, ...]) -> dict[str, Any]:
    keys = {n.key for n in nodes}
    scored = incident.scored.key
    return {
        "root_process_key": incident.root.key,
        "nodes": [
            {
                "process_key": n.key, "parent_process_key": n.parent_key, "image": n.image or None,
                "command_line": n.command_line or None, "sha256": sha256_text(n.sha256), "user": n.user,
                "pid": n.pid, "started_at": None if n.start_ms is None else ms_text(n.start_ms),
                "ended_at": None if n.end_ms is None else ms_text(n.end_ms), "scored": n.key == scored,
            }
            for n in nodes
        ],
        "edges": [
            {"parent": n.parent_key, "child": n.key}
            for n in nodes
            if n.parent_key in keys and n.parent_key is not None
        ][:MAX_SNAPSHOT_NODES],
    }  # fmt: skip


def _evidence_json(evidence: tuple[Any, ...]) -> orjson.Fragment | list[orjson.Fragment]:
    """The evidence's JSON array: one msgspec call when every event is a decoded one (the common case;
    msgspec writes an array as orjson does, without spaces), else event by event."""
    if all(type(event) is FastEvent for event in evidence):
        return orjson.Fragment(_FAST_JSON.encode(evidence))
    return [_event_json(e) for e in evidence]


def _event_json(event: Any) -> orjson.Fragment:
    """One evidence event's JSON as `BehaviorEvent`'s dump writes it: a decoded `FastEvent` by msgspec
    (the same bytes: its Structs mirror the contract, field for field), a model by its own dump."""
    if isinstance(event, FastEvent):
        return orjson.Fragment(_FAST_JSON.encode(event))
    if isinstance(event, BehaviorEvent):
        return orjson.Fragment(encode(event))
    raise TypeError(f"evidence must be a BehaviorEvent, not {type(event).__name__}")


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
        {
            "action": AlertAction.PUBLISH_VERDICT,
            "target": v.artifact_id,
            "command_id": None,
            "audited": not enforced,
        }
        for v in verdicts
    ]
    return taken


def _summary(incident: Incident) -> str:
    label = _label(incident.model_version)
    drivers = ", ".join([name for name, _, _ in incident.top_features[:3]]) or "n/a"
    return (
        f"[{label}] {incident.tactic} in the tree of {basename(incident.root.image) or incident.root.key} "
        f"({len(incident.nodes)} processes); {basename(incident.scored.image) or incident.scored.key} "
        f"scored {incident.score:.2f}; drivers: {drivers}"
    )


@lru_cache(maxsize=64)
def _label(model_version: str) -> str:
    """How a summary names the model (remembered: one or two versions score every incident)."""
    return f"PROVISIONAL model {model_version}" if "provisional" in model_version else model_version
