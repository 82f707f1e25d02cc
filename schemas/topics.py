"""Topic names and Kafka connection settings shared by the agent, the pipeline and the tools.

Topic names carry the major version of their schema (`.v1`): a breaking contract change gets a new
topic rather than a silent reinterpretation of old records. The table with partitions and retention
is `deploy/topics.yaml`; this module only names the topics so code never spells them twice.

`KafkaSettings` is the one description of *how to reach* the cluster. It is read from the
environment (prefix `RINGFENCE_KAFKA_`) by each deployable's `main()` and passed down; nothing here
reads the environment at import time. `bootstrap=None` means "no cluster was named": the tools then
use (or start, via `ringfence kafka up`) the local broker at `LOCAL_BOOTSTRAP`.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EVENTS = "ringfence.events.v1"
"""Behaviour events from endpoints; key = device_id."""
EVENTS_DLQ = "ringfence.events.dlq.v1"
"""Records the pipeline rejected, with reason and source coordinates; key = device_id."""
ALERTS = "ringfence.alerts.v1"
"""Alerts for the SOC; key = device_id."""
VERDICTS = "ringfence.verdicts.v1"
"""Compacted fleet blocklist; key = artifact sha256, tombstone = lifted."""
COMMANDS = "ringfence.commands.v1"
"""Commands for one device (kill, quarantine); key = device_id."""
ACTIONS = "ringfence.actions.v1"
"""Results of commands, reported by devices; key = device_id."""
DEVICES = "ringfence.devices.v1"
"""Compacted device registry (enrollment, heartbeat); key = device_id."""
POLICY = "ringfence.policy.v1"
"""Compacted analyst policy changes (group modes, exclusions); key = PolicyUpdate.key."""
AUDIT = "ringfence.audit.v1"
"""Who changed what from the SOC console, and when (schemas.audit.AuditRecord); key = actor."""
WORKER_STATE = "ringfence.worker-state.v1"
"""Compacted per-device detector state of the pipeline workers; key = device_id, partition = its events'."""

ALL_TOPICS: tuple[str, ...] = (
    EVENTS, EVENTS_DLQ, ALERTS, VERDICTS, COMMANDS, ACTIONS, DEVICES, POLICY, AUDIT, WORKER_STATE
)

LOCAL_BOOTSTRAP = "127.0.0.1:9092"
"""Where `ringfence kafka up` listens by default and where tools look when nothing is configured."""

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]


class KafkaSettingsError(ValueError):
    """The Kafka settings are inconsistent (e.g. SASL without a mechanism)."""


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster; env prefix `RINGFENCE_KAFKA_` (e.g. `RINGFENCE_KAFKA_BOOTSTRAP`)."""

    model_config = SettingsConfigDict(env_prefix="RINGFENCE_KAFKA_", frozen=True, extra="ignore")

    bootstrap: str | None = None  # comma-separated host:port list; None = the local broker
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None  # required with SASL_* protocols
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None  # PEM bundle that signs the brokers' certificates
    ssl_certfile: str | None = None  # client certificate (mutual TLS)
    ssl_keyfile: str | None = None  # key of ssl_certfile
    client_id: str = "ringfence"

    @field_validator("bootstrap", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        # `RINGFENCE_KAFKA_BOOTSTRAP=` (set but empty) means "not configured", as in shell scripts.
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistent(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and self.sasl_mechanism is None:
            raise KafkaSettingsError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise KafkaSettingsError(
                f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise KafkaSettingsError("ssl_certfile and ssl_keyfile must be given together")
        return self

    @property
    def is_external(self) -> bool:
        """True when a cluster was named explicitly; nothing local should then be started."""
        return self.bootstrap is not None

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap list to connect to (the local broker's address when none was named)."""
        return self.bootstrap or LOCAL_BOOTSTRAP

    def faust_broker(self) -> str:
        """The broker URL in faust's form (`kafka://h1:9092;h2:9092`)."""
        hosts = [h.strip() for h in self.bootstrap_servers.split(",") if h.strip()]
        return ";".join(f"kafka://{h}" for h in hosts)

    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client TLS context from the configured CA and (optional) client certificate."""
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile is not None:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to aiokafka's producer, consumer and admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls():
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            kwargs["sasl_plain_username"] = self.sasl_username
        if self.sasl_password is not None:
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return kwargs

    def describe(self) -> str:
        """One loggable line; never contains the password."""
        auth = f" sasl={self.sasl_mechanism} user={self.sasl_username}" if self.sasl_mechanism else ""
        where = self.bootstrap_servers if self.is_external else f"{self.bootstrap_servers} (local)"
        return f"kafka {where} protocol={self.security_protocol}{auth} client_id={self.client_id}"
