"""Alerts for the SOC on `ringfence.alerts.v1`: what was detected, on which tree, why, and what was done.

An alert must be actionable on its own (a SIEM never joins it back to the events topic), so it
carries a snapshot of the process tree, the evidence events, the features that drove the score and
the model/feature versions that produced it. Detection names follow the convention
`Behavior:<Win32|Linux>/<Tactic>.<Variant>!ml`; `detection_name()` builds them and the model checks
that the name agrees with the alert's platform and tactic.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from schemas.common import (
    SCHEMA_VERSION,
    Contract,
    DeviceId,
    Identifier,
    Mode,
    NonEmptyText,
    Pid,
    Platform,
    Probability,
    SchemaVersion,
    Sha256Hex,
    ShortText,
    Text,
    UtcTimestamp,
)
from schemas.errors import ValidationFailed
from schemas.events import BehaviorEvent


class Tactic(StrEnum):
    """The 12 ATT&CK enterprise tactics the model classifies into, plus Generic (malicious, no tactic)."""

    INITIAL_ACCESS = "InitialAccess"
    EXECUTION = "Execution"
    PERSISTENCE = "Persistence"
    PRIVILEGE_ESCALATION = "PrivilegeEscalation"
    DEFENSE_EVASION = "DefenseEvasion"
    CREDENTIAL_ACCESS = "CredentialAccess"
    DISCOVERY = "Discovery"
    LATERAL_MOVEMENT = "LateralMovement"
    COLLECTION = "Collection"
    COMMAND_AND_CONTROL = "CommandAndControl"
    EXFILTRATION = "Exfiltration"
    IMPACT = "Impact"
    GENERIC = "Generic"


ATTACK_TACTIC_IDS: dict[Tactic, tuple[str, str]] = {
    Tactic.INITIAL_ACCESS: ("TA0001", "Initial Access"),
    Tactic.EXECUTION: ("TA0002", "Execution"),
    Tactic.PERSISTENCE: ("TA0003", "Persistence"),
    Tactic.PRIVILEGE_ESCALATION: ("TA0004", "Privilege Escalation"),
    Tactic.DEFENSE_EVASION: ("TA0005", "Defense Evasion"),
    Tactic.CREDENTIAL_ACCESS: ("TA0006", "Credential Access"),
    Tactic.DISCOVERY: ("TA0007", "Discovery"),
    Tactic.LATERAL_MOVEMENT: ("TA0008", "Lateral Movement"),
    Tactic.COLLECTION: ("TA0009", "Collection"),
    Tactic.COMMAND_AND_CONTROL: ("TA0011", "Command and Control"),
    Tactic.EXFILTRATION: ("TA0010", "Exfiltration"),
    Tactic.IMPACT: ("TA0040", "Impact"),
}
"""ATT&CK id and display name of each real tactic (Generic has none)."""

_OS_SEGMENT = {Platform.WINDOWS: "Win32", Platform.LINUX: "Linux"}
_VARIANT = r"[A-Za-z0-9][A-Za-z0-9_]{0,63}"
_TACTICS = "|".join(tactic.value for tactic in Tactic)
DETECTION_NAME = re.compile(
    rf"^Behavior:(?P<os>Win32|Linux)/(?P<tactic>{_TACTICS})\.(?P<variant>{_VARIANT})!ml$"
)

DetectionName = Annotated[
    str, StringConstraints(pattern=rf"^Behavior:(?:Win32|Linux)/(?:{_TACTICS})\.{_VARIANT}!ml$")
]
"""The same rule without named groups, which JSON Schema (ECMA-262) regexes do not spell this way."""
TechniqueId = Annotated[str, StringConstraints(pattern=r"^T[0-9]{4}(\.[0-9]{3})?$")]
"""An ATT&CK technique or sub-technique id, e.g. T1059.001."""


def detection_name(platform: Platform, tactic: Tactic, variant: str) -> str:
    """`Behavior:Win32/CredentialAccess.A!ml` for (windows, CredentialAccess, "A")."""
    name = f"Behavior:{_OS_SEGMENT[Platform(platform)]}/{Tactic(tactic).value}.{variant}!ml"
    if not DETECTION_NAME.match(name):
        raise ValidationFailed(f"variant {variant[:64]!r} is not [A-Za-z0-9_]{{1,64}}", field_path="variant")
    return name


@lru_cache(maxsize=1024)
def parse_detection_name(name: str) -> tuple[Platform, Tactic, str]:
    """Inverse of `detection_name`; raises ValidationFailed for anything else (remembered: every alert's
    validation reads its name, and the same few names recur; an error is not remembered)."""
    match = DETECTION_NAME.match(name)
    if match is None:
        raise ValidationFailed(f"{name[:128]!r} is not Behavior:<Win32|Linux>/<Tactic>.<Variant>!ml",
                               field_path="detection_name")
    platform = next(p for p, segment in _OS_SEGMENT.items() if segment == match["os"])
    return platform, Tactic(match["tactic"]), match["variant"]


class TreeNode(Contract):
    """One process in the snapshot of the tree the model scored."""

    process_key: Identifier
    parent_process_key: Identifier | None = None
    image: Text | None = None  # None when only a child told us about it
    command_line: Text | None = None
    sha256: Sha256Hex | None = None
    user: Text | None = None
    pid: Pid | None = None
    started_at: UtcTimestamp | None = None
    ended_at: UtcTimestamp | None = None
    scored: bool = False  # the process whose subtree produced the alert


class TreeEdge(Contract):
    """Parent -> child link (kept explicit so a SIEM can draw the tree without inferring it)."""

    parent: Identifier
    child: Identifier


class ProcessTreeSnapshot(Contract):
    """The tree as the model saw it, bounded so an alert stays a small record."""

    root_process_key: Identifier
    nodes: Annotated[tuple[TreeNode, ...], Field(min_length=1, max_length=512)]
    edges: Annotated[tuple[TreeEdge, ...], Field(max_length=512)] = ()
    evidence: Annotated[tuple[BehaviorEvent, ...], Field(max_length=256)] = ()


class FeatureContribution(Contract):
    """One feature that drove the score: its value and its contribution (e.g. SHAP) to the logit."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    value: Annotated[float, Field(allow_inf_nan=False)]
    contribution: Annotated[float, Field(allow_inf_nan=False)]


