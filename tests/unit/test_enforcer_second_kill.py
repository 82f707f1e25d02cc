"""One incident reaches a block-mode device twice: the kill command for the process and the verdict
for its file (two topics, two followers, either order). The second finds the process gone; when this
enforcer killed that very process key, it reports `succeeded` ("already killed by ..."), not a failed
`not_found`. A process that died any other way, or one killed too long ago to be remembered, still
fails as `not_found`: the memory never invents a kill."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen

import pytest
from enforcement_support import DEVICE, FakeReporter, command, private_sleep, spawn, start_event

import agents.enforcer as enforcer_module
from agents import proctree
from agents.blocklist import Blocklist
from agents.enforcer import Enforcer
from agents.linux.procfs import process_key_for
from agents.proctree import protected_pids
from agents.quarantine import Quarantine
from schemas.actions import ActionKind, Outcome
from schemas.commands import Command, CommandAction
from schemas.common import Mode
from schemas.signing import SigningKey
from schemas.verdicts import Verdict

PROTECTED = protected_pids()



@pytest.fixture
def rig(tmp_path: Path) -> tuple[Enforcer, FakeReporter]:
    reporter = FakeReporter()
    enforcer = Enforcer(device_id=DEVICE, mode=Mode.BLOCK, blocklist=Blocklist(None, "t.verdicts"),
                        reporter=reporter, quarantine=Quarantine(tmp_path / "quarantine"),
                        protected=PROTECTED)
    return enforcer, reporter


def kill_command(proc: Popen[bytes]) -> Command:
    key = process_key_for(proc.pid, DEVICE)
    assert key is not None
    return command(SigningKey.generate(), CommandAction.KILL_PROCESS_TREE, now=datetime.now(UTC),
                   process_key=key, pid=proc.pid)


def blocked(enforcer: Enforcer, sha256: str) -> None:
    verdict = Verdict.model_validate({"artifact_id": sha256, "disposition": "malicious", "source": "ml",
                                      "issued_at": datetime.now(UTC)})
    enforcer.blocklist.apply(verdict, partition=0, offset=0, now=datetime.now(UTC))


async def test_the_command_after_the_verdicts_kill_succeeds_as_already_killed(
    tmp_path: Path, rig: tuple[Enforcer, FakeReporter], procs: list[Popen[bytes]]
) -> None:
    enforcer, reporter = rig
    image, sha = private_sleep(tmp_path)
    locker = spawn(str(image), "60")
    procs.append(locker)
    order = kill_command(locker)  # issued for the incident while the process ran
    blocked(enforcer, sha)
    [instance] = await enforcer.kill_running(sha, since=datetime.now(UTC))  # the verdict came first
    assert instance.outcome is Outcome.SUCCEEDED and locker.wait(5) == -9

    result = await enforcer.execute(order)
    assert result.action is ActionKind.KILL_PROCESS_TREE and result.outcome is Outcome.SUCCEEDED
    assert result.error_class is None and result.command_id == order.command_id
    assert result.reason is not None and "already killed by kill_blocked_instance" in result.reason
    assert [r.outcome for r in reporter.results] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED]


async def test_a_blocked_start_after_the_commands_kill_succeeds_as_already_killed(
    tmp_path: Path, rig: tuple[Enforcer, FakeReporter], procs: list[Popen[bytes]]
) -> None:
    enforcer, _ = rig
    image, sha = private_sleep(tmp_path)
    proc = spawn(str(image), "60")
    procs.append(proc)
    event = start_event(proc, image, sha)
    assert (await enforcer.execute(kill_command(proc))).outcome is Outcome.SUCCEEDED
    assert proc.wait(5) == -9
    blocked(enforcer, sha)
    result = await enforcer.block_start(event)  # its start event, queued before the command ran
    assert result is not None and result.outcome is Outcome.SUCCEEDED
    assert result.reason is not None and "already killed by kill_process_tree" in result.reason
    assert await enforcer.kill_running(sha, since=datetime.now(UTC)) == []  # nothing left to kill


async def test_a_process_that_died_on_its_own_still_fails_as_not_found(
    rig: tuple[Enforcer, FakeReporter], procs: list[Popen[bytes]]
) -> None:
    enforcer, _ = rig
    proc = spawn("sleep", "60")
    procs.append(proc)
    order = kill_command(proc)
    proc.kill()
    proc.wait(5)
    result = await enforcer.execute(order)
    assert result.outcome is Outcome.FAILED and result.error_class == "not_found"
    assert result.reason is not None and "already killed" not in result.reason


async def test_only_the_latest_kills_are_remembered(
    monkeypatch: pytest.MonkeyPatch, rig: tuple[Enforcer, FakeReporter], procs: list[Popen[bytes]]
) -> None:
    monkeypatch.setattr(enforcer_module, "_KILLS_KEPT", 1)
    enforcer, _ = rig
    first, second = spawn("sleep", "60"), spawn("sleep", "61")
    procs += [first, second]
    orders = [kill_command(first), kill_command(second)]
    assert [(await enforcer.execute(o)).outcome for o in orders] == [Outcome.SUCCEEDED] * 2
    again = await asyncio.gather(*(enforcer.execute(o) for o in orders))
    assert [r.outcome for r in again] == [Outcome.FAILED, Outcome.SUCCEEDED]  # the first was forgotten


async def test_audit_mode_remembers_no_kill(
    tmp_path: Path, rig: tuple[Enforcer, FakeReporter], procs: list[Popen[bytes]]
) -> None:
    enforcer, _ = rig
    enforcer.mode = Mode.AUDIT
    proc = spawn("sleep", "60")
    procs.append(proc)
    order = kill_command(proc)
    assert (await enforcer.execute(order)).outcome is Outcome.AUDITED
    proc.kill()
    proc.wait(5)
    assert (await enforcer.execute(order)).outcome is Outcome.FAILED  # "would kill" killed nothing


async def test_a_command_racing_the_verdicts_kill_of_the_same_process_waits_for_it_and_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rig: tuple[Enforcer, FakeReporter],
    procs: list[Popen[bytes]],
) -> None:
    """The two arrive together (two followers, two tasks): the verdict's kill has signalled the process
    but not yet confirmed it dead when the command looks, finds it gone, and must not report a failed
    `not_found` for a process this very enforcer is killing (seen once in a clean-clone run)."""
    enforcer, reporter = rig
    image, sha = private_sleep(tmp_path)
    locker = spawn(str(image), "60")
    procs.append(locker)
    order = kill_command(locker)
    blocked(enforcer, sha)
    real = proctree.kill_process_tree  # what the enforcer calls (imported by name there)
    calls: list[str] = []

    async def slow_to_confirm(*args: object, **kwargs: object) -> object:
        report = await real(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(str(report.outcome))
        if len(calls) == 1:
            await asyncio.sleep(0.3)  # the verdict's kill: signalled, still confirming
        return report

    monkeypatch.setattr(enforcer_module, "kill_process_tree", slow_to_confirm)

    async def command_a_little_later() -> object:
        await asyncio.sleep(0.1)
        return await enforcer.execute(order)

    [instance], result = await asyncio.gather(enforcer.kill_running(sha, since=datetime.now(UTC)),
                                              command_a_little_later())
    assert calls == ["killed", "not_found"] and locker.wait(5) == -9  # the race happened as described
    assert instance.outcome is Outcome.SUCCEEDED
    assert result.outcome is Outcome.SUCCEEDED and result.error_class is None  # type: ignore[attr-defined]
    assert "already killed by kill_blocked_instance" in (result.reason or "")  # type: ignore[attr-defined]
    assert [r.outcome for r in reporter.results] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED]
