"""Helpers shared by the enforcement tests: signed verdicts and commands, a recording reporter,
real processes from a private copy of `sleep` (so its sha256 is ours to blocklist), and waiting."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agents.linux.procfs import process_key_for
from agents.proctree import read_proc
from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.commands import Command, CommandAction, new_command
from schemas.events import BehaviorEvent, Platform, ProcessStart
from schemas.signing import SigningKey, sign_command, sign_verdict
from schemas.verdicts import Disposition, Verdict, VerdictSource

DEVICE = "dev-enforce-1"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeReporter:
    """Records every ActionResult instead of publishing it."""

    results: list[ActionResult] = field(default_factory=list)

    def report(self, result: ActionResult) -> None:
        self.results.append(result)

    def of(self, action: ActionKind, outcome: Outcome | None = None) -> list[ActionResult]:
        return [r for r in self.results if r.action is action and (outcome is None or r.outcome is outcome)]


class Clock:
    """A settable clock for the code under test."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def verdict(sha256: str, key: SigningKey | None, *, disposition: Disposition = Disposition.MALICIOUS,
            issued_at: datetime = T0, **fields: Any) -> Verdict:
    """A verdict for `sha256`, signed with `key` (unsigned when key is None)."""
    made = Verdict(artifact_id=sha256, disposition=disposition, source=VerdictSource.ML,
                   issued_at=issued_at, reason="test", detection_name="Behavior:Linux/Impact.Test!ml",
                   **fields)
    return sign_verdict(made, key) if key is not None else made


def command(key: SigningKey | None, action: CommandAction = CommandAction.KILL_PROCESS_TREE, *,
            device_id: str = DEVICE, now: datetime = T0, ttl: timedelta = timedelta(hours=1),
            **fields: Any) -> Command:
    made = new_command(device_id=device_id, action=action, now=now, ttl=ttl, **fields)
    return sign_command(made, key) if key is not None else made


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def private_sleep(folder: Path, name: str = "evil-sleep") -> tuple[Path, str]:
    """A copy of /bin/sleep with one extra byte, so its hash is unique to this test; (path, sha256)."""
    path = folder / name
    shutil.copyfile(shutil.which("sleep") or "/bin/sleep", path)
    with path.open("ab") as handle:  # ELF ignores trailing bytes; the hash becomes ours
        handle.write(uuid.uuid4().bytes)
    path.chmod(0o755)
    return path, sha256_of(path)


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    """Start a process; Popen returns once exec has succeeded."""
    return subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def alive(pid: int) -> bool:
    info = read_proc(pid)
    return info is not None and not info.dead


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, interval_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def children_of(pid: int) -> list[int]:
    from agents.proctree import scan

    return [info.pid for info in scan().values() if info.ppid == pid and not info.dead]


def start_event(proc: subprocess.Popen[bytes], image: Path, sha256: str | None,
                device_id: str = DEVICE, ts: datetime | None = None) -> BehaviorEvent:
    """The process_start the live source would emit for `proc`."""
    key = process_key_for(proc.pid, device_id)
    if key is None:
        raise AssertionError(f"pid {proc.pid} is gone")
    return BehaviorEvent(
        event_id=uuid.uuid4().hex, device_id=device_id, seq=0, ts=ts or datetime.now(UTC),
        platform=Platform.LINUX, process_key=key, image=str(image),
        payload=ProcessStart(image=str(image), sha256=sha256, pid=proc.pid),
    )


def reap(*procs: subprocess.Popen[bytes]) -> None:
    """Kill (with their session's process group) and wait for test processes: none outlives its test."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
