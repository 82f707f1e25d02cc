"""AgentSettings: environment parsing, defaults that fit the contracts, and refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents.settings import AgentSettings, default_device_id


def test_lists_accept_commas_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_AGENT_WATCH_PATHS", "/etc, /tmp/x")
    monkeypatch.setenv("RINGFENCE_AGENT_SOURCES", '["linux", "sysmon"]')
    settings = AgentSettings()
    assert settings.watch_paths == ("/etc", "/tmp/x")
    assert settings.sources == ("linux", "sysmon")


def test_default_device_id_fits_the_contract_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "_weird host!name_")
    assert default_device_id() == "weird-host-name"
    monkeypatch.setattr("socket.gethostname", lambda: "!!!")
    assert default_device_id() == "linux-host"


@pytest.mark.parametrize(("name", "value"), [("MODE", "enforce"), ("GROUP", "bad group"),
                                             ("DEVICE_ID", "-starts-with-dash"), ("BATCH_MAX_EVENTS", "0")])
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"RINGFENCE_AGENT_{name}", value)
    with pytest.raises(ValidationError):
        AgentSettings()


def test_settings_are_frozen_and_describe_every_field() -> None:
    settings = AgentSettings(device_id="dev-1")
    with pytest.raises(ValidationError):
        settings.mode = "block"  # type: ignore[misc]
    line = settings.describe()
    assert all(f"{name}=" in line for name in AgentSettings.model_fields)
