"""The SOC tools' exception tree; one root, each error says which alert, device or request it concerns.

    SocError                  root; never raised itself
    ├── AlertNotFound         `alerts show ID` scanned its bound without finding the alert
    ├── TopicMissing          a topic the tool reads does not exist on the cluster
    ├── ConsoleConfigError    the console cannot start as configured (no token, bad key file)
    └── ActionError           a console action cannot be carried out
        ├── ActionRejected    the request is invalid (bad sha256, unknown alert, no artifact)
        └── ActionUnavailable the console lacks what the action needs (no signing key)
"""

from __future__ import annotations


class SocError(Exception):
    """Root of the SOC tools' errors."""

    def __init__(self, message: str, *, alert_id: str | None = None, device_id: str | None = None) -> None:
        context = ", ".join(f"{k} {v}" for k, v in (("alert", alert_id), ("device", device_id)) if v)
        super().__init__(f"{message} ({context})" if context else message)
        self.message = message
        self.alert_id = alert_id
        self.device_id = device_id


class AlertNotFound(SocError):
    """No alert with this id within the scanned records."""


class TopicMissing(SocError):
    """The topic does not exist on the cluster."""


class ConsoleConfigError(SocError):
    """The console's configuration cannot work (e.g. no token to authenticate analysts with)."""


class ActionError(SocError):
    """A console action cannot be carried out."""


class ActionRejected(ActionError):
    """The analyst's request is invalid; nothing was published."""


class ActionUnavailable(ActionError):
    """The console lacks something the action needs (a signing key); nothing was published."""
