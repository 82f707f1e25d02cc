"""The policy a worker applies (file + policy topic + devices topic), its settings and its output records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.errors import PolicyError
from pipeline.live_policy import DeviceDirectory, LivePolicy, load_policy_document
from pipeline.outputs import OutputTopics, SourceCoordinates, dead_letter
from pipeline.settings import WorkerSettings
from pipeline.worker_runtime import WorkerStartError, load_signing_key
from schemas.codec import decode, encode
from schemas.common import Mode, Platform
from schemas.deadletter import DeadLetter
from schemas.devices import DeviceRecord, Heartbeat
from schemas.errors import DecodeError
from schemas.policy_updates import ExclusionChange, ExclusionMatch, GroupModeChange, PolicyUpdate

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY_MS = 24 * 3600 * 1000


def record(device: str, group: str | None, override: Mode | None = None) -> bytes:
    return encode(DeviceRecord(device_id=device, hostname=device, platform=Platform.WINDOWS, group=group,
                               mode_override=override, effective_mode=override or Mode.AUDIT,
                               agent_version="1.0", enrolled_at=T0, last_seen=T0))


def heartbeat(device: str, group: str | None) -> bytes:
    return encode(Heartbeat(device_id=device, hostname=device, platform=Platform.WINDOWS, group=group,
                            mode=Mode.AUDIT, agent_version="1.0", ts=T0))


def update(change: GroupModeChange | ExclusionChange, at: datetime = T0) -> tuple[bytes, bytes]:
    value = PolicyUpdate(update_id=f"u-{at.timestamp()}", change=change, actor="soc:ann", issued_at=at)
    return value.key.encode(), encode(value)


def live(document: dict[str, object] | None = None) -> LivePolicy:
    policy = LivePolicy(DeviceDirectory(), command_ttl_ms=DAY_MS)
    policy.set_document(document or {})
    return policy


def test_a_device_record_puts_the_device_in_its_group_and_heartbeats_keep_its_override() -> None:
    policy = live({"group_modes": {"servers": "block"}})
    policy.directory.apply(b"srv-1", record("srv-1", "servers"))
    policy.directory.apply(b"lap-1", record("lap-1", "laptops", Mode.BLOCK))
    policy.directory.apply(b"lap-1", heartbeat("lap-1", "kiosks"))
    config = policy.config()
    assert config.mode_for("srv-1") is Mode.BLOCK  # its group's mode
    assert config.mode_for("lap-1") is Mode.BLOCK  # its enrollment override survives a heartbeat
    assert config.group_of("lap-1") == "kiosks"
    assert config.mode_for("unknown") is Mode.AUDIT


def test_device_changes_apply_without_rebuilding_the_policy_and_a_tombstone_forgets() -> None:
    policy = live({"group_modes": {"servers": "block"}})
    config = policy.config()
    assert config.mode_for("srv-1") is Mode.AUDIT
    policy.directory.apply(b"srv-1", record("srv-1", "servers"))
    assert config.mode_for("srv-1") is Mode.BLOCK
    policy.directory.apply(b"srv-1", None)
    assert config.mode_for("srv-1") is Mode.AUDIT


def test_the_policy_file_overrides_an_enrollment_mode_and_garbage_is_counted() -> None:
    policy = live({"device_modes": {"lap-1": "audit"}})
    policy.directory.apply(b"lap-1", record("lap-1", None, Mode.BLOCK))
    policy.directory.apply(b"x", b"{not a record")
    assert policy.config().mode_for("lap-1") is Mode.AUDIT
    assert policy.directory.bad_records == 1
    assert dict(policy.config().device_modes) == {"lap-1": Mode.AUDIT}


def test_policy_updates_fold_over_the_file_and_a_tombstone_withdraws_one() -> None:
    policy = live({"default_mode": "audit", "group_modes": {"servers": "audit"}})
    policy.directory.apply(b"srv-1", record("srv-1", "servers"))
    key, value = update(GroupModeChange(group="servers", mode=Mode.BLOCK))
    assert policy.apply_update(key, value)
    assert policy.config().mode_for("srv-1") is Mode.BLOCK
    exclusion = ExclusionChange(exclusion_id="fp-1", match=ExclusionMatch.HASH, pattern="ab" * 32,
                                scope="group:servers")
    ex_key, ex_value = update(exclusion)
    assert policy.apply_update(ex_key, ex_value)
    assert [e.exclusion_id for e in policy.config().exclusions] == ["fp-1"]
    assert policy.apply_update(key, None)
    assert policy.config().mode_for("srv-1") is Mode.AUDIT  # back to the file's mode


def test_an_unreadable_update_changes_nothing() -> None:
    policy = live()
    assert not policy.apply_update(b"group_mode:x", b'{"schema_version": "1.0"}')
    assert not policy.apply_update(b"nothing", None)
    assert policy.bad_updates == 1


def test_ttls_come_from_the_settings_unless_the_document_sets_them() -> None:
    assert live().config().command_ttl_ms == DAY_MS
    assert live({"command_ttl_ms": 60_000}).config().command_ttl_ms == 60_000


@pytest.mark.parametrize(("text", "problem"), [
    ("default_mode: [", "not valid YAML"),
    ("- a list\n", "must be a mapping"),
    ("default_mode: enforce\n", "invalid policy"),
])
def test_a_bad_policy_file_is_refused_with_its_path(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=problem) as caught:
        load_policy_document(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_policy_file_in_yaml_reads_as_the_policy_document(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("default_mode: block\ngroup_modes:\n  labs: audit\n")
    assert load_policy_document(path) == {"default_mode": "block", "group_modes": {"labs": "audit"}}
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy_document(tmp_path / "absent.yaml")


def test_settings_come_from_the_environment_and_hide_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_EVENTS_TOPIC", "t.events")
    monkeypatch.setenv("RINGFENCE_COMMIT_INTERVAL_MS", "250")
    monkeypatch.setenv("RINGFENCE_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("RINGFENCE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RINGFENCE_KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("RINGFENCE_KAFKA_SASL_PASSWORD", "hunter2")
    settings = WorkerSettings()
    assert (settings.events_topic, settings.commit_interval_ms) == ("t.events", 250)
    assert "hunter2" not in settings.describe() and "hunter2" not in repr(settings)
    with pytest.raises(ValidationError):
        settings.commit_interval_ms = 5  # type: ignore[misc]  # frozen


def test_settings_refuse_a_loop_and_a_slow_heartbeat() -> None:
    with pytest.raises(ValidationError, match="also an output topic"):
        WorkerSettings(events_topic="x", alerts_topic="x")
    with pytest.raises(ValidationError, match="heartbeat"):
        WorkerSettings(session_timeout_ms=6000, heartbeat_interval_ms=3000)


def test_without_a_signing_key_the_worker_says_to_run_keys_init(tmp_path: Path) -> None:
    with pytest.raises(WorkerStartError, match="run `ringfence keys init`"):
        load_signing_key(WorkerSettings(keys_dir=tmp_path / "keys"))


def test_a_dead_letter_keeps_a_tombstone_and_its_coordinates() -> None:
    topics = OutputTopics("a", "v", "c", "dlq")
    where = SourceCoordinates("ev", 2, 7)
    out = dead_letter(None, b"dev-1", DecodeError("record has no value"), where, topics, T0)
    letter = decode(DeadLetter, out.value or b"")
    assert (out.topic, out.key) == ("dlq", b"dev-1")
    assert (letter.source_partition, letter.source_offset, letter.raw_size) == (2, 7, 0)


def test_a_device_enrolled_without_a_mode_follows_its_group_when_the_soc_switches_it() -> None:
    from pipeline.enroll import device_record, issue_identity

    policy = live({"group_modes": {"servers": "audit"}})
    plain = device_record(issue_identity("srv-1", group="servers", now=T0))
    pinned = device_record(issue_identity("srv-2", group="servers", mode=Mode.AUDIT, now=T0))
    policy.directory.apply(b"srv-1", encode(plain))
    policy.directory.apply(b"srv-2", encode(pinned))
    assert policy.config().mode_for("srv-1") is Mode.AUDIT
    assert policy.apply_update(*update(GroupModeChange(group="servers", mode=Mode.BLOCK)))
    config = policy.config()
    assert config.mode_for("srv-1") is Mode.BLOCK  # follows the group's switch
    assert config.mode_for("srv-2") is Mode.AUDIT  # its explicit override still wins


def test_with_the_fleet_keyring_only_signed_mode_updates_change_the_policy() -> None:
    from schemas.policy_updates import DeviceModeChange
    from schemas.signing import Keyring, SigningKey, sign_policy_update

    key = SigningKey.generate()
    policy = LivePolicy(DeviceDirectory(), command_ttl_ms=DAY_MS, keyring=Keyring.of([key.trusted()]))
    policy.directory.apply(b"srv-1", record("srv-1", "servers"))

    def made(change: GroupModeChange | DeviceModeChange | ExclusionChange, signer: SigningKey | None,
             at: datetime = T0) -> tuple[bytes, bytes]:
        value = PolicyUpdate(update_id=f"u-{at.timestamp()}", change=change, actor="soc:ann", issued_at=at)
        signed = sign_policy_update(value, signer) if signer is not None else value
        return signed.key.encode(), encode(signed)

    forger = SigningKey.generate(key_id=key.key_id)
    assert not policy.apply_update(*made(GroupModeChange(group="servers", mode=Mode.BLOCK), None))
    assert not policy.apply_update(*made(GroupModeChange(group="servers", mode=Mode.BLOCK), forger))
    assert policy.config().mode_for("srv-1") is Mode.AUDIT and policy.bad_updates == 2
    assert policy.apply_update(*made(GroupModeChange(group="servers", mode=Mode.BLOCK), key))
    assert not policy.apply_update(b"group_mode:servers", None)  # an unsigned tombstone undoes nothing
    assert policy.config().mode_for("srv-1") is Mode.BLOCK
    assert policy.apply_update(*made(DeviceModeChange(device_id="srv-1", mode=Mode.AUDIT), key))
    assert policy.config().mode_for("srv-1") is Mode.AUDIT  # the signed device override wins
    later = datetime(2026, 5, 1, 12, 5, tzinfo=UTC)
    assert policy.apply_update(*made(DeviceModeChange(device_id="srv-1", mode=None), key, later))
    assert policy.config().mode_for("srv-1") is Mode.BLOCK  # override cleared: the group's mode again
    exclusion = ExclusionChange(exclusion_id="x1", match=ExclusionMatch.HASH, pattern="a" * 64, scope="fleet")
    assert policy.apply_update(*made(exclusion, None))  # exclusions need no signature (agents ignore them)
