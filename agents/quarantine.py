"""Quarantine a file (move it out of reach, keep what is needed to put it back) and restore it.

Layout of the quarantine folder (mode 0700, owned by the agent):
    <root>/<sha256>/<item_id>.bin   the file's content, mode 0400 (no exec, no setuid bits)
    <root>/<sha256>/<item_id>.json  metadata: original path, mode, uid, gid, size, sha256, when, command
Why this shape: the same content may be quarantined from several paths, and `restore_file` is
addressed by sha256 (the command contract), so items are grouped by content.

Safety:
- the file is opened with O_NOFOLLOW and hashed through that descriptor; the content must hash to
  the sha256 the command named, or nothing is moved (`ContentMismatch`);
- after the move the quarantined copy is hashed again: if the path was swapped between hash and
  move, the move is undone and the quarantine fails;
- a move across filesystems copies, fsyncs and verifies before unlinking the original;
- restore never overwrites an existing file, re-applies owner and then mode (chown clears setuid),
  and verifies the restored content's sha256 before forgetting the item.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from agents.enforcement_errors import ContentMismatch, DestinationExists, NotQuarantined, QuarantineError

__all__ = ["Quarantine", "QuarantineItem", "sha256_file"]

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class QuarantineItem:
    """What was quarantined, from where, and how to put it back."""

    item_id: str
    sha256: str
    original_path: str
    mode: int  # full st_mode permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    size: int
    quarantined_at: str  # ISO 8601 UTC
    command_id: str | None


def sha256_file(path: Path) -> str:
    """sha256 of a regular file's content, not following a final symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return _hash_fd(fd)
    finally:
        os.close(fd)


class Quarantine:
    """The quarantine folder at `root` (created 0700 on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def quarantine_file(self, path: Path, *, sha256: str, command_id: str | None = None,
                        now: datetime | None = None) -> QuarantineItem:
        """Move `path` into quarantine if its content hashes to `sha256`; returns the stored item."""
        sha256 = sha256.lower()
        st = self._check_source(path, sha256)
        folder = self._folder(sha256)
        item = QuarantineItem(
            item_id=secrets.token_hex(8), sha256=sha256, original_path=str(path),
            mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, size=st.st_size,
            quarantined_at=(now or datetime.now(UTC)).isoformat(), command_id=command_id,
        )
        data = folder / f"{item.item_id}.bin"
        _move(path, data)
        if sha256_file(data) != sha256:  # the path was swapped between hash and move
            _move(data, path)
            raise ContentMismatch(f"{path} changed while being quarantined", path=str(path), sha256=sha256)
        os.chmod(data, 0o400)
        _write_json(folder / f"{item.item_id}.json", asdict(item))
        return item

    def restore_file(self, sha256: str, *, path: Path | None = None) -> QuarantineItem:
        """Put the newest item with this sha256 back (at `path`, default its original path)."""
        item = self._newest(sha256.lower())
        target = path or Path(item.original_path)
        data = self._folder(item.sha256) / f"{item.item_id}.bin"
        if sha256_file(data) != item.sha256:
            raise ContentMismatch(f"quarantined copy {data} no longer hashes to {item.sha256}",
                                  path=str(data), sha256=item.sha256)
        if os.path.lexists(target):
            raise DestinationExists(f"{target} exists; not overwritten", path=str(target), sha256=item.sha256)
        _move(data, target)
        os.chown(target, item.uid, item.gid, follow_symlinks=False)
        os.chmod(target, item.mode)  # after chown: chown clears setuid/setgid
        if sha256_file(target) != item.sha256:
            raise ContentMismatch(f"restored {target} does not hash to {item.sha256}",
                                  path=str(target), sha256=item.sha256)
        (self._folder(item.sha256) / f"{item.item_id}.json").unlink()
        return item

    def items(self) -> list[QuarantineItem]:
        """Every quarantined item, oldest first."""
        if not self.root.is_dir():
            return []
        found = [_read_item(meta) for meta in self.root.glob("*/*.json")]
        return sorted(found, key=lambda item: item.quarantined_at)

    def _check_source(self, path: Path, sha256: str) -> os.stat_result:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise QuarantineError(f"{path}: cannot open: {exc.strerror}", path=str(path),
                                  sha256=sha256) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise QuarantineError(f"{path} is not a regular file", path=str(path), sha256=sha256)
            actual = _hash_fd(fd)
        finally:
            os.close(fd)
        if actual != sha256:
            raise ContentMismatch(f"{path} hashes to {actual}, not {sha256}", path=str(path), sha256=sha256)
        return st

    def _folder(self, sha256: str) -> Path:
        folder = self.root / sha256
        for directory in (self.root, folder):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        return folder

    def _newest(self, sha256: str) -> QuarantineItem:
        folder = self.root / sha256
        metas = sorted(folder.glob("*.json")) if folder.is_dir() else []
        items = sorted((_read_item(meta) for meta in metas), key=lambda item: item.quarantined_at)
        if not items:
            raise NotQuarantined(f"nothing quarantined with sha256 {sha256}", sha256=sha256)
        return items[-1]


def _move(source: Path, target: Path) -> None:
    """rename(2), or copy + fsync + unlink when source and target are on different filesystems."""
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise QuarantineError(f"cannot move {source} to {target}: {exc.strerror}",
                                  path=str(source)) from None
    shutil.copy2(source, target, follow_symlinks=False)
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())
    os.unlink(source)


def _write_json(path: Path, value: dict[str, object]) -> None:
    """Atomic write: a temp file in the same folder, fsync, rename."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_item(meta: Path) -> QuarantineItem:
    try:
        return QuarantineItem(**json.loads(meta.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise QuarantineError(f"{meta}: unreadable quarantine metadata: {exc}", path=str(meta)) from None


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
