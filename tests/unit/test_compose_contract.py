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


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> volume name, for `volume:/path[:ro]` entries."""
    return {entry.split(":")[1]: entry.split(":")[0] for entry in service.get("volumes", [])}


def test_worker_env_names_are_worker_settings_fields_and_its_keys_are_mounted() -> None:
    from pipeline.settings import WorkerSettings
    from pipeline.telemetry import TelemetrySettings

    worker = _compose()["services"]["worker"]
    names = {n for n in worker["environment"] if n.startswith("RINGFENCE_")} - _env_names("RINGFENCE_KAFKA_")
    fields = {f"RINGFENCE_{f.upper()}" for f in WorkerSettings.model_fields}
    fields |= {f"RINGFENCE_OTEL_{f.upper()}" for f in TelemetrySettings.model_fields}
    assert names <= fields, names - fields
    keys_dir = worker["environment"]["RINGFENCE_KEYS_DIR"]
    assert _mounts(worker)[keys_dir] == _mounts(_compose()["services"]["keys"])["/keys"]
    assert worker["depends_on"]["keys"]["condition"] == "service_completed_successfully"


def test_agents_get_the_public_keyring_but_not_the_signing_key() -> None:
    services = _compose()["services"]
    fleet, keys = services["fleet"], services["keys"]
    keyring = Path(fleet["environment"]["RINGFENCE_AGENT_PUBLIC_KEY_PATH"])
    assert _mounts(fleet)[str(keyring.parent)] == _mounts(keys)[str(keyring.parent)]
    assert _mounts(keys)["/keys"] not in _mounts(fleet).values()
    assert fleet["depends_on"]["keys"]["condition"] == "service_completed_successfully"


def test_the_keys_job_creates_a_key_once_and_publishes_the_keyring(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = _compose()["services"]["keys"]["command"][2]
    script = re.sub(r"(^|\s)/(keys|keyring)(?=/|\s|$)", lambda m: f"{m[1]}{tmp_path / m[2]}", script,
                    flags=re.MULTILINE)  # the job's volume mounts, here in tmp_path
    (tmp_path / "keyring").mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for _ in range(2):  # the second run keeps the key (no --force): agents keep trusting it
        subprocess.run(["sh", "-ec", script], check=True, env=env, capture_output=True, timeout=60)
        published = (tmp_path / "keyring" / "keyring.json").read_bytes()
        assert published == (tmp_path / "keys" / "keyring.json").read_bytes()
    assert len(yaml.safe_load(published)["keys"]) == 1
    assert (tmp_path / "keys" / "signing.pem").stat().st_mode & 0o077 == 0


def test_worker_metrics_port_is_a_valid_telemetry_setting_and_exposed_on_the_network() -> None:
    from pipeline.telemetry import TelemetrySettings

    worker = _compose()["services"]["worker"]
    env = {k.removeprefix("RINGFENCE_OTEL_").lower(): v for k, v in worker["environment"].items()
           if k.startswith("RINGFENCE_OTEL_")}
    settings = TelemetrySettings.model_validate(env)
    assert settings.prometheus_port is not None
    assert str(settings.prometheus_port) in [str(p) for p in worker["expose"]]
    assert "ports" not in worker  # replicas would collide on a published host port
