"""Action results on `ringfence.actions.v1`: what a device did (or refused to do), and how fast.

Every command and every applied verdict ends in exactly one ActionResult, including the failures
and refusals (a forged or expired command is *reported*, never silently dropped), so the SOC can
see that containment happened and the fleet latency benchmark can measure it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.common import (
    SCHEMA_VERSION,
    Contract,
    DeviceId,
    Identifier,
    NonEmptyText,
    Pid,
    SchemaVersion,
    Sha256Hex,
    ShortText,
    UtcTimestamp,
)


class ActionKind(StrEnum):
    """Every action a device reports; the first three are `CommandAction` values."""

    KILL_PROCESS_TREE = "kill_process_tree"
    QUARANTINE_FILE = "quarantine_file"
    RESTORE_FILE = "restore_file"
    APPLY_VERDICT = "apply_verdict"  # the blocklist entry was added, changed or removed
    BLOCK_EXECUTION = "block_execution"  # a listed artifact was stopped at process start
    KILL_BLOCKED_INSTANCE = "kill_blocked_instance"  # a running instance of a newly listed artifact
    SET_MODE = "set_mode"  # a signed mode change (group or device) was applied to the enforcer, or refused


class Outcome(StrEnum):
    """How it ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # tried and could not (process gone, access denied, ...)
    REFUSED = "refused"  # did not try: bad signature, expired, wrong target, replay, excluded
    AUDITED = "audited"  # audit mode: would have done it


class ActionResult(Contract):
    """One device's report about one action (key: device_id)."""

    schema_version: SchemaVersion = SCHEMA_VERSION
    result_id: Identifier
    device_id: DeviceId
    action: ActionKind
    outcome: Outcome
    command_id: Identifier | None = None  # for actions ordered by a command
    artifact_id: Sha256Hex | None = None  # for actions caused by a verdict (the verdict's key)
    process_key: Identifier | None = None
    pid: Pid | None = None
    path: NonEmptyText | None = None
    reason: ShortText = ""  # why it failed or was refused, e.g. the ContractError class and message
    error_class: Annotated[str, StringConstraints(max_length=64)] | None = None
    latency_ms: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None  # issued -> done
    ts: UtcTimestamp
