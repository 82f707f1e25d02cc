"""Ed25519 signatures on verdicts, commands and mode changes, and the one check an agent runs before acting.

Why: a command kills processes and a verdict blocks files on every device, so an agent must act
only on records the fleet service signed, addressed to it, still valid and not seen before.
`check_command`, `check_verdict` and `check_policy_update` bundle those checks so no caller can
forget one (a mode change switches a device between audit and block: see `schemas.policy_updates`).

Signed bytes = a domain prefix (`ringfence.command.v1\\n`, `ringfence.verdict.v1\\n` or
`ringfence.policy.v1\\n`, so one kind's signature never verifies as another) + the model as JSON
without `signature`, keys sorted, no whitespace; times are always `YYYY-MM-DDTHH:MM:SS.ffffffZ`
(see `schemas.common.UtcTimestamp`).
`key_id` is inside the signed bytes, so a signature cannot be relabelled to another key.
Keys rotate by holding old and new public keys in a `Keyring`; a retired key gets `not_after`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.commands import Command
from schemas.errors import Expired, Replayed, SignatureError, UnknownKey, WrongTarget
from schemas.policy_updates import PolicyUpdate
from schemas.verdicts import Verdict

Signed = TypeVar("Signed", Verdict, Command, PolicyUpdate)
SignedRecord = Verdict | Command | PolicyUpdate

DEFAULT_MAX_SKEW = timedelta(minutes=5)
_DOMAINS: dict[type[SignedRecord], bytes] = {
    Verdict: b"ringfence.verdict.v1\n",
    Command: b"ringfence.command.v1\n",
    PolicyUpdate: b"ringfence.policy.v1\n",
}
_KEY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

_sodium_sign: Callable[[bytes, bytes], bytes] | None
try:  # libsodium through PyNaCl (the pipeline extra): the same signatures, ~30 % less CPU than OpenSSL's
    from nacl.bindings import crypto_sign as _sodium_sign
except ImportError:  # pragma: no cover - depends on the install: cryptography signs alone
    _sodium_sign = None


def b64url_encode(data: bytes) -> str:
    """base64url without padding (signatures and raw public keys travel this way)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of `b64url_encode`: any other character raises binascii.Error."""
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """A stable id for a public key: `ed25519:` + the first 16 hex digits of sha256(raw key)."""
    return "ed25519:" + hashlib.sha256(public_key_bytes(public_key)).hexdigest()[:16]


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """The raw public key as base64url (the form DeviceRecord.public_key and enrollment use)."""
    return b64url_encode(public_key_bytes(public_key))


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key the agent trusts, and until when (a retired key signs nothing issued later)."""

    key_id: str
    public_key: Ed25519PublicKey
    not_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The fleet service's private key and the id its signatures carry."""

    private_key: Ed25519PrivateKey
    key_id: str = ""
    _sodium_key: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key_id:
            object.__setattr__(self, "key_id", key_id_for(self.private_key.public_key()))
        if not _KEY_ID.match(self.key_id):
            raise ValueError(f"key_id {self.key_id!r} must match {_KEY_ID.pattern}")

    @classmethod
    def generate(cls, key_id: str = "") -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate(), key_id)

    def trusted(self, not_after: datetime | None = None) -> TrustedKey:
        """The public half, for a keyring."""
        return TrustedKey(self.key_id, self.private_key.public_key(), not_after)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`.

        Ed25519 is deterministic, so libsodium (when PyNaCl is installed) and OpenSSL give the same
        bytes (tests/unit/test_signing.py); libsodium took ~30 % less CPU per signature on the
        pipeline's hosts, and every command and verdict is signed (BENCHMARKS.md, Pipeline, "Session H").
        """
        if _sodium_sign is None:
            return self.private_key.sign(data)
        secret = self._sodium_key
        if secret is None:  # libsodium's secret key: the 32-byte seed, then the public key
            seed = self.private_key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            secret = seed + public_key_bytes(self.private_key.public_key())
            object.__setattr__(self, "_sodium_key", secret)
        return _sodium_sign(data, secret)[:64]  # signed message: the signature, then the message


@dataclass(frozen=True)
class Keyring:
    """The public keys an agent accepts, by key_id; several at once during a rotation."""

    keys: Mapping[str, TrustedKey] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Iterable[TrustedKey]) -> Keyring:
        """A keyring holding `keys` (a later key with the same id replaces an earlier one)."""
        return cls({key.key_id: key for key in keys})

    def with_key(self, key: TrustedKey) -> Keyring:
        """A new keyring that also trusts `key`."""
        return Keyring({**self.keys, key.key_id: key})

    def without(self, key_id: str) -> Keyring:
        """A new keyring that no longer trusts `key_id`."""
        return Keyring({kid: key for kid, key in self.keys.items() if kid != key_id})

    def get(self, key_id: str | None) -> TrustedKey:
        """The trusted key with this id; UnknownKey if there is none."""
        key = self.keys.get(key_id) if key_id is not None else None
        if key is None:
            raise UnknownKey(f"no trusted key {key_id!r}", key_id=key_id)
        return key


class NonceStore(Protocol):
    """Where an agent remembers accepted command nonces (persist it: replays survive restarts)."""

    def __contains__(self, nonce: object) -> bool: ...

    def remember(self, nonce: str, expires_at: datetime) -> None: ...


class NonceLedger:
    """An in-memory NonceStore that forgets a nonce once its command has expired (and is refused anyway).

    Bounded by `max_entries`: when full after pruning, the entry expiring soonest is dropped.
    """

    def __init__(self, entries: Mapping[str, datetime] | None = None, max_entries: int = 100_000) -> None:
        self._expiry: dict[str, datetime] = dict(entries or {})
        self._max_entries = max_entries

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._expiry

    def __len__(self) -> int:
        return len(self._expiry)

    def remember(self, nonce: str, expires_at: datetime) -> None:
        """Record an accepted nonce until `expires_at`."""
        if len(self._expiry) >= self._max_entries:
            self.prune(min(self._expiry.values()))
        if len(self._expiry) >= self._max_entries:
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
        self._expiry[nonce] = expires_at

    def prune(self, now: datetime) -> int:
        """Forget nonces whose commands expired at or before `now`; returns how many."""
        expired = [nonce for nonce, expires_at in self._expiry.items() if expires_at <= now]
        for nonce in expired:
            del self._expiry[nonce]
        return len(expired)

    def entries(self) -> dict[str, datetime]:
        """A copy of nonce -> expiry, for persisting."""
        return dict(self._expiry)


def canonical_bytes(model: SignedRecord) -> bytes:
    """The exact bytes a signature covers (see the module docstring)."""
    body = model.model_dump(mode="json", exclude={"signature"})
    return _DOMAINS[type(model)] + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def sign(model: Signed, key: SigningKey) -> Signed:
    """A copy of `model` carrying `key.key_id` and the signature over everything else."""
    unsigned = model.model_copy(update={"key_id": key.key_id, "signature": None})
    signature = key.sign(canonical_bytes(unsigned))
    return unsigned.model_copy(update={"signature": b64url_encode(signature)})


def signed_json(model: SignedRecord, key: SigningKey) -> bytes:
    """`schemas.codec.encode(sign(model, key))`, byte for byte, from one JSON dump of `model`.

    What the fleet service produces: `sign` copies the model twice and `encode` dumps the signed
    copy again, each dump formatting every timestamp; here the one dump is signed (without
    `signature`, keys sorted, as `canonical_bytes`) and written (field order, `signature` last, as
    every signed contract declares it; tests/unit/test_signing.py holds the two ways equal).
    """
    return signed_json_of(model.model_dump(mode="json"), type(model), key)


def signed_json_of(values: Mapping[str, Any], kind: type[SignedRecord], key: SigningKey) -> bytes:
    """`signed_json` of the `kind` record whose `model_dump(mode="json")` is `values` (left unchanged).

    For a record the fleet service validated from those very values (`pipeline.policy`), so it is
    not dumped again; the values must be what the dump would give, field order included.
    """
    body = dict(values)
    body["key_id"] = key.key_id
    del body["signature"]
    signature = key.sign(_DOMAINS[kind] + orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    body["signature"] = b64url_encode(signature)
    return orjson.dumps(body)


def sign_verdict(verdict: Verdict, key: SigningKey) -> Verdict:
    """`sign` for a verdict."""
    return sign(verdict, key)


def sign_command(command: Command, key: SigningKey) -> Command:
    """`sign` for a command."""
    return sign(command, key)


def sign_policy_update(update: PolicyUpdate, key: SigningKey) -> PolicyUpdate:
    """`sign` for a policy update (mode changes must be signed: agents follow them)."""
    return sign(update, key)


def verify(model: SignedRecord, keyring: Keyring) -> TrustedKey:
    """Check the signature; returns the key that made it. Raises SignatureError / UnknownKey."""
    if model.signature is None:
        raise SignatureError("record is not signed", key_id=model.key_id, **_ids(model))
    key = keyring.get(model.key_id)
    if key.not_after is not None and model.issued_at > key.not_after:
        raise UnknownKey(f"key {key.key_id} was retired at {key.not_after.isoformat()}",
                         key_id=key.key_id, **_ids(model))
    try:
        key.public_key.verify(b64url_decode(model.signature), canonical_bytes(model))
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError("signature does not verify", key_id=key.key_id, **_ids(model)) from None
    return key


def check_command(
    command: Command, *, keyring: Keyring, device_id: str, now: datetime, seen_nonces: NonceStore,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> None:
    """Everything an agent checks before acting on a command; on success the nonce is remembered.

    Order matters: the signature first (an unauthenticated record must not touch the nonce store),
    then target, validity window and replay. Raises SignatureError, WrongTarget, Expired or Replayed.
    """
    verify(command, keyring)
    if command.device_id != device_id:
        raise WrongTarget(f"command {command.command_id} is for {command.device_id}, not {device_id}",
                          **_ids(command))
    _check_window(command, now, max_skew)
    if command.nonce in seen_nonces:
        raise Replayed(f"command {command.command_id} nonce already used", **_ids(command))
    seen_nonces.remember(command.nonce, command.expires_at)


def check_verdict(
    verdict: Verdict, *, keyring: Keyring, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW
) -> None:
    """Signature and validity window of a verdict (scope is `Verdict.applies_to`, not an error)."""
    verify(verdict, keyring)
    _check_window(verdict, now, max_skew)


def check_policy_update(
    update: PolicyUpdate, *, keyring: Keyring, now: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW
) -> None:
    """Signature of a policy update, and that it was not issued in the future (it does not expire:
    it holds until a newer update for the same key; refusing older ones is the follower's job)."""
    verify(update, keyring)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if update.issued_at > now + max_skew:
        raise Expired(f"issued at {update.issued_at.isoformat()}, in the future of {now.isoformat()}",
                      **_ids(update))


def _check_window(model: Verdict | Command, now: datetime, max_skew: timedelta) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if model.issued_at > now + max_skew:
        raise Expired(f"issued at {model.issued_at.isoformat()}, in the future of {now.isoformat()}",
                      **_ids(model))
    if model.expires_at is not None and now >= model.expires_at:
        raise Expired(f"expired at {model.expires_at.isoformat()}", **_ids(model))


def _ids(model: SignedRecord) -> dict[str, str | None]:
    if isinstance(model, Command):
        return {"device_id": model.device_id, "record_id": model.command_id}
    if isinstance(model, PolicyUpdate):
        return {"record_id": model.update_id}
    return {"record_id": model.artifact_id}
