"""Settings of the SOC tools: the console's (env prefix `RINGFENCE_CONSOLE_`) and the Kafka connection.

One frozen object per deployable, read in the command's handler and passed down; the token is a
`SecretStr` so it never appears in a log line or a repr.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import topics
from schemas.cli_support import CliError
from schemas.topics import KafkaSettings

log = logging.getLogger(__name__)


def kafka_settings(bootstrap: str | None = None) -> KafkaSettings:
    """`RINGFENCE_KAFKA_*` from the environment, with `bootstrap` (a CLI flag) taking precedence."""
    try:
        settings = KafkaSettings()
    except ValidationError as exc:
        raise CliError(f"invalid RINGFENCE_KAFKA_* settings: {exc.errors()[0]['msg']}") from None
    return settings.model_copy(update={"bootstrap": bootstrap}) if bootstrap else settings


class ConsoleSettings(BaseSettings):
    """How the web console runs; every field can also be given on the command line."""

    model_config = SettingsConfigDict(env_prefix="RINGFENCE_CONSOLE_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"  # loopback: the console is reached through an SSH tunnel or a proxy
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    token: SecretStr | None = None  # `TOKEN` or `NAME:TOKEN`; NAME is recorded as the actor
    token_file: Path | None = None  # one `TOKEN` or `NAME:TOKEN` per line, mode 0600
    signing_key_file: Path | None = None  # the fleet's Ed25519 key (ringfence keys init); lift/restore
    topic_prefix: str = ""  # isolated topic sets (tests)
    recent_alerts: int = Field(default=200, ge=0, le=100_000)  # loaded per partition at start
    max_alerts: int = Field(default=5000, ge=1, le=1_000_000)  # kept in memory, newest win
    command_ttl_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    max_exclusion_days: int = Field(default=90, ge=1, le=3650)
    allowed_hosts: tuple[str, ...] = ()  # extra Host header values (a reverse proxy's name)

    def describe(self) -> str:
        """One loggable line; never contains a token."""
        key = self.signing_key_file or "none (lift and restore disabled)"
        return (f"console http://{self.host}:{self.port} prefix={self.topic_prefix!r} signing_key={key} "
                f"token={'set' if self.token else 'unset'} token_file={self.token_file}")


@dataclass(frozen=True, slots=True)
class ConsoleTopics:
    """The topics the console reads and writes, with the configured prefix applied."""

    alerts: str
    devices: str
    verdicts: str
    commands: str
    policy: str
    audit: str

    @classmethod
    def with_prefix(cls, prefix: str) -> ConsoleTopics:
        return cls(prefix + topics.ALERTS, prefix + topics.DEVICES, prefix + topics.VERDICTS,
                   prefix + topics.COMMANDS, prefix + topics.POLICY, prefix + topics.AUDIT)
