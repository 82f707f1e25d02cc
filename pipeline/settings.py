"""`WorkerSettings`: the one frozen configuration of a pipeline worker (env prefix `RINGFENCE_`).

Read once by `ringfence worker` (`WorkerSettings()`), logged once with `describe()` (no secret in
it), and passed down; no other pipeline module reads the environment. How to reach Kafka is the
shared `schemas.topics.KafkaSettings` (prefix `RINGFENCE_KAFKA_`), held in `kafka`.

Every topic is a setting so tests and benchmarks run isolated topic sets on a shared broker. The
signing key is the active key of the fleet keys folder that `ringfence keys init|rotate` manage
(`keys_dir`, env `RINGFENCE_KEYS_DIR`, the same variable those commands read).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import (
    ALERTS,
    COMMANDS,
    DEVICES,
    EVENTS,
    EVENTS_DLQ,
    POLICY,
    VERDICTS,
    WORKER_STATE,
    KafkaSettings,
)

__all__ = ["WorkerSettings"]


class WorkerSettings(BaseSettings):
    """Everything a worker process is configured with; one field, one comment."""

    model_config = SettingsConfigDict(env_prefix="RINGFENCE_", frozen=True, extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # RINGFENCE_KAFKA_* (own prefix)
    group_id: str = Field("ringfence-worker", min_length=1, max_length=200)  # events consumer group

    # topics
    events_topic: str = EVENTS
    dlq_topic: str = EVENTS_DLQ
    alerts_topic: str = ALERTS
    verdicts_topic: str = VERDICTS
    commands_topic: str = COMMANDS
    devices_topic: str = DEVICES  # device group / mode override, read whole by every worker
    policy_topic: str = POLICY  # analyst policy updates, read whole by every worker
    state_topic: str = WORKER_STATE  # compacted per-device detector state, partitioned like events

    # batching and timing
    # records per getmany: bounds one loop's work, hence the latency of what arrives meanwhile
    # (agents send up to 500 events per record; a checkpoint slice runs between two polls)
    poll_max_records: int = Field(50, gt=0)
    # score when this many changed processes are pending: a worker behind on its input fills it (at half
    # its maximum rate the 10 ms below comes first); 1,024 rather than 512 halves a backlog's flushes
    # for the same rows (BENCHMARKS.md, Pipeline, "Session AF")
    micro_batch_rows: int = Field(1024, gt=0)
    micro_batch_ms: int = Field(10, ge=0)  # ... or the oldest waited this long (or nothing more is fetched)
    window_ms: int = Field(5 * 60 * 1000, gt=0)  # sliding behaviour window per process
    # flush, write changed devices' state and commit offsets this often: state records cost CPU and
    # bytes (tens of KB per busy device), a longer interval means more events replayed after a crash
    commit_interval_ms: int = Field(5000, gt=0)
    session_timeout_ms: int = Field(10_000, ge=6000)  # a dead worker's partitions move after this
    heartbeat_interval_ms: int = Field(2000, gt=0)
    restore_timeout_s: float = Field(120.0, gt=0)  # reading a partition's state on assignment
    max_state_bytes: int = Field(8 << 20, gt=0)  # one device's serialised state (larger: not saved)

    # signing and policy
    keys_dir: Path = Path(".ringfence/keys")  # fleet keys folder: signing.pem (0600) signs everything
    policy_path: Path | None = None  # YAML/JSON policy: modes per group/device, exclusions
    policy_reload_s: float = Field(5.0, gt=0)  # check the policy file for changes this often
    command_ttl_s: int = Field(24 * 3600, gt=0)  # unless the policy file sets command_ttl_ms
    verdict_ttl_s: int | None = Field(None, gt=0)  # None: a verdict holds until lifted
    model_dir: Path | None = None  # trained model folder; None: the packaged one (or provisional)
    # Force the hand-written provisional rule scorer instead of a trained model (for runs that must
    # not depend on model quality; the demo and the worker default use the trained model).
    provisional_model: bool = False

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        outputs = {self.dlq_topic, self.alerts_topic, self.verdicts_topic, self.commands_topic}
        outputs.add(self.state_topic)
        if self.events_topic in outputs:
            raise ValueError(f"events_topic {self.events_topic} is also an output topic")
        return self

    def describe(self) -> str:
        """One loggable line; the Kafka password never appears (KafkaSettings.describe hides it)."""
        return (
            f"worker group={self.group_id} events={self.events_topic} state={self.state_topic} "
            f"outputs=({self.alerts_topic}, {self.verdicts_topic}, {self.commands_topic}, "
            f"dlq {self.dlq_topic}) devices={self.devices_topic} policy_updates={self.policy_topic} "
            f"batch={self.poll_max_records} records/{self.micro_batch_rows} rows/{self.micro_batch_ms} ms "
            f"window={self.window_ms} ms commit={self.commit_interval_ms} ms "
            f"keys={self.keys_dir} policy={self.policy_path or '-'} "
            f"model={'provisional' if self.provisional_model else self.model_dir or 'packaged'}; "
            f"{self.kafka.describe()}"
        )
