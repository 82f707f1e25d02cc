"""Who may change the fleet from the console: bearer tokens, compared in constant time.

Why bearer tokens in a header and no cookies: a browser attaches cookies to any request a hostile
page makes (CSRF), but never an `Authorization` header, and a cross-origin request that carries one
needs a CORS preflight that the console does not answer. So every state-changing request must be a
POST with `Authorization: Bearer <token>`; the page keeps the token in `sessionStorage`.

A token is `TOKEN` or `NAME:TOKEN`; NAME (default `analyst`) is the actor written to the audit
topic. Tokens are kept only as SHA-256 digests and every configured digest is compared on every
request, so neither timing nor the number of tokens tells an attacker how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.soc.errors import ConsoleConfigError

DEFAULT_ACTOR = "analyst"
MIN_TOKEN_CHARS = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Analysts:
    """The accepted tokens, as (actor, sha256 of the token)."""

    digests: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_lines(cls, lines: Iterable[str], origin: str) -> Analysts:
        """Parse `TOKEN` / `NAME:TOKEN` lines (blank lines and `#` comments ignored)."""
        digests = []
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                digests.append(_entry(text, f"{origin} line {number}"))
        return cls(tuple(digests))

    def merged(self, other: Analysts) -> Analysts:
        return Analysts(self.digests + other.digests)

    def authenticate(self, authorization: str | None) -> str | None:
        """The actor whose token is in the `Authorization: Bearer` header, or None."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = hashlib.sha256(token.strip().encode()).digest()
        actor = None
        for name, digest in self.digests:  # no early exit: the time taken does not depend on a match
            if hmac.compare_digest(presented, digest) and actor is None:
                actor = name
        return actor


def _entry(text: str, where: str) -> tuple[str, bytes]:
    name, sep, token = text.partition(":")
    if not sep:
        name, token = DEFAULT_ACTOR, text
    if not _NAME.match(name):
        raise ConsoleConfigError(f"{where}: analyst name {name[:64]!r} must match {_NAME.pattern}")
    if len(token) < MIN_TOKEN_CHARS or any(ch.isspace() for ch in token):
        raise ConsoleConfigError(f"{where}: a token needs at least {MIN_TOKEN_CHARS} non-blank characters")
    return name, hashlib.sha256(token.encode()).digest()


def load_token_file(path: Path) -> Analysts:
    """Tokens from a file readable by its owner only (as ssh insists for keys)."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConsoleConfigError(f"{path}: token file is accessible by others "
                                     f"(mode {mode & 0o777:o}); chmod 600 it")
        return Analysts.from_lines(path.read_text(encoding="utf-8").splitlines(), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsoleConfigError(f"{path}: cannot read token file: {exc}") from None