class AlertAction(StrEnum):
    """What the fleet service can do about an alert: the two command actions, or a fleet verdict."""

    KILL_PROCESS_TREE = "kill_process_tree"
    QUARANTINE_FILE = "quarantine_file"
    PUBLISH_VERDICT = "publish_verdict"


class ActionTaken(Contract):
    """What the fleet service decided to do about the alert (in audit mode: would have done)."""

    action: AlertAction
    target: ShortText  # process_key, path or sha256
    command_id: Identifier | None = None
    audited: bool = False  # True: audit mode, nothing was sent


class Alert(Contract):
    """A malicious process tree, for the SOC (key: device_id)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    alert_id: Identifier
    device_id: DeviceId
    hostname: ShortText | None = None
    platform: Platform
    detection_name: DetectionName
    tactic: Tactic
    techniques: Annotated[tuple[TechniqueId, ...], Field(max_length=64)] = ()
    score: Probability  # model probability that the tree is malicious
    tactic_scores: dict[Tactic, Probability] = Field(default_factory=dict)
    threshold: Probability | None = None  # the policy threshold the score crossed
    model_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    feature_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    artifact_sha256: Sha256Hex | None = None  # image of the scored process, when known
    artifact_path: Text | None = None
    process_tree: ProcessTreeSnapshot
    top_features: Annotated[tuple[FeatureContribution, ...], Field(max_length=64)] = ()
    mode: Mode
    actions: Annotated[tuple[ActionTaken, ...], Field(max_length=64)] = ()
    first_seen: UtcTimestamp
    last_seen: UtcTimestamp
    created_at: UtcTimestamp
    summary: NonEmptyText | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Alert:
        """Name agrees with platform and tactic; last_seen is not before first_seen."""
        platform, tactic, _ = parse_detection_name(self.detection_name)
        if platform != self.platform or tactic != self.tactic:
            raise ValueError(
                f"detection_name {self.detection_name} disagrees with {self.platform}/{self.tactic}"
            )
        if self.last_seen < self.first_seen:
            raise ValueError("last_seen is before first_seen")
        return self

    @property
    def variant(self) -> str:
        """The `<Variant>` part of the detection name."""
        return parse_detection_name(self.detection_name)[2]
