"""docker-compose.yml speaks the code's language: env names are real settings, commands really parse."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from schemas.topics import KafkaSettings

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def _env_names(prefix: str) -> set[str]:
    names: set[str] = set()
    for service in _compose()["services"].values():
        names |= {n for n in service.get("environment", {}) if n.startswith(prefix)}
    return names


def test_kafka_env_names_are_kafka_settings_fields() -> None:
    names = _env_names("RINGFENCE_KAFKA_")
    assert "RINGFENCE_KAFKA_BOOTSTRAP" in names
    fields = {f"RINGFENCE_KAFKA_{f.upper()}" for f in KafkaSettings.model_fields}
    assert names <= fields, names - fields


def test_agent_env_names_are_agent_settings_fields() -> None:
    from agents.settings import AgentSettings

    names = _env_names("RINGFENCE_AGENT_")
    fields = {f"RINGFENCE_AGENT_{f.upper()}" for f in AgentSettings.model_fields}
    assert names <= fields, names - fields


def test_every_client_service_reaches_kafka_inside_the_network() -> None:
    services = _compose()["services"]
    for name in ("topics", "worker", "fleet"):
        assert services[name]["environment"]["RINGFENCE_KAFKA_BOOTSTRAP"] == "kafka:9092", name
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in advertised


def test_topics_job_command_is_a_valid_ringfence_invocation() -> None:
    from pipeline import commands
    from schemas.cli_support import build_parser

    command = _compose()["services"]["topics"]["command"]
    assert command[0] == "ringfence"
    args = build_parser("ringfence", "", commands).parse_args(command[1:])
    assert args.apply is True
    assert Path(str(args.file).replace("/app", str(REPO))).exists()


def test_broker_image_matches_the_launcher_version() -> None:
    image = _compose()["services"]["kafka"]["image"]
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka\.version>([^<]+)<", pom)
    assert version is not None
    assert image == f"apache/kafka:${{KAFKA_VERSION:-{version.group(1)}}}"
