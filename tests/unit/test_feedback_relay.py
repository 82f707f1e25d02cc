"""The feedback-loop relay's filter: only the trees started by an executable under the tests' folder
(and file events inside it) reach the worker; everything else this host runs stays out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback_relay import AttackScope

from schemas.events import BehaviorEvent, EventBatch, FileCreate, Platform, ProcessEnd, ProcessStart

ROOT = Path("/tmp/loop-1")
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def event(seq: int, key: str, payload: Any, parent: str | None = None) -> BehaviorEvent:
    return BehaviorEvent(event_id=f"e{seq}", device_id="dev-a", seq=seq, ts=NOW, platform=Platform.LINUX,
                         process_key=key, parent_process_key=parent, payload=payload)


def start(seq: int, key: str, image: str, parent: str | None = None) -> BehaviorEvent:
    return event(seq, key, ProcessStart(image=image, pid=100 + seq), parent)


def batch(*events: BehaviorEvent) -> EventBatch:
    seqs = [e.seq for e in events]
    return EventBatch(device_id="dev-a", first_seq=min(seqs), last_seq=max(seqs), events=events)


def test_only_the_attacks_trees_and_folder_pass_with_their_sequence_numbers() -> None:
    scope = AttackScope(ROOT)
    kept = scope.keep(batch(
        start(1, "gcc", "/usr/bin/gcc", parent="shell"),  # someone else's work on this host
        start(2, "locker", f"{ROOT}/attack-1/bin/rf-locker", parent="pytest"),
        start(3, "openssl", "/usr/bin/openssl", parent="locker"),
        start(4, "cc1", "/usr/lib/gcc/cc1", parent="gcc"),
        event(5, "linux:unattributed", FileCreate(path=f"{ROOT}/attack-1/work/victim/a.rfenc")),
        event(6, "linux:unattributed", FileCreate(path="/home/someone/notes.txt")),
        event(7, "openssl", ProcessEnd(pid=103), parent="locker"),
    ))
    assert kept is not None and [e.seq for e in kept.events] == [2, 3, 5, 7]
    assert (kept.device_id, kept.first_seq, kept.last_seq) == ("dev-a", 2, 7)


def test_the_scope_carries_over_batches_and_a_batch_of_nothing_ours_is_dropped() -> None:
    scope = AttackScope(ROOT)
    assert scope.keep(batch(start(1, "locker", f"{ROOT}/attack-2/bin/rf-locker"))) is not None
    assert scope.keep(batch(start(2, "bash", "/usr/bin/bash", parent="sshd"))) is None
    later = scope.keep(batch(start(3, "shred", "/usr/bin/shred", parent="locker")))
    assert later is not None and [e.process_key for e in later.events] == ["shred"]


def test_a_sibling_folder_sharing_the_prefix_is_not_in_scope() -> None:
    scope = AttackScope(ROOT)
    assert scope.keep(batch(start(1, "x", "/tmp/loop-10/bin/rf-locker"))) is None
