"""Fleet keys (init, rotation window, file modes), identity bundles as the agent loads them, and the
fleet view `ringfence devices list` folds from the devices topic."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.enforcement_errors import KeyringError
from agents.enforcement_plugin import load_keyring
from agents.settings import AgentSettings
from pipeline.commands.devices import entry_json, render_table
from pipeline.commands.keys import parse_duration
from pipeline.enroll import (
    EnrollmentError,
    FleetView,
    KeysFolder,
    device_record,
    issue_identity,
    write_bundle,
)
from schemas.codec import encode
from schemas.common import Mode
from schemas.devices import Heartbeat
from schemas.errors import UnknownKey
from schemas.identity import load_identity
from schemas.signing import check_verdict, sign_verdict
from schemas.verdicts import Disposition, Verdict, VerdictSource

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
SHA = "ab" * 32


def verdict_at(issued_at: datetime) -> Verdict:
    return Verdict(artifact_id=SHA, disposition=Disposition.MALICIOUS, source=VerdictSource.ML,
                   issued_at=issued_at)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- keys -------------------------------------------------------------------------------------------


def test_init_writes_a_private_key_only_its_owner_reads_and_a_keyring_trusting_it(tmp_path: Path) -> None:
    folder = KeysFolder(tmp_path / "keys")
    key = folder.init(T0)
    assert mode_of(folder.path) == 0o700
    assert mode_of(folder.signing_key_path) == 0o600
    assert [k.key_id for k in folder.keyring_file().keys] == [key.key_id]
    assert folder.signing_key().key_id == key.key_id
    check_verdict(sign_verdict(verdict_at(T0), key), keyring=folder.keyring_file().keyring(), now=T0)


def test_init_refuses_to_replace_a_key_unless_forced(tmp_path: Path) -> None:
    folder = KeysFolder(tmp_path)
    first = folder.init(T0)
    with pytest.raises(EnrollmentError, match="keys rotate"):
        folder.init(T0)
    assert folder.signing_key().key_id == first.key_id
    assert folder.init(T0, force=True).key_id != first.key_id


def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    folder = KeysFolder(tmp_path)
    folder.init(T0)
    folder.signing_key_path.chmod(0o644)
    with pytest.raises(EnrollmentError, match="accessible by others"):
        folder.signing_key()


def test_rotation_trusts_both_keys_in_the_window_and_old_verdicts_after_it(tmp_path: Path) -> None:
    folder = KeysFolder(tmp_path)
    old = folder.init(T0)
    new, retired = folder.rotate(T0 + timedelta(days=30), timedelta(hours=2))
    keyring = folder.keyring_file().keyring()
    assert folder.signing_key().key_id == new.key_id != old.key_id
    assert retired.not_after == T0 + timedelta(days=30, hours=2)
    assert retired.created_at == T0  # the entry keeps when the key was made
    in_window = T0 + timedelta(days=30, hours=1)
    for key in (old, new):  # during the window, both verify
        check_verdict(sign_verdict(verdict_at(in_window), key), keyring=keyring, now=in_window)
    later = T0 + timedelta(days=400)
    check_verdict(sign_verdict(verdict_at(T0), old), keyring=keyring, now=later)  # still blocks
    with pytest.raises(UnknownKey, match="retired"):
        check_verdict(sign_verdict(verdict_at(later), old), keyring=keyring, now=later)


def test_rotating_twice_keeps_every_retired_key(tmp_path: Path) -> None:
    folder = KeysFolder(tmp_path)
    folder.init(T0)
    folder.rotate(T0 + timedelta(days=1), timedelta(0))
    folder.rotate(T0 + timedelta(days=2), timedelta(hours=1))
    entries = folder.keyring_file().keys
    assert len(entries) == 3
    assert [e.not_after is None for e in entries] == [False, False, True]


def test_rotation_needs_an_initialised_folder_and_a_non_negative_overlap(tmp_path: Path) -> None:
    with pytest.raises(EnrollmentError, match="keys init"):
        KeysFolder(tmp_path).rotate(T0, timedelta(hours=1))
    KeysFolder(tmp_path).init(T0)
    with pytest.raises(EnrollmentError, match="negative"):
        KeysFolder(tmp_path).rotate(T0, timedelta(hours=-1))


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200),
                                               ("7d", 604800), ("0", 0), ("1.5h", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7w", "-1d", "d", "1 2h"])
def test_bad_durations_are_refused(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


# -- identity bundles -------------------------------------------------------------------------------


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    keys = KeysFolder(tmp_path / "keys")
    keys.init(T0)
    identity = issue_identity("ws-042.corp", group="finance", mode=Mode.BLOCK, now=T0)
    write_bundle(tmp_path / "ws-042", identity, keys.keyring_file())
    return tmp_path / "ws-042"


def test_the_agent_loads_its_identity_and_the_fleet_keyring_from_the_bundle(bundle: Path) -> None:
    settings = AgentSettings(identity_dir=bundle)
    assert (settings.device_id, settings.group, settings.mode) == ("ws-042.corp", "finance", "block")
    assert settings.public_key_path == bundle / "keyring.json"
    assert len(load_keyring(settings.public_key_path).keys) == 1
    identity, _ = load_identity(bundle)
    assert identity.kafka.sasl_username == "ws-042.corp" and identity.kafka.sasl_password is None
    env = (bundle / "agent.env").read_text()
    assert "RINGFENCE_AGENT_DEVICE_ID=ws-042.corp" in env and "RINGFENCE_AGENT_MODE=block" in env


def test_explicit_settings_override_the_bundle_but_not_its_device_id(bundle: Path) -> None:
    assert AgentSettings(identity_dir=bundle, mode="audit").mode == "audit"
    with pytest.raises(ValueError, match=r"is for device ws-042\.corp"):
        AgentSettings(identity_dir=bundle, device_id="someone-else")


def test_a_damaged_bundle_is_a_settings_error_naming_the_file(bundle: Path) -> None:
    (bundle / "identity.json").write_text('{"format": "ringfence.identity.v1", "device_id": "x"}')
    with pytest.raises(ValueError, match=r"identity.json: group"):
        AgentSettings(identity_dir=bundle)
    (bundle / "identity.json").unlink()
    with pytest.raises(ValueError, match="cannot read"):
        AgentSettings(identity_dir=bundle)


def test_a_keyring_with_a_key_that_is_not_ed25519_cannot_be_loaded(bundle: Path) -> None:
    path = bundle / "keyring.json"
    path.write_text(path.read_text().replace('"public_key": "', '"public_key": "x', 1)[:-1])
    with pytest.raises(KeyringError):
        load_keyring(path)


def test_a_bundle_is_not_overwritten_without_force(bundle: Path, tmp_path: Path) -> None:
    identity = issue_identity("ws-042.corp", group="hr", mode=Mode.AUDIT, now=T0)
    keyring = KeysFolder(tmp_path / "keys").keyring_file()
    with pytest.raises(EnrollmentError, match="--force"):
        write_bundle(bundle, identity, keyring)
    write_bundle(bundle, identity, keyring, force=True)
    assert AgentSettings(identity_dir=bundle).group == "hr"


@pytest.mark.parametrize(("device_id", "group"), [("bad id", "g"), ("ok", "bad group!"), ("", "g")])
def test_malformed_ids_are_refused_at_enrollment(device_id: str, group: str) -> None:
    with pytest.raises(ValueError):
        issue_identity(device_id, group=group, mode=Mode.AUDIT, now=T0)


# -- the fleet view ---------------------------------------------------------------------------------


def beat(device: str, ts: datetime, *, version: int = 3, size: int = 2, mode: str = "block") -> bytes:
    return encode(Heartbeat(device_id=device, hostname=f"{device}.local", platform="linux", group="finance",
                            mode=Mode(mode), agent_version="0.1.0", blocklist_version=version,
                            blocklist_size=size, ts=ts))


def enrolled(device: str, mode: Mode = Mode.BLOCK) -> bytes:
    return encode(device_record(issue_identity(device, group="finance", mode=mode, now=T0)))


def test_a_heartbeat_after_enrollment_makes_the_device_seen() -> None:
    view = FleetView.fold([(b"a", enrolled("a")), (b"a", beat("a", T0 + timedelta(minutes=1)))])
    (entry,) = view.rows()
    assert entry.enrolled_at == T0 and entry.last_seen == T0 + timedelta(minutes=1)
    assert (entry.agent_version, entry.blocklist_version, entry.blocklist_size) == ("0.1.0", 3, 2)
    assert entry.hostname == "a.local"


def test_enrolled_but_never_seen_devices_say_so() -> None:
    (entry,) = FleetView.fold([(b"b", enrolled("b"))]).rows()
    assert entry.last_seen is None and entry.agent_version is None
    table = render_table([entry], head=5, now=T0)
    assert "never" in table.splitlines()[1]


def test_an_older_heartbeat_does_not_roll_the_view_back() -> None:
    view = FleetView.fold([(b"a", beat("a", T0 + timedelta(minutes=2), version=9)),
                           (b"a", beat("a", T0 + timedelta(minutes=1), version=4))])
    assert view.devices["a"].blocklist_version == 9


def test_re_enrollment_keeps_what_the_device_last_reported() -> None:
    view = FleetView.fold([(b"a", enrolled("a")), (b"a", beat("a", T0 + timedelta(minutes=1))),
                           (b"a", enrolled("a", Mode.AUDIT))])
    entry = view.devices["a"]
    assert entry.fleet_mode is Mode.AUDIT and entry.mode is Mode.BLOCK  # agent not yet told
    assert entry.last_seen == T0 + timedelta(minutes=1)
    assert "block (enrolled audit)" in render_table([entry], head=3, now=T0)


def test_heartbeat_only_devices_tombstones_and_bad_records() -> None:
    view = FleetView.fold([(b"c", beat("c", T0)), (b"d", enrolled("d")), (b"d", None),
                           (b"e", b"{not json"), (b"e", b'{"device_id": "e"}')])
    assert sorted(view.devices) == ["c"]
    assert view.devices["c"].enrolled_at is None
    assert view.bad_records == 2


def test_the_table_shows_blocklist_lag_against_the_verdict_topic() -> None:
    view = FleetView.fold([(b"a", beat("a", T0, version=3)), (b"b", beat("b", T0, version=7))])
    lines = render_table(view.rows(), head=7, now=T0 + timedelta(seconds=42)).splitlines()
    assert lines[0].split() == ["DEVICE", "GROUP", "MODE", "LAST", "SEEN", "AGENT", "BLOCKLIST"]
    assert "42s ago" in lines[1] and "4 behind" in lines[1]
    assert lines[2].endswith("current")
    assert entry_json(view.devices["a"], 7)["blocklist_behind"] == 4


# -- the command line (no broker needed for these paths) --------------------------------------------


def test_keys_cli_init_rotate_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    keys = str(tmp_path / "keys")
    assert main(["keys", "init", "--dir", keys]) == 0
    assert main(["keys", "init", "--dir", keys]) == 2  # refused, the key is kept
    assert main(["keys", "rotate", "--dir", keys, "--overlap", "1h"]) == 0
    capsys.readouterr()
    assert main(["keys", "show", "--dir", keys]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 3 and "rotating out" in shown[1] and "active (signs)" in shown[2]


def test_enroll_cli_refuses_bad_input_before_touching_kafka(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    keys = str(tmp_path / "keys")
    no_broker = ["--bootstrap", "127.0.0.1:1"]
    assert main(["devices", "enroll", "ws-1", "--group", "g", "--mode", "block", "--keys-dir", keys,
                 *no_broker]) == 2
    assert "keys init" in capsys.readouterr().err
    assert main(["keys", "init", "--dir", keys]) == 0
    assert main(["devices", "enroll", "ws 1", "--group", "g", "--mode", "block", "--keys-dir", keys,
                 "--out", str(tmp_path / "b"), *no_broker]) == 2
    assert "cannot enroll 'ws 1': device_id" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_enrolling_without_a_mode_leaves_the_device_to_its_group(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.cli import main
    from pipeline.commands import devices
    from schemas.devices import DeviceRecord

    published: list[DeviceRecord] = []

    async def publish(_kafka: object, _topic: str, record: DeviceRecord, timeout_s: float = 15.0) -> None:
        published.append(record)

    monkeypatch.setattr(devices, "publish_device", publish)
    keys, out = str(tmp_path / "keys"), tmp_path / "ws-1"
    assert main(["keys", "init", "--dir", keys]) == 0
    assert main(["devices", "enroll", "ws-1", "--group", "servers", "--keys-dir", keys, "--out", str(out),
                 "--bootstrap", "127.0.0.1:1"]) == 0
    (record,) = published
    assert record.group == "servers" and record.mode_override is None
    identity, _ = load_identity(out)
    assert identity.mode is None
    assert "RINGFENCE_AGENT_MODE=" not in (out / "agent.env").read_text()
    assert AgentSettings(identity_dir=out).mode == "audit"  # the agent's local default
    assert main(["devices", "enroll", "ws-2", "--group", "servers", "--mode", "block", "--keys-dir", keys,
                 "--out", str(tmp_path / "ws-2"), "--bootstrap", "127.0.0.1:1"]) == 0
    assert published[1].mode_override is Mode.BLOCK
    (entry,) = FleetView.fold([(b"ws-1", encode(record))]).rows()
    assert entry.fleet_mode is None and "(enrolled" not in render_table([entry], head=0, now=T0)


# -- enrollment survives compaction of the devices topic -------------------------------------------


def agent_heartbeat(settings: AgentSettings) -> tuple[str, bytes]:
    """The heartbeat the agent's run loop publishes with these settings."""
    from types import SimpleNamespace

    from agents.commands.run import AgentContext, _heartbeat

    publisher = SimpleNamespace(spool=SimpleNamespace(pending_events=0))
    context = AgentContext(settings=settings, kafka=None, publisher=publisher)  # type: ignore[arg-type]
    return _heartbeat(context, None)  # type: ignore[arg-type]


