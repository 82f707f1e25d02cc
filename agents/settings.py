"""`AgentSettings`: the one frozen configuration of an endpoint agent (env prefix `RINGFENCE_AGENT_`).

Read once in `ringfence-agent run` (`AgentSettings()`), logged once with `describe()`, and passed
down; no other module reads the environment. How to reach Kafka (bootstrap, TLS, SASL) is the
shared `schemas.topics.KafkaSettings` (prefix `RINGFENCE_KAFKA_`), read beside it.
List settings accept JSON (`["/etc","/tmp"]`) or a comma-separated string (`/etc,/tmp`).
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.topics import ACTIONS, COMMANDS, DEVICES, EVENTS, POLICY, VERDICTS

__all__ = ["AgentSettings", "default_device_id"]

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._:@-]+")

CommaList = Annotated[tuple[str, ...], NoDecode]


def default_device_id() -> str:
    """The host name, made to fit the contract's device id pattern (`ws-042.corp` stays as is)."""
    name = _NOT_ALLOWED.sub("-", socket.gethostname()).strip("-._:@")[:128]
    return name if name and _DEVICE_ID.match(name) else "linux-host"


class AgentSettings(BaseSettings):
    """Everything an agent process is configured with; one field, one comment."""

    model_config = SettingsConfigDict(env_prefix="RINGFENCE_AGENT_", frozen=True, extra="ignore")

    device_id: str = Field(default_factory=default_device_id, pattern=_DEVICE_ID.pattern, max_length=128)
    group: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # policy is set per group
    mode: Literal["audit", "block"] = "audit"  # audit: report what would be done; block: act
    sources: CommaList = ("linux",)  # event sources to run (see `agents.commands.run.SOURCE_BUILDERS`)

    # live Linux collection
    watch_paths: CommaList = ()  # folders watched recursively for file events
    process_mode: Literal["auto", "netlink", "poll"] = "auto"  # auto: netlink, else /proc polling
    # auto: fanotify (file events carry the writing process; root, Linux >= 5.17), else inotify.
    # inotify by default for now: the trained model has not seen attributed Linux file events, and
    # with them the live demo attack's alert names the child that wrote (cp) in ~1 run in 5
    file_mode: Literal["auto", "fanotify", "inotify"] = "inotify"
    proc_poll_interval_s: float = Field(0.5, gt=0)
    net_enabled: bool = True  # outbound TCP connections from /proc/net/tcp{,6}
    net_interval_s: float = Field(1.0, gt=0)
    hash_max_bytes: int = Field(256 << 20, ge=0)  # executables larger than this are not hashed

    # Windows Sysmon / Security logs (source "sysmon")
    sysmon_paths: CommaList = ()  # .evtx / JSON Lines files, or folders searched for them
    sysmon_follow: bool = False  # keep reading JSON Lines files as they grow (tail -F); else read once
    sysmon_poll_interval_s: float = Field(0.5, gt=0)  # follow: longest wait between checks for lines
    # agent: every event is this agent's device_id (its commands reach it); record: the host name in
    # each record (a collector shipping the logs of many Windows hosts)
    sysmon_device: Literal["agent", "record"] = "agent"

    # replay of recorded BehaviorEvent JSON Lines (source "replay"; events keep their device ids)
    replay_paths: CommaList = ()  # files, played one after the other
    replay_speed: float = Field(1.0, ge=0)  # 1: recorded speed, 10: ten times faster, 0: no waiting
    replay_retime: bool = False  # shift event times so the first event happens now (spacing kept)

    # spool and publishing
    spool_dir: Path = Path("/var/lib/ringfence/spool")
    spool_max_bytes: int = Field(256 << 20, gt=0)  # past this, sources are blocked (never dropped)
    spool_sync: Literal["full", "normal"] = "full"  # full: fsync each commit (survives power loss)
    # gather events this long per spool transaction (one fsync); an agent crash loses at most this
    # much (a clean stop commits at once). 100 costs ~1 % of a core more at 100 events/s (BENCHMARKS)
    spool_commit_ms: int = Field(500, ge=0)
    queue_max_events: int = Field(10_000, gt=0)  # in-memory events between sources and spool
    batch_max_events: int = Field(500, gt=0)  # events per EventBatch record
    batch_max_bytes: int = Field(512 << 10, gt=0)  # bytes of events per record (< broker's 1 MiB)
    linger_ms: int = Field(500, ge=0)  # wait this long for a batch to fill (fewer, bigger sends)
    retry_backoff_initial_s: float = Field(0.5, gt=0)
    retry_backoff_max_s: float = Field(30.0, gt=0)
    send_timeout_s: float = Field(30.0, gt=0)  # no ack by then: the batch is retried (at-least-once)
    events_topic: str = EVENTS
    devices_topic: str = DEVICES
    heartbeat_interval_s: float = Field(30.0, gt=0)

    # enforcement (used by the enforcer)
    public_key_path: Path | None = None  # fleet public key: PEM, folder of PEMs, or keyring.json
    # enrollment bundle (`ringfence devices enroll`): supplies device_id, group, mode and
    # public_key_path unless they are set explicitly (a different device_id is an error)
    identity_dir: Path | None = None
    # what the bundle says about enrollment, restated in every heartbeat so the compacted devices
    # topic keeps it after the DeviceRecord is compacted away (not meant to be set by hand)
    enrolled_at: datetime | None = None
    mode_override: Literal["audit", "block"] | None = None  # None: the fleet applies the group's mode
    quarantine_dir: Path = Path("/var/lib/ringfence/quarantine")
    state_dir: Path = Path("/var/lib/ringfence/state")  # local blocklist, followed offsets, used nonces
    enforce: bool = True  # follow verdicts/commands (needs public_key_path); False: collect only
    verdicts_topic: str = VERDICTS
    commands_topic: str = COMMANDS
    actions_topic: str = ACTIONS
    policy_topic: str = POLICY  # signed group/device mode switches (audit/block) the enforcer follows

    # diagnostics
    profile_path: Path | None = None  # write a cProfile (CPU time) of the whole run here when it ends

    @field_validator("sources", "watch_paths", "sysmon_paths", "replay_paths", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @model_validator(mode="before")
    @classmethod
    def _from_identity(cls, data: object) -> object:
        folder = data.get("identity_dir") if isinstance(data, dict) else None
        if not folder or not isinstance(data, dict):
            return data
        from schemas.identity import identity_settings

        return identity_settings(Path(folder), data)

    def describe(self) -> str:
        """One loggable line with every setting (there are no secrets here; Kafka's are in KafkaSettings)."""
        return "agent settings: " + " ".join(f"{name}={value!r}" for name, value in self.model_dump().items())
