"""Signatures on verdicts and commands: tampering, expiry, targeting, replay, key rotation, key files."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from schemas_strategies import commands, verdicts

from schemas import codec
from schemas.commands import Command, CommandAction, new_command
from schemas.common import Mode
from schemas.errors import (
    Expired,
    KeyMaterialError,
    Replayed,
    SignatureError,
    UnknownKey,
    WrongTarget,
)
from schemas.keyfiles import (
    load_private_key,
    load_public_key,
    public_key_from_text,
    save_private_key,
    save_public_key,
)
from schemas.policy_updates import GroupModeChange, PolicyUpdate
from schemas.signing import (
    Keyring,
    NonceLedger,
    SigningKey,
    canonical_bytes,
    check_command,
    check_verdict,
    public_key_text,
    sign_command,
    sign_policy_update,
    sign_verdict,
    signed_json,
    verify,
)
from schemas.verdicts import Verdict

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
KEY = SigningKey.generate()
RING = Keyring.of([KEY.trusted()])


def _command(**fields: Any) -> Command:
    defaults: dict[str, Any] = {"process_key": "{PK}", "alert_id": "al-1", "reason": "tree scored 0.99"}
    return new_command(
        device_id="dev-1", action=CommandAction.KILL_PROCESS_TREE, now=NOW, **{**defaults, **fields}
    )


def _verdict(**fields: Any) -> Verdict:
    base: dict[str, Any] = {
        "artifact_id": "ab" * 32,
        "disposition": "malicious",
        "source": "ml",
        "issued_at": NOW,
    }
    return Verdict.model_validate({**base, **fields})


def _check(command: Command, *, device_id: str = "dev-1", now: datetime = NOW, nonces: Any = None) -> None:
    ledger = NonceLedger() if nonces is None else nonces
    check_command(command, keyring=RING, device_id=device_id, now=now, seen_nonces=ledger)


def test_a_signed_command_survives_the_wire_and_passes_every_check() -> None:
    signed = sign_command(_command(), KEY)
    _check(codec.decode(Command, codec.encode(signed)))
    assert signed.key_id == KEY.key_id and signed.signature is not None


def test_non_canonical_json_of_a_signed_record_still_verifies() -> None:
    signed = sign_verdict(_verdict(), KEY)
    pretty = orjson.dumps(orjson.loads(codec.encode(signed)), option=orjson.OPT_INDENT_2)
    check_verdict(codec.decode(Verdict, pretty), keyring=RING, now=NOW)


def test_the_same_instant_in_another_offset_signs_the_same_bytes() -> None:
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert canonical_bytes(_verdict(issued_at=plus_two)) == canonical_bytes(_verdict(issued_at=NOW))


def test_a_verdict_and_a_command_never_share_signed_bytes() -> None:
    assert canonical_bytes(_verdict()).startswith(b"ringfence.verdict.v1\n")
    assert canonical_bytes(_command()).startswith(b"ringfence.command.v1\n")


COMMAND_TAMPER: dict[str, Any] = {
    "schema_version": "1.1",
    "command_id": "other-id",
    "device_id": "dev-2",
    "action": "quarantine_file",
    "process_key": "{OTHER}",
    "pid": 4242,
    "image": "C:\\evil.exe",
    "path": "C:\\Windows\\explorer.exe",
    "sha256": "cd" * 32,
    "alert_id": "al-2",
    "reason": "changed",
    "nonce": "N" * 22,
    "issued_at": NOW - timedelta(minutes=1),
    "expires_at": NOW + timedelta(days=30),
    "key_id": "ed25519:0000000000000000",
}
VERDICT_TAMPER: dict[str, Any] = {
    "schema_version": "1.1",
    "artifact_id": "cd" * 32,
    "disposition": "clean",
    "scope": "group:servers",
    "reason": "changed",
    "source": "analyst",
    "alert_id": "al-9",
    "detection_name": "Behavior:Win32/Impact.A!ml",
    "model_version": "m9",
    "feature_version": "f9",
    "issued_at": NOW - timedelta(minutes=1),
    "expires_at": NOW + timedelta(days=1),
    "key_id": "ed25519:0000000000000000",
}


@pytest.mark.parametrize(("model", "tamper"), [(Command, COMMAND_TAMPER), (Verdict, VERDICT_TAMPER)])
def test_every_signed_field_has_a_tamper_case(model: type[Any], tamper: dict[str, Any]) -> None:
    single_valued = {"artifact_type"}  # ArtifactType has one member today: nothing to change it to
    assert set(tamper) == set(model.model_fields) - {"signature"} - single_valued


@pytest.mark.parametrize("field", sorted(COMMAND_TAMPER))
def test_changing_any_command_field_breaks_the_signature(field: str) -> None:
    signed = sign_command(_command(path="C:\\x.exe", sha256="ab" * 32), KEY)
    tampered = Command.model_validate({**signed.model_dump(), field: COMMAND_TAMPER[field]})
    assert getattr(tampered, field) != getattr(signed, field)
    with pytest.raises(SignatureError):
        verify(tampered, RING)


@pytest.mark.parametrize("field", sorted(VERDICT_TAMPER))
def test_changing_any_verdict_field_breaks_the_signature(field: str) -> None:
    signed = sign_verdict(_verdict(), KEY)
    tampered = Verdict.model_validate({**signed.model_dump(), field: VERDICT_TAMPER[field]})
    assert getattr(tampered, field) != getattr(signed, field)
    with pytest.raises(SignatureError):
        verify(tampered, RING)


@settings(max_examples=40, deadline=None)
@given(command=commands(), verdict=verdicts())
def test_any_valid_record_signs_and_verifies(command: Command, verdict: Verdict) -> None:
    assert verify(codec.decode(Command, codec.encode(sign_command(command, KEY))), RING).key_id == KEY.key_id
    assert verify(codec.decode(Verdict, codec.encode(sign_verdict(verdict, KEY))), RING).key_id == KEY.key_id


@settings(max_examples=60, deadline=None)
@given(command=commands(), verdict=verdicts())
def test_signed_json_is_byte_for_byte_the_encoded_signed_record(command: Command, verdict: Verdict) -> None:
    # The worker writes `signed_json`; agents verify what `sign` + `encode` defined: one set of bytes.
    for record, signed in ((command, sign_command(command, KEY)), (verdict, sign_verdict(verdict, KEY))):
        assert signed_json(record, KEY) == codec.encode(signed)
    relabelled = sign_command(command, SigningKey.generate("other-key"))  # an earlier key_id/signature
    assert signed_json(relabelled, KEY) == codec.encode(sign_command(command, KEY))


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=2048), seed=st.binary(min_size=32, max_size=32))
def test_libsodium_and_openssl_sign_the_same_bytes(data: bytes, seed: bytes) -> None:
    """Ed25519 is deterministic: the pipeline signs with libsodium when PyNaCl is installed, and an
    agent (or a host without it) gets exactly the signature OpenSSL makes, which verifies."""
    from schemas import signing

    assert signing._sodium_sign is not None  # the pipeline extra installs PyNaCl
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(seed), "k-1")
    openssl = key.private_key.sign(data)
    assert key.sign(data) == openssl == key.sign(data)  # the second call reuses libsodium's key
    key.private_key.public_key().verify(openssl, data)
    assert seed.hex() not in repr(key)


def test_without_libsodium_openssl_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas import signing

    monkeypatch.setattr(signing, "_sodium_sign", None)
    key = SigningKey.generate("k-2")
    assert key.sign(b"x") == key.private_key.sign(b"x")
    assert verify(codec.decode(Command, signed_json(_command(), key)), Keyring.of([key.trusted()]))


def test_signed_json_of_a_policy_update_verifies_and_leaves_the_model_unsigned() -> None:
    update = PolicyUpdate(update_id="u-1", change=GroupModeChange(group="finance", mode=Mode.BLOCK),
                          actor="soc:ann", issued_at=NOW)  # fmt: skip
    value = signed_json(update, KEY)
    assert value == codec.encode(sign_policy_update(update, KEY))
    assert verify(codec.decode(PolicyUpdate, value), RING).key_id == KEY.key_id
    assert update.signature is None and update.key_id is None


def test_signed_json_output_verifies_on_the_agent_side_and_tampering_is_caught() -> None:
    value = signed_json(_command(), KEY)
    _check(codec.decode(Command, value))
    tampered = value.replace(b'"reason":"tree scored 0.99"', b'"reason":"tree scored 0.10"')
    assert tampered != value
    with pytest.raises(SignatureError):
        _check(codec.decode(Command, tampered))


def test_unsigned_unknown_key_and_garbage_signatures_are_refused() -> None:
    with pytest.raises(SignatureError, match="not signed"):
        verify(_command(), RING)
    with pytest.raises(UnknownKey):
        verify(sign_command(_command(), SigningKey.generate()), RING)
    forged = sign_command(_command(), KEY).model_copy(update={"signature": "A" * 86})
    with pytest.raises(SignatureError):
        verify(forged, RING)


def test_relabelling_a_signature_to_another_trusted_key_fails() -> None:
    other = SigningKey.generate()
    ring = RING.with_key(other.trusted())
    relabelled = sign_command(_command(), KEY).model_copy(update={"key_id": other.key_id})
    with pytest.raises(SignatureError):
        verify(relabelled, ring)


def test_expired_and_future_commands_are_refused() -> None:
    signed = sign_command(_command(), KEY)
    with pytest.raises(Expired):
        _check(signed, now=signed.expires_at)
    with pytest.raises(Expired, match="future"):
        _check(signed, now=NOW - timedelta(minutes=6))
    _check(signed, now=NOW - timedelta(minutes=4))  # within the default 5 minutes of clock skew


def test_expired_verdicts_are_refused_and_open_ended_ones_are_not() -> None:
    dated = sign_verdict(_verdict(expires_at=NOW + timedelta(hours=1)), KEY)
    with pytest.raises(Expired):
        check_verdict(dated, keyring=RING, now=NOW + timedelta(hours=2))
    check_verdict(sign_verdict(_verdict(), KEY), keyring=RING, now=NOW + timedelta(days=3650))


def test_a_command_for_another_device_is_refused_and_its_nonce_not_spent() -> None:
    signed, nonces = sign_command(_command(), KEY), NonceLedger()
    with pytest.raises(WrongTarget) as caught:
        _check(signed, device_id="dev-2", nonces=nonces)
    assert caught.value.record_id == signed.command_id
    assert signed.nonce not in nonces
    _check(signed, nonces=nonces)


def test_a_replayed_command_is_refused() -> None:
    signed, nonces = sign_command(_command(), KEY), NonceLedger()
    _check(signed, nonces=nonces)
    with pytest.raises(Replayed):
        _check(signed, nonces=nonces)


def test_a_forged_command_does_not_touch_the_nonce_store() -> None:
    forged, nonces = sign_command(_command(), SigningKey.generate()), NonceLedger()
    with pytest.raises(UnknownKey):
        _check(forged, nonces=nonces)
    assert len(nonces) == 0


def test_rotation_old_and_new_keys_both_verify_until_the_old_one_is_retired() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    ring = Keyring.of([old.trusted(not_after=NOW), new.trusted()])
    verify(sign_command(_command(), old), ring)
    verify(sign_command(_command(), new), ring)
    late = new_command(
        device_id="dev-1",
        action=CommandAction.KILL_PROCESS_TREE,
        now=NOW + timedelta(seconds=1),
        process_key="{PK}",
    )
    with pytest.raises(UnknownKey, match="retired"):
        verify(sign_command(late, old), ring)
    with pytest.raises(UnknownKey):
        verify(sign_command(_command(), old), ring.without(old.key_id))


def test_nonce_ledger_forgets_expired_nonces_and_stays_bounded() -> None:
    ledger = NonceLedger(max_entries=3)
    for index in range(3):
        ledger.remember(f"n{index}", NOW + timedelta(minutes=index))
    assert ledger.prune(NOW) == 1 and "n0" not in ledger
    ledger.remember("n3", NOW + timedelta(minutes=9))
    ledger.remember("n4", NOW + timedelta(minutes=9))
    assert len(ledger) == 3 and "n1" not in ledger and "n4" in ledger
    assert NonceLedger(ledger.entries()).entries() == ledger.entries()


def test_key_files_round_trip_with_private_key_mode_0600(tmp_path: Path) -> None:
    save_private_key(KEY, tmp_path / "fleet.key")
    save_public_key(KEY, tmp_path / "fleet.pub")
    assert (tmp_path / "fleet.key").stat().st_mode & 0o777 == 0o600
    loaded, public = load_private_key(tmp_path / "fleet.key"), load_public_key(tmp_path / "fleet.pub")
    assert loaded.key_id == public.key_id == KEY.key_id
    verify(sign_command(_command(), loaded), Keyring.of([public]))
    text_key = public_key_from_text(public_key_text(KEY.private_key.public_key()))
    assert text_key.key_id == KEY.key_id


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fleet.key"
    save_private_key(KEY, path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        load_private_key(path)
    save_private_key(KEY, path)  # overwriting tightens the mode again
    assert path.stat().st_mode & 0o777 == 0o600


def test_unusable_key_material_is_a_key_material_error(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError):
        load_public_key(tmp_path / "missing.pub")
    (tmp_path / "junk.pub").write_bytes(b"not a key")
    with pytest.raises(KeyMaterialError):
        load_public_key(tmp_path / "junk.pub")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pub").write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyMaterialError, match="not an Ed25519"):
        load_public_key(tmp_path / "ec.pub")
    with pytest.raises(KeyMaterialError):
        public_key_from_text("!!not-base64!!")