def test_the_latest_heartbeat_alone_still_names_the_enrolled_group_and_override(bundle: Path) -> None:
    from pipeline.live_policy import DeviceDirectory

    settings = AgentSettings(identity_dir=bundle)
    assert (settings.enrolled_at, settings.mode_override) == (T0, "block")
    key, value = agent_heartbeat(settings)
    enrollment = encode(device_record(load_identity(bundle)[0]))
    assert FleetView.fold([(key.encode(), enrollment), (key.encode(), value)]).devices  # both still fold
    compacted = [(key.encode(), value)]  # what compaction keeps: the latest value for the key
    (entry,) = FleetView.fold(compacted).rows()
    assert (entry.group, entry.fleet_mode, entry.enrolled_at) == ("finance", Mode.BLOCK, T0)
    directory = DeviceDirectory()
    for k, v in compacted:
        directory.apply(k, v)
    assert dict(directory.groups) == {"ws-042.corp": "finance"}
    assert dict(directory.modes) == {"ws-042.corp": Mode.BLOCK}


def test_a_heartbeat_from_a_device_following_its_group_restates_no_override(tmp_path: Path) -> None:
    from pipeline.live_policy import DeviceDirectory

    keys = KeysFolder(tmp_path / "keys")
    keys.init(T0)
    write_bundle(tmp_path / "b", issue_identity("ws-7", group="servers", now=T0), keys.keyring_file())
    key, value = agent_heartbeat(AgentSettings(identity_dir=tmp_path / "b"))
    directory = DeviceDirectory()
    earlier = issue_identity("ws-7", group="servers", mode=Mode.BLOCK, now=T0 - timedelta(1))
    directory.apply(key.encode(), encode(device_record(earlier)))
    directory.apply(key.encode(), value)  # the newer enrollment (no override) replaces the older one
    assert dict(directory.groups) == {"ws-7": "servers"} and dict(directory.modes) == {}
    (entry,) = FleetView.fold([(key.encode(), value)]).rows()
    assert entry.group == "servers" and entry.fleet_mode is None and entry.enrolled_at == T0


def test_a_stale_bundle_heartbeat_does_not_undo_a_re_enrollment(bundle: Path) -> None:
    from pipeline.live_policy import DeviceDirectory

    key, value = agent_heartbeat(AgentSettings(identity_dir=bundle))  # enrolled at T0 with block
    later = device_record(issue_identity("ws-042.corp", group="hr", mode=Mode.AUDIT, now=T0 + timedelta(1)))
    directory = DeviceDirectory()
    directory.apply(key.encode(), encode(later))
    directory.apply(key.encode(), value)
    assert directory.modes["ws-042.corp"] is Mode.AUDIT  # the newer enrollment holds
    view = FleetView.fold([(key.encode(), encode(later)), (key.encode(), value)])
    assert view.devices["ws-042.corp"].fleet_mode is Mode.AUDIT
