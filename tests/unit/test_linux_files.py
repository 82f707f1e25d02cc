"""inotify file events on a temp folder: renames paired, moves in/out, folders created or renamed later;
the live source around it (no root: /proc polling and inotify): backpressure without loss."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

from agents.linux.build import UNATTRIBUTED_PROCESS_KEY
from agents.linux.files import FileWatcher
from agents.linux.hashing import HashCache
from agents.linux.source import LinuxLiveConfig, LinuxLiveSource
from schemas.events import BehaviorEvent, FileWrite


def settle(watcher: FileWatcher, rounds: int = 3) -> list[tuple[str, str, str | None]]:
    """Read until quiet; (kind, path, old_path) triples."""
    seen: list[BehaviorEvent] = []
    for _ in range(rounds):
        time.sleep(0.06)
        seen.extend(watcher.read_ready())
    return [(e.kind.value, str(getattr(e.payload, "path", "")), getattr(e.payload, "old_path", None))
            for e in seen]


def test_create_write_rename_delete_in_a_watched_folder(tmp_path: Path) -> None:
    watcher = FileWatcher("dev", [str(tmp_path)], rename_wait_s=0.05)
    watcher.start()
    try:
        (tmp_path / "a").write_text("x")
        os.rename(tmp_path / "a", tmp_path / "b")
        (tmp_path / "b").unlink()
        events = settle(watcher)
    finally:
        watcher.close()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert events == [("file_create", a, None), ("file_write", a, None), ("file_rename", b, a),
                      ("file_delete", b, None)]


def test_moves_across_the_watch_boundary_are_create_and_delete(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (outside / "incoming").write_text("x")
    (inside / "leaving").write_text("x")
    watcher = FileWatcher("dev", [str(inside)], rename_wait_s=0.05)
    watcher.start()
    try:
        os.rename(outside / "incoming", inside / "incoming")
        os.rename(inside / "leaving", outside / "leaving")
        events = settle(watcher)
    finally:
        watcher.close()
    assert ("file_create", str(inside / "incoming"), None) in events
    assert ("file_delete", str(inside / "leaving"), None) in events


def test_folders_created_or_renamed_later_are_watched_under_their_new_name(tmp_path: Path) -> None:
    watcher = FileWatcher("dev", [str(tmp_path)], rename_wait_s=0.05)
    watcher.start()
    try:
        (tmp_path / "d1" / "d2").mkdir(parents=True)
        settle(watcher, rounds=1)
        os.rename(tmp_path / "d1", tmp_path / "renamed")
        settle(watcher, rounds=1)
        (tmp_path / "renamed" / "d2" / "late").write_text("x")
        events = settle(watcher)
        assert watcher.watch_count == 3
    finally:
        watcher.close()
    assert ("file_create", str(tmp_path / "renamed" / "d2" / "late"), None) in events


def test_file_events_carry_the_unattributed_marker_and_a_hash_of_what_was_written(tmp_path: Path) -> None:
    watcher = FileWatcher("dev", [str(tmp_path)])
    watcher.start()
    try:
        (tmp_path / "payload").write_bytes(b"one")
        time.sleep(0.05)
        events = watcher.read_ready()
    finally:
        watcher.close()
    write = next(e for e in events if isinstance(e.payload, FileWrite))
    assert write.process_key == UNATTRIBUTED_PROCESS_KEY
    assert isinstance(write.payload, FileWrite)
    assert write.payload.sha256 == "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"


def test_watch_limit_is_enforced_and_counted(tmp_path: Path) -> None:
    for index in range(4):
        (tmp_path / f"d{index}").mkdir()
    watcher = FileWatcher("dev", [str(tmp_path)], max_watches=2)
    watcher.start()
    try:
        assert watcher.watch_count == 2 and watcher.unwatched_dirs >= 1
    finally:
        watcher.close()


def test_a_file_name_that_is_not_utf8_is_reported_escaped_and_collection_goes_on(tmp_path: Path) -> None:
    watcher = FileWatcher("dev", [str(tmp_path)], rename_wait_s=0.05)
    watcher.start()
    try:
        hostile = os.path.join(os.fsencode(tmp_path), b"inv\xffoice.pdf")
        with open(hostile, "wb") as handle:
            handle.write(b"x")
        (tmp_path / "after.txt").write_text("y")
        events = settle(watcher)
    finally:
        watcher.close()
    escaped = str(tmp_path / "inv\\xffoice.pdf")
    assert ("file_create", escaped, None) in events and ("file_write", escaped, None) in events
    assert ("file_write", str(tmp_path / "after.txt"), None) in events  # the watcher did not die


def test_a_fifo_written_in_a_watched_folder_is_reported_without_blocking_the_agent(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    watcher = FileWatcher("dev", [str(tmp_path)], rename_wait_s=0.05)
    watcher.start()
    try:
        fd = os.open(fifo, os.O_RDWR)  # a writer that closes: IN_CLOSE_WRITE, and no one left to write
        os.write(fd, b"x")
        os.close(fd)
        started = time.monotonic()
        seen: list[BehaviorEvent] = []
        for _ in range(3):
            time.sleep(0.06)
            seen.extend(watcher.read_ready())
    finally:
        watcher.close()
    assert time.monotonic() - started < 5  # a blocking open of the FIFO would hang here forever
    writes = [e.payload for e in seen if isinstance(e.payload, FileWrite)]
    assert [(w.path, w.sha256) for w in writes] == [(str(fifo), None)]  # no hash of a non-file


def test_a_file_written_again_within_one_read_is_hashed_once(tmp_path: Path) -> None:
    hashes = HashCache()
    watcher = FileWatcher("dev", [str(tmp_path)], hashes=hashes)
    watcher.start()
    try:
        for name in ("a", "b", "a"):
            (tmp_path / name).write_text(name)
        time.sleep(0.05)
        writes = [e.payload for e in watcher.read_ready() if isinstance(e.payload, FileWrite)]
    finally:
        watcher.close()
    assert [Path(w.path).name for w in writes] == ["a", "b", "a"]
    assert writes[0].sha256 == writes[2].sha256 == hashlib.sha256(b"a").hexdigest()
    assert hashes.hits + hashes.misses == 2  # a and b, not a twice


async def test_live_source_pauses_when_its_consumer_lags_and_loses_nothing(tmp_path: Path) -> None:
    # No root needed: /proc polling and inotify. 60 file events against a bound of 5 pending.
    config = LinuxLiveConfig(device_id="dev", watch_paths=(str(tmp_path),), process_mode="poll",
                             file_mode="inotify", net_enabled=False, tick_s=0.02, max_pending_events=5)
    source = LinuxLiveSource(config)
    events = source.events()
    first = asyncio.ensure_future(anext(events))
    await asyncio.wait_for(source.ready.wait(), 5)
    for index in range(30):
        (tmp_path / f"f{index}").write_text("x")  # a create and a write each
    seen = [await asyncio.wait_for(first, 5)]
    try:
        while len([e for e in seen if e.kind.value.startswith("file")]) < 60:
            seen.append(await asyncio.wait_for(anext(events), 5))
            await asyncio.sleep(0.001)  # a slow consumer
    finally:
        await events.aclose()
    files = [(e.kind.value, Path(str(getattr(e.payload, "path", ""))).name) for e in seen
             if e.kind.value.startswith("file")]
    assert files == [(kind, f"f{index}") for index in range(30) for kind in ("file_create", "file_write")]
    assert source.pauses >= 1 and source.file_mode == "inotify" and source.process_mode == "poll"
