"""Which alerts an analyst wants to see: by device, device group, tactic and minimum score.

Alerts do not carry the device group (a device may move between groups), so a group filter is
answered with the fleet's device -> group map from the devices topic, passed in by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from schemas.alerts import Alert, Tactic


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """All given criteria must hold; an empty filter passes everything."""

    device: str | None = None  # device id or hostname, exact
    group: str | None = None
    tactic: Tactic | None = None
    min_score: float = 0.0

    @property
    def needs_groups(self) -> bool:
        """Whether matching needs the device -> group map."""
        return self.group is not None

    def matches(self, alert: Alert, groups: Mapping[str, str | None] | None = None) -> bool:
        """Whether `alert` passes; `groups` maps device id -> group (unknown devices have none)."""
        if self.device is not None and self.device not in (alert.device_id, alert.hostname):
            return False
        if self.tactic is not None and alert.tactic is not self.tactic:
            return False
        if alert.score < self.min_score:
            return False
        return self.group is None or (groups or {}).get(alert.device_id) == self.group


def parse_tactic(text: str) -> Tactic:
    """A tactic by its name, case-insensitive (`credentialaccess`, `CredentialAccess`); ValueError else."""
    wanted = text.replace("-", "").replace("_", "").replace(" ", "").lower()
    for tactic in Tactic:
        if tactic.value.lower() == wanted:
            return tactic
    names = ", ".join(t.value for t in Tactic)
    raise ValueError(f"unknown tactic {text!r} (one of {names})")
