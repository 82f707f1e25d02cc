"""Reading and writing Ed25519 keys as PEM files (private keys 0600, as ssh insists).

The fleet service loads its private key from a file given in its settings; agents receive the
public key at enrollment. A private key readable by group or others is refused, not warned about:
whoever can read it can order every device to kill and delete.
"""

from __future__ import annotations

import binascii
import os
import stat
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.errors import KeyMaterialError
from schemas.signing import SigningKey, TrustedKey, b64url_decode, key_id_for


def save_private_key(key: SigningKey, path: Path) -> None:
    """Write the private key as unencrypted PKCS#8 PEM, mode 0600 (replacing any file there)."""
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(path, pem, 0o600)


def save_public_key(key: SigningKey | TrustedKey, path: Path) -> None:
    """Write the public key as SubjectPublicKeyInfo PEM, mode 0644."""
    public = key.private_key.public_key() if isinstance(key, SigningKey) else key.public_key
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(path, pem, 0o644)


def load_private_key(path: Path, key_id: str = "") -> SigningKey:
    """Load a private key written by `save_private_key`; refuses files others can read."""
    mode = _stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyMaterialError(
            f"{path}: private key is accessible by others (mode {mode & 0o777:o}); chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"{path}: not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return SigningKey(key, key_id)


def load_public_key(path: Path, key_id: str = "", not_after: datetime | None = None) -> TrustedKey:
    """Load a public key PEM as a TrustedKey (key_id derived from the key unless given)."""
    try:
        key = serialization.load_pem_public_key(_read(path))
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"{path}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyMaterialError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return TrustedKey(key_id or key_id_for(key), key, not_after)


def public_key_from_text(text: str, key_id: str = "", not_after: datetime | None = None) -> TrustedKey:
    """A TrustedKey from the base64url raw form (`signing.public_key_text`)."""
    try:
        key = Ed25519PublicKey.from_public_bytes(b64url_decode(text))
    except (ValueError, binascii.Error) as exc:
        raise KeyMaterialError(f"not a base64url Ed25519 public key: {exc}") from None
    return TrustedKey(key_id or key_id_for(key), key, not_after)


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # an existing file keeps its old mode otherwise
            handle.write(data)
    except OSError as exc:
        raise KeyMaterialError(f"{path}: cannot write key: {exc.strerror}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyMaterialError(f"{path}: cannot read key: {exc.strerror}") from None


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise KeyMaterialError(f"{path}: cannot read key: {exc.strerror}") from None
