"""Verdicts on `ringfence.verdicts.v1`: the fleet blocklist, one signed record per artifact.

The topic is compacted and keyed by the artifact id, so its latest value per key *is* the current
decision for that file everywhere; agents read it whole at start and follow it. A `lifted` verdict
(or a tombstone) unblocks. Verdicts are signed like commands, but are not addressed to one device:
`scope` says who applies them and `applies_to()` answers it for a device.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import StringConstraints, model_validator

from schemas.common import (
    SCHEMA_VERSION,
    Contract,
    Identifier,
    KeyId,
    SchemaVersion,
    Sha256Hex,
    ShortText,
    Signature,
    UtcTimestamp,
)

_SCOPE = re.compile(
    r"^(?:fleet|group:[A-Za-z0-9][A-Za-z0-9._-]{0,63}|device:[A-Za-z0-9][A-Za-z0-9._:@-]{0,127})$"
)
Scope = Annotated[str, StringConstraints(pattern=_SCOPE.pattern)]
"""`fleet`, `group:<name>` or `device:<device_id>`."""

FLEET = "fleet"


class ArtifactType(StrEnum):
    """What `artifact_id` identifies."""

    FILE = "file"  # artifact_id is the sha256 of the file's content


class Disposition(StrEnum):
    """The decision about an artifact."""

    MALICIOUS = "malicious"  # block execution, kill running instances (in block mode)
    SUSPICIOUS = "suspicious"  # alert on execution, do not block
    CLEAN = "clean"  # allow; overrides a model verdict (analyst false-positive decision)
    LIFTED = "lifted"  # a previous verdict no longer applies


class VerdictSource(StrEnum):
    """Who decided."""

    ML = "ml"
    RULE = "rule"
    ANALYST = "analyst"


class Verdict(Contract):
    """A signed decision about one artifact (key: artifact_id)."""

    forward_compatible: ClassVar[bool] = False  # signed: never ignore a field (see schemas/README.md)

    schema_version: SchemaVersion = SCHEMA_VERSION
    artifact_id: Sha256Hex
    artifact_type: ArtifactType = ArtifactType.FILE
    disposition: Disposition
    scope: Scope = FLEET
    reason: ShortText = ""
    source: VerdictSource
    alert_id: Identifier | None = None
    detection_name: Annotated[str, StringConstraints(max_length=128)] | None = None
    model_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    feature_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    issued_at: UtcTimestamp
    expires_at: UtcTimestamp | None = None  # None: until lifted
    key_id: KeyId | None = None  # set by signing
    signature: Signature | None = None  # set by signing; covers every other field

    @model_validator(mode="after")
    def _window(self) -> Verdict:
        """A verdict that expires must do so after it was issued."""
        if self.expires_at is not None and self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self

    @property
    def blocks(self) -> bool:
        """Whether an agent in block mode should stop this artifact from running."""
        return self.disposition is Disposition.MALICIOUS

    def applies_to(self, device_id: str, group: str | None) -> bool:
        """Whether this verdict's scope covers a device (in `group`, if it has one)."""
        kind, _, name = self.scope.partition(":")
        if kind == "fleet":
            return True
        if kind == "group":
            return group is not None and name == group
        return name == device_id
