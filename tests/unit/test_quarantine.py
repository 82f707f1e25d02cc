"""Quarantine and restore on real files in temporary folders: content, mode and owner survive the
round trip; nothing moves when the content is not the one named; restore never overwrites."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from enforcement_support import T0, sha256_of

from agents.enforcement_errors import ContentMismatch, DestinationExists, NotQuarantined, QuarantineError
from agents.quarantine import Quarantine

ROOT = os.geteuid() == 0


@pytest.fixture
def vault(tmp_path: Path) -> Quarantine:
    return Quarantine(tmp_path / "quarantine")


def payload(tmp_path: Path, name: str = "dropper.bin", mode: int = 0o755,
            content: bytes = b"MZ evil") -> Path:
    folder = tmp_path / "home"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_round_trip_keeps_content_mode_and_owner(tmp_path: Path, vault: Quarantine) -> None:
    path = payload(tmp_path, mode=0o4755 if ROOT else 0o755)
    if ROOT:
        os.chown(path, 1234, 2345)
    before = path.stat()
    sha = sha256_of(path)

    item = vault.quarantine_file(path, sha256=sha, command_id="cmd-1", now=T0)
    assert not path.exists()
    stored = vault.root / sha / f"{item.item_id}.bin"
    assert stored.read_bytes() == b"MZ evil"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o400  # no exec, no setuid while quarantined

    restored = vault.restore_file(sha)
    after = path.stat()
    assert restored.item_id == item.item_id and path.read_bytes() == b"MZ evil"
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert vault.items() == []


def test_metadata_json_describes_the_original(tmp_path: Path, vault: Quarantine) -> None:
    path = payload(tmp_path, mode=0o750)
    sha = sha256_of(path)
    item = vault.quarantine_file(path, sha256=sha.upper(), command_id="cmd-7", now=T0)
    meta = json.loads((vault.root / sha / f"{item.item_id}.json").read_text())
    assert meta["original_path"] == str(path) and meta["sha256"] == sha and meta["mode"] == 0o750
    assert meta["uid"] == os.geteuid() and meta["command_id"] == "cmd-7"
    assert meta["quarantined_at"].startswith("2026-03-01T12:00")
    assert stat.S_IMODE(vault.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((vault.root / sha).stat().st_mode) == 0o700
    assert vault.items() == [item]


def test_wrong_content_is_not_moved(tmp_path: Path, vault: Quarantine) -> None:
    path = payload(tmp_path)
    with pytest.raises(ContentMismatch):
        vault.quarantine_file(path, sha256="0" * 64)
    assert path.read_bytes() == b"MZ evil" and vault.items() == []


def test_symlinks_and_folders_are_refused(tmp_path: Path, vault: Quarantine) -> None:
    target = payload(tmp_path)
    link = tmp_path / "home" / "link"
    link.symlink_to(target)
    with pytest.raises(QuarantineError, match="cannot open"):
        vault.quarantine_file(link, sha256=sha256_of(target))
    with pytest.raises(QuarantineError, match="not a regular file"):
        vault.quarantine_file(tmp_path / "home", sha256="0" * 64)
    assert target.exists() and link.is_symlink()


def test_missing_file_is_an_error_not_a_crash(tmp_path: Path, vault: Quarantine) -> None:
    with pytest.raises(QuarantineError, match="cannot open"):
        vault.quarantine_file(tmp_path / "nope", sha256="0" * 64)


def test_restore_never_overwrites(tmp_path: Path, vault: Quarantine) -> None:
    path = payload(tmp_path)
    sha = sha256_of(path)
    vault.quarantine_file(path, sha256=sha)
    path.write_bytes(b"a new, legitimate file")
    with pytest.raises(DestinationExists):
        vault.restore_file(sha)
    assert path.read_bytes() == b"a new, legitimate file"
    assert len(vault.items()) == 1  # still quarantined


def test_restore_to_another_path(tmp_path: Path, vault: Quarantine) -> None:
    path = payload(tmp_path)
    sha = sha256_of(path)
    vault.quarantine_file(path, sha256=sha)
    elsewhere = tmp_path / "home" / "restored.bin"
    vault.restore_file(sha, path=elsewhere)
    assert sha256_of(elsewhere) == sha and not path.exists()


def test_restore_of_unknown_hash(vault: Quarantine) -> None:
    with pytest.raises(NotQuarantined):
        vault.restore_file("f" * 64)


def test_tampered_quarantine_copy_is_not_restored(tmp_path: Path, vault: Quarantine) -> None:
    path = payload(tmp_path)
    sha = sha256_of(path)
    item = vault.quarantine_file(path, sha256=sha)
    stored = vault.root / sha / f"{item.item_id}.bin"
    stored.chmod(0o600)
    stored.write_bytes(b"swapped")
    with pytest.raises(ContentMismatch):
        vault.restore_file(sha)
    assert not path.exists()


def test_same_content_from_two_paths_restores_newest_first(tmp_path: Path, vault: Quarantine) -> None:
    first, second = payload(tmp_path, "one"), payload(tmp_path, "two")
    sha = sha256_of(first)
    vault.quarantine_file(first, sha256=sha, now=T0)
    vault.quarantine_file(second, sha256=sha, now=T0.replace(minute=5))
    assert vault.restore_file(sha).original_path == str(second)
    assert vault.restore_file(sha).original_path == str(first)


def test_move_across_filesystems(tmp_path: Path, vault: Quarantine, monkeypatch: pytest.MonkeyPatch) -> None:
    """rename(2) fails with EXDEV between filesystems (e.g. /home and /var): copy, fsync, unlink."""

    def no_rename(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr("agents.quarantine.os.rename", no_rename)
    path = payload(tmp_path, mode=0o711, content=b"elsewhere")
    sha = sha256_of(path)
    item = vault.quarantine_file(path, sha256=sha)
    assert not path.exists() and (vault.root / sha / f"{item.item_id}.bin").read_bytes() == b"elsewhere"
    vault.restore_file(sha)
    assert path.read_bytes() == b"elsewhere" and stat.S_IMODE(path.stat().st_mode) == 0o711
