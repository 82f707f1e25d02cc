"""Model rules a producer can trip over: names, required fields per action, scopes, dead letters, devices."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import codec
from schemas.alerts import Alert, ProcessTreeSnapshot, Tactic, TreeNode, detection_name, parse_detection_name
from schemas.commands import Command, CommandAction, new_command
from schemas.common import Mode
from schemas.deadletter import MAX_RAW_BYTES, DeadLetter
from schemas.devices import DeviceRecord, Heartbeat
from schemas.errors import DecodeError, UnknownKind, ValidationFailed
from schemas.events import BehaviorEvent, EventBatch, EventKind, Platform, ProcessEnd
from schemas.verdicts import Verdict

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("platform", "tactic", "variant", "name"),
    [
        (Platform.WINDOWS, Tactic.CREDENTIAL_ACCESS, "A", "Behavior:Win32/CredentialAccess.A!ml"),
        (
            Platform.LINUX,
            Tactic.COMMAND_AND_CONTROL,
            "Beacon_2",
            "Behavior:Linux/CommandAndControl.Beacon_2!ml",
        ),
        (Platform.WINDOWS, Tactic.GENERIC, "B", "Behavior:Win32/Generic.B!ml"),
    ],
)
def test_detection_names_build_and_parse(platform: Platform, tactic: Tactic, variant: str, name: str) -> None:
    assert detection_name(platform, tactic, variant) == name
    assert parse_detection_name(name) == (platform, tactic, variant)


@pytest.mark.parametrize("variant", ["", "has space", "a!b", "x" * 65, "_lead"])
def test_bad_variants_are_refused(variant: str) -> None:
    with pytest.raises(ValidationFailed):
        detection_name(Platform.LINUX, Tactic.IMPACT, variant)


@pytest.mark.parametrize(
    "name",
    [
        "Behavior:Win64/Impact.A!ml",
        "Behavior:Win32/Spying.A!ml",
        "Behavior:Win32/Impact.A",
        "Trojan:Win32/Impact.A!ml",
    ],
)
def test_foreign_names_do_not_parse(name: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_detection_name(name)


def _alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "alert_id": "a1",
        "device_id": "d1",
        "platform": Platform.LINUX,
        "tactic": Tactic.EXECUTION,
        "detection_name": "Behavior:Linux/Execution.A!ml",
        "score": 0.9,
        "model_version": "m",
        "feature_version": "f",
        "mode": Mode.AUDIT,
        "first_seen": NOW,
        "last_seen": NOW,
        "created_at": NOW,
        "process_tree": ProcessTreeSnapshot(root_process_key="pk", nodes=(TreeNode(process_key="pk"),)),
    }
    return Alert.model_validate({**fields, **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"platform": Platform.WINDOWS},  # name says Linux
        {"tactic": Tactic.IMPACT},  # name says Execution
        {"last_seen": NOW - timedelta(seconds=1)},
        {"score": 1.5},
        {"score": float("nan")},
        {"techniques": ("T12",)},
    ],
)
def test_inconsistent_alerts_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _alert(**changes)


def test_alert_variant_is_read_from_its_name() -> None:
    assert _alert().variant == "A"


@pytest.mark.parametrize(
    ("action", "fields", "ok"),
    [
        (CommandAction.KILL_PROCESS_TREE, {"process_key": "{P}"}, True),
        (CommandAction.KILL_PROCESS_TREE, {"pid": 5}, False),  # a bare pid is never enough
        (CommandAction.QUARANTINE_FILE, {"path": "/tmp/x", "sha256": "ab" * 32}, True),
        (CommandAction.QUARANTINE_FILE, {"path": "/tmp/x"}, False),
        (CommandAction.RESTORE_FILE, {"sha256": "ab" * 32}, True),
        (CommandAction.RESTORE_FILE, {"path": "/tmp/x"}, False),
    ],
)
def test_each_command_action_needs_its_fields(
    action: CommandAction, fields: dict[str, Any], ok: bool
) -> None:
    if ok:
        assert new_command(device_id="d1", action=action, now=NOW, **fields).action is action
    else:
        with pytest.raises(ValidationError):
            new_command(device_id="d1", action=action, now=NOW, **fields)


def test_commands_need_a_non_empty_validity_window_and_fresh_nonces() -> None:
    with pytest.raises(ValidationError):
        new_command(
            device_id="d1", action=CommandAction.RESTORE_FILE, now=NOW, ttl=timedelta(0), sha256="ab" * 32
        )
    first, second = (
        new_command(device_id="d1", action=CommandAction.RESTORE_FILE, now=NOW, sha256="ab" * 32)
        for _ in range(2)
    )
    assert first.nonce != second.nonce and first.command_id != second.command_id


def _verdict(scope: str) -> Verdict:
    return Verdict(artifact_id="AB" * 32, disposition="malicious", source="ml", issued_at=NOW, scope=scope)


@pytest.mark.parametrize(
    ("scope", "device", "group", "applies"),
    [
        ("fleet", "d1", None, True),
        ("group:servers", "d1", "servers", True),
        ("group:servers", "d1", "laptops", False),
        ("group:servers", "d1", None, False),
        ("device:d1", "d1", "servers", True),
        ("device:d1", "d2", "servers", False),
    ],
)
def test_verdict_scope(scope: str, device: str, group: str | None, applies: bool) -> None:
    assert _verdict(scope).applies_to(device, group) is applies


@pytest.mark.parametrize("scope", ["", "everyone", "group:", "device:", "group:a b", "fleet:x"])
def test_malformed_scopes_are_rejected(scope: str) -> None:
    with pytest.raises(ValidationError):
        _verdict(scope)


def test_verdict_artifact_id_is_lower_case_and_only_malicious_blocks() -> None:
    verdict = _verdict("fleet")
    assert verdict.artifact_id == "ab" * 32 and verdict.blocks
    assert not verdict.model_copy(update={"disposition": "lifted"}).blocks


def test_dead_letter_keeps_error_context_and_coordinates() -> None:
    raw = b'{"events":[{"payload":{"kind":"teleport"}}]}'
    try:
        codec.decode_record(raw)
    except UnknownKind as exc:
        error = exc
    letter = DeadLetter.for_record(
        raw, error, topic="ringfence.events.v1", partition=3, offset=99, now=NOW, key=b"d1"
    )
    back = codec.decode(DeadLetter, codec.encode(letter))
    assert back.raw() == raw and back.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert (back.error_class, back.source_partition, back.source_offset) == ("UnknownKind", 3, 99)
    assert back.field_path is not None and base64.b64decode(back.key_b64 or "") == b"d1"


def test_dead_letter_truncates_huge_values_but_identifies_them() -> None:
    raw = b"x" * (MAX_RAW_BYTES + 10)
    letter = DeadLetter.for_record(raw, ValueError("boom"), topic="t", partition=0, offset=0, now=NOW)
    assert letter.raw_truncated and letter.raw_size == len(raw) and len(letter.raw()) == MAX_RAW_BYTES
    assert letter.error_class == "ValueError" and len(codec.encode(letter)) < 1 << 20


def test_dead_letter_raw_with_bad_base64_is_a_decode_error() -> None:
    letter = DeadLetter.for_record(b"x", ValueError("e"), topic="t", partition=0, offset=0, now=NOW)
    with pytest.raises(DecodeError):
        letter.model_copy(update={"raw_b64": "abc"}).raw()


def _heartbeat(ts: datetime, version: str = "2.0") -> Heartbeat:
    return Heartbeat(
        device_id="d1",
        hostname="h",
        platform=Platform.LINUX,
        mode=Mode.BLOCK,
        agent_version=version,
        blocklist_version=7,
        blocklist_size=3,
        ts=ts,
    )


def test_device_record_takes_newer_heartbeats_only() -> None:
    record = DeviceRecord(
        device_id="d1",
        hostname="old",
        platform=Platform.LINUX,
        effective_mode=Mode.BLOCK,
        agent_version="1.0",
        enrolled_at=NOW,
        last_seen=NOW,
    )
    updated = record.seen(_heartbeat(NOW + timedelta(minutes=1)))
    assert (updated.agent_version, updated.blocklist_version, updated.hostname) == ("2.0", 7, "h")
    assert updated.seen(_heartbeat(NOW, "0.1")) is updated


def test_batch_of_builds_the_envelope_and_refuses_nothing() -> None:
    events = [
        BehaviorEvent(
            event_id=f"e{seq}",
            device_id="d1",
            seq=seq,
            ts=NOW,
            platform=Platform.LINUX,
            process_key="pk",
            payload=ProcessEnd(),
        )
        for seq in (5, 3, 9)
    ]
    batch = EventBatch.of(events)
    assert (batch.device_id, batch.first_seq, batch.last_seq) == ("d1", 3, 9)
    assert batch.events[0].kind is EventKind.PROCESS_END
    with pytest.raises(ValueError):
        EventBatch.of([])


def test_contract_error_text_carries_its_context() -> None:
    error = ValidationFailed("bad seq", field_path="events.1.seq", device_id="d1", event_id="e1")
    assert str(error) == "bad seq (field_path=events.1.seq device_id=d1 event_id=e1)"
    assert error.context() == {"field_path": "events.1.seq", "device_id": "d1", "event_id": "e1"}
    assert error.error_class == "ValidationFailed"


def test_naive_timestamps_are_rejected_in_python_too() -> None:
    with pytest.raises(ValidationError):
        BehaviorEvent(
            event_id="e",
            device_id="d1",
            seq=0,
            ts=datetime(2024, 5, 1),
            platform=Platform.LINUX,
            process_key="pk",
            payload=ProcessEnd(),
        )


def test_models_are_frozen() -> None:
    command = new_command(device_id="d1", action=CommandAction.RESTORE_FILE, now=NOW, sha256="ab" * 32)
    with pytest.raises(ValidationError):
        command.device_id = "d2"  # type: ignore[misc]
    assert isinstance(command, Command)
