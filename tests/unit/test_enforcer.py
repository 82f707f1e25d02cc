"""Enforcement on real processes this test spawns: tree kills, PID-reuse safety, blocklisted starts,
running instances of a newly blocked file, checked commands (forged, expired, mis-targeted and
replayed ones refused and reported), quarantine by command, and audit mode acting on nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen
from types import SimpleNamespace
from typing import Any

import pytest
from enforcement_support import (
    DEVICE,
    FakeReporter,
    alive,
    children_of,
    command,
    private_sleep,
    sha256_of,
    spawn,
    start_event,
    verdict,
    wait_until,
)

from agents.blocklist import Blocklist
from agents.command_follower import CommandFollower, CommandHandler, CommandStore
from agents.enforcement_errors import StateError
from agents.enforcer import Enforcer
from agents.linux.procfs import make_process_key, process_key_for, read_stat, start_time_ns_from_ticks
from agents.proctree import KillOutcome, kill_process_tree, protected_pids
from agents.quarantine import Quarantine
from agents.verdict_follower import VerdictHandler, VerdictRecord
from schemas.actions import ActionKind, Outcome
from schemas.codec import encode
from schemas.commands import CommandAction
from schemas.common import Mode
from schemas.events import Platform
from schemas.signing import Keyring, SigningKey

PROTECTED = protected_pids()



def key_of(pid: int) -> str:
    key = process_key_for(pid, DEVICE)
    assert key is not None
    return key


def shell_tree(procs: list[Popen[bytes]], script: str, children: int) -> int:
    shell = spawn("/bin/sh", "-c", script)
    procs.append(shell)
    assert wait_until(lambda: len(children_of(shell.pid)) >= children), "children did not start"
    return shell.pid


# -- kill_process_tree ----------------------------------------------------------------------------

async def test_kill_tree_kills_every_descendant_children_first(procs: list[Popen[bytes]]) -> None:
    root = shell_tree(procs, "sleep 60 & sh -c 'sleep 60 & wait' & wait", children=2)
    assert wait_until(lambda: any(children_of(child) for child in children_of(root)))
    tree = [root, *children_of(root)]
    tree += [grandchild for child in tree[1:] for grandchild in children_of(child)]

    report = await kill_process_tree(key_of(root), device_id=DEVICE, pid_hint=root, protected=PROTECTED)

    assert report.outcome is KillOutcome.KILLED and report.survivors == ()
    assert set(report.killed) == set(tree) and len(tree) == 4
    assert report.killed[-1] == root  # the root dies last, its children before it
    assert not any(alive(pid) for pid in tree)


async def test_kill_by_key_without_a_pid_hint(procs: list[Popen[bytes]]) -> None:
    victim = spawn("sleep", "60")
    procs.append(victim)
    report = await kill_process_tree(key_of(victim.pid), device_id=DEVICE, protected=PROTECTED)
    assert report.outcome is KillOutcome.KILLED and report.pid == victim.pid
    assert victim.wait(timeout=5) == -9


async def test_recycled_pid_is_left_alone(procs: list[Popen[bytes]]) -> None:
    """The command names (pid, start time T); the process now at that pid started at another time."""
    bystander = spawn("sleep", "60")
    procs.append(bystander)
    started_ns = start_time_ns_from_ticks(read_stat(bystander.pid).start_ticks)
    earlier_process_key = make_process_key(DEVICE, bystander.pid, started_ns - 10_000_000_000)

    report = await kill_process_tree(earlier_process_key, device_id=DEVICE, pid_hint=bystander.pid,
                                     protected=PROTECTED)

    assert report.outcome is KillOutcome.PID_REUSED and "left alone" in report.detail
    assert alive(bystander.pid) and bystander.poll() is None


async def test_key_of_another_device_matches_nothing(procs: list[Popen[bytes]]) -> None:
    bystander = spawn("sleep", "60")
    procs.append(bystander)
    other_key = process_key_for(bystander.pid, "another-device")
    assert other_key is not None
    report = await kill_process_tree(other_key, device_id=DEVICE, protected=PROTECTED)
    assert report.outcome is KillOutcome.NOT_FOUND and alive(bystander.pid)


async def test_exited_process_is_not_found(procs: list[Popen[bytes]]) -> None:
    gone = spawn("true")
    key = key_of(gone.pid)
    gone.wait(timeout=5)
    report = await kill_process_tree(key, device_id=DEVICE, pid_hint=gone.pid, protected=PROTECTED)
    assert report.outcome is KillOutcome.NOT_FOUND


async def test_the_agent_itself_is_protected() -> None:
    import os

    report = await kill_process_tree(key_of(os.getpid()), device_id=DEVICE, pid_hint=os.getpid(),
                                     protected=PROTECTED)
    assert report.outcome is KillOutcome.PROTECTED


# -- the enforcer on blocklist hits ---------------------------------------------------------------

class Rig:
    """An enforcer (and a command handler feeding it) over an in-memory blocklist."""

    def __init__(self, tmp_path: Path, mode: Mode, key: SigningKey) -> None:
        self.key = key
        self.reporter = FakeReporter()
        self.blocklist = Blocklist(None, "t.verdicts")
        self.enforcer = Enforcer(device_id=DEVICE, mode=mode, blocklist=self.blocklist,
                                 reporter=self.reporter, quarantine=Quarantine(tmp_path / "quarantine"),
                                 protected=PROTECTED)
        self.verdicts = VerdictHandler(device_id=DEVICE, group=None, blocklist=self.blocklist,
                                       keyring=Keyring.of([key.trusted()]), reporter=self.reporter,
                                       on_applied=[self.enforcer.on_verdict_applied])
        self.store_path = tmp_path / "state" / "commands.db"
        self.commands = self.command_handler()

    def command_handler(self) -> CommandHandler:
        return CommandHandler(device_id=DEVICE, keyring=Keyring.of([self.key.trusted()]),
                              store=CommandStore(self.store_path), reporter=self.reporter,
                              executor=self.enforcer.execute)

    def block(self, sha256: str) -> None:
        signed = verdict(sha256, self.key, issued_at=datetime.now(UTC))
        self.verdicts.handle(VerdictRecord(0, 0, sha256.encode(), encode(signed), timestamp_ms=0))


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def block(tmp_path: Path, key: SigningKey) -> Rig:
    return Rig(tmp_path, Mode.BLOCK, key)


@pytest.fixture
def audit(tmp_path: Path, key: SigningKey) -> Rig:
    return Rig(tmp_path, Mode.AUDIT, key)


async def test_blocklisted_start_is_killed(tmp_path: Path, block: Rig, procs: list[Popen[bytes]]) -> None:
    image, sha = private_sleep(tmp_path)
    block.block(sha)
    proc = spawn(str(image), "60")
    procs.append(proc)
    result = await block.enforcer.block_start(start_event(proc, image, sha))
    assert result is not None and result.outcome is Outcome.SUCCEEDED
    assert result.action is ActionKind.BLOCK_EXECUTION and result.artifact_id == sha
    assert result.pid == proc.pid and result.latency_ms is not None and result.latency_ms < 5000
    assert proc.wait(timeout=5) == -9


async def test_observe_queues_the_kill_and_run_carries_it_out(
    tmp_path: Path, block: Rig, procs: list[Popen[bytes]]
) -> None:
    image, sha = private_sleep(tmp_path)
    block.block(sha)
    innocent = spawn("sleep", "60")
    proc = spawn(str(image), "60")
    procs += [innocent, proc]
    runner = asyncio.create_task(block.enforcer.run())
    try:
        block.enforcer.observe(start_event(innocent, Path("/bin/sleep"), sha256_of(Path("/bin/sleep"))))
        block.enforcer.observe(start_event(proc, image, sha))
        for _ in range(1000):  # until the kill is reported, which follows the process's death
            if proc.poll() is not None and block.reporter.of(ActionKind.BLOCK_EXECUTION):
                break
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
    assert proc.poll() == -9 and alive(innocent.pid)
    assert [r.pid for r in block.reporter.of(ActionKind.BLOCK_EXECUTION)] == [proc.pid]


async def test_events_of_other_devices_or_platforms_are_not_acted_on(
    tmp_path: Path, block: Rig, procs: list[Popen[bytes]]
) -> None:
    image, sha = private_sleep(tmp_path)
    block.block(sha)
    proc = spawn(str(image), "60")
    procs.append(proc)
    ours = start_event(proc, image, sha)
    queued = block.enforcer._queue.qsize()  # the verdict itself queued a scan for running copies
    block.enforcer.observe(ours.model_copy(update={"device_id": "replayed-host"}))
    block.enforcer.observe(ours.model_copy(update={"platform": Platform.WINDOWS}))
    assert block.enforcer._queue.qsize() == queued
    block.enforcer.observe(ours)
    assert block.enforcer._queue.qsize() == queued + 1


async def test_audit_mode_reports_the_start_and_kills_nothing(
    tmp_path: Path, audit: Rig, procs: list[Popen[bytes]]
) -> None:
    image, sha = private_sleep(tmp_path)
    audit.block(sha)
    proc = spawn(str(image), "60")
    procs.append(proc)
    result = await audit.enforcer.block_start(start_event(proc, image, sha))
    assert result is not None and result.outcome is Outcome.AUDITED and "would kill 1" in result.reason
    assert alive(proc.pid)


async def test_new_verdict_kills_running_instances_only(
    tmp_path: Path, block: Rig, procs: list[Popen[bytes]]
) -> None:
    image, sha = private_sleep(tmp_path)
    first, second, innocent = spawn(str(image), "60"), spawn(str(image), "61"), spawn("sleep", "60")
    procs += [first, second, innocent]
    runner = asyncio.create_task(block.enforcer.run())
    try:
        block.block(sha)  # the verdict arrives while they run
        # Wait for the kills to be *reported*, not only for the processes to die: the enforcer
        # records a kill after it has verified the process is gone.
        for _ in range(1000):
            kills = block.reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)
            if first.poll() is not None and second.poll() is not None and len(kills) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
    assert first.poll() == -9 and second.poll() == -9 and alive(innocent.pid)
    kills = block.reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)
    assert sorted(r.pid or 0 for r in kills) == sorted([first.pid, second.pid])
    assert all(r.artifact_id == sha for r in kills)


async def test_verdicts_caught_up_at_once_share_one_scan_and_each_kills_its_own(
    tmp_path: Path, block: Rig, procs: list[Popen[bytes]]
) -> None:
    """An agent catching up on the verdict topic applies hundreds of verdicts at once: the running
    instances of every newly blocked file are found by one /proc scan, not one scan per verdict."""
    image_a, sha_a = private_sleep(tmp_path, "evil-a")
    image_b, sha_b = private_sleep(tmp_path, "evil-b")
    image_c, sha_c = private_sleep(tmp_path, "unblocked-since")
    victims = [spawn(str(image_a), "60"), spawn(str(image_b), "60")]
    innocent, pardoned = spawn("sleep", "60"), spawn(str(image_c), "60")
    procs += [*victims, innocent, pardoned]
    block.block(sha_a)
    for n in range(200):  # files not running here
        block.block(f"{n:064x}")
    block.block(sha_c)
    block.block(sha_b)
    block.blocklist.remove(sha_c, partition=0, offset=1)  # unblocked before the enforcer got to it
    runner = asyncio.create_task(block.enforcer.run())
    try:
        for _ in range(1000):
            if len(block.reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        runner.cancel()
    kills = block.reporter.of(ActionKind.KILL_BLOCKED_INSTANCE, Outcome.SUCCEEDED)
    assert sorted((r.artifact_id, r.pid) for r in kills) == sorted(
        [(sha_a, victims[0].pid), (sha_b, victims[1].pid)])
    assert all(v.wait(5) == -9 for v in victims) and alive(innocent.pid) and alive(pardoned.pid)
    assert block.enforcer.stats.scans == 1


async def test_audit_mode_reports_running_instances_and_kills_nothing(
    tmp_path: Path, audit: Rig, procs: list[Popen[bytes]]
) -> None:
    image, sha = private_sleep(tmp_path)
    proc = spawn(str(image), "60")
    procs.append(proc)
    audit.block(sha)
    results = await audit.enforcer.kill_running(sha, since=datetime.now(UTC))
    assert [r.outcome for r in results] == [Outcome.AUDITED] and alive(proc.pid)


# -- commands -------------------------------------------------------------------------------------

def kill_command(key: SigningKey | None, pid: int, **fields: Any) -> bytes:
    made = command(key, CommandAction.KILL_PROCESS_TREE, now=datetime.now(UTC),
                   process_key=process_key_for(pid, DEVICE), pid=pid, **fields)
    return encode(made)


async def test_signed_kill_command_kills_the_tree(block: Rig, procs: list[Popen[bytes]]) -> None:
    root = shell_tree(procs, "sleep 60 & wait", children=1)
    result = await block.commands.handle(kill_command(block.key, root))
    assert result is not None and result.outcome is Outcome.SUCCEEDED
    assert result.action is ActionKind.KILL_PROCESS_TREE and result.command_id
    assert not alive(root)


@pytest.mark.parametrize("case", ["forged", "unsigned", "expired", "future", "mis-targeted"])
async def test_bad_commands_are_refused_reported_and_not_run(
    block: Rig, procs: list[Popen[bytes]], case: str
) -> None:
    victim = spawn("sleep", "60")
    procs.append(victim)
    now = datetime.now(UTC)
    value = {
        "forged": lambda: kill_command(SigningKey.generate(key_id=block.key.key_id), victim.pid),
        "unsigned": lambda: kill_command(None, victim.pid),
        "expired": lambda: encode(command(block.key, now=now - timedelta(hours=2), ttl=timedelta(hours=1),
                                          process_key=key_of(victim.pid), pid=victim.pid)),
        "future": lambda: encode(command(block.key, now=now + timedelta(hours=1),
                                         process_key=key_of(victim.pid), pid=victim.pid)),
        "mis-targeted": lambda: encode(command(block.key, device_id="another-device", now=now,
                                               process_key=key_of(victim.pid), pid=victim.pid)),
    }[case]()
    result = await block.commands.handle(value)
    expected = {"forged": "SignatureError", "unsigned": "SignatureError", "expired": "Expired",
                "future": "Expired", "mis-targeted": "WrongTarget"}[case]
    assert result is not None and result.outcome is Outcome.REFUSED and result.error_class == expected
    assert block.reporter.results == [result] and result.device_id == DEVICE
    assert alive(victim.pid)


async def test_replayed_command_is_refused_even_after_a_restart(
    block: Rig, procs: list[Popen[bytes]]
) -> None:
    first = spawn("sleep", "60")
    procs.append(first)
    value = kill_command(block.key, first.pid)
    assert (await block.commands.handle(value)).outcome is Outcome.SUCCEEDED  # type: ignore[union-attr]
    again = await block.commands.handle(value)
    assert again is not None and again.outcome is Outcome.REFUSED and again.error_class == "Replayed"

    block.commands.store.close()
    block.commands = block.command_handler()  # a restart: the nonce comes back from disk
    after_restart = await block.commands.handle(value)
    assert after_restart is not None and after_restart.error_class == "Replayed"


async def test_a_restart_while_an_accepted_command_runs_resumes_past_it_without_a_refusal(
    block: Rig, procs: list[Popen[bytes]]
) -> None:
    """Shut down between accepting a command and saving its record's position (a cancelled task):
    the position was saved with the nonce, so the restarted follower does not read the command again
    and report it as a refused replay (nor run it twice)."""
    victim = spawn("sleep", "60")
    procs.append(victim)
    ran: list[str] = []

    async def interrupted(command: Any) -> Any:
        ran.append(command.command_id)
        raise asyncio.CancelledError  # the agent stops while the action runs

    block.commands._executor = interrupted
    follower = CommandFollower(block.commands, lambda: None, "t.commands")
    value = kill_command(block.key, victim.pid)
    record = SimpleNamespace(key=DEVICE.encode(), value=value, offset=7, headers=())
    with pytest.raises(asyncio.CancelledError):
        await follower._one(0, record)
    block.commands.store.close()
    restarted = block.command_handler()
    assert ran and restarted.store.positions("t.commands") == {0: 8}  # resumes past the command
    assert restarted.refused == 0 and block.reporter.results == []


def test_an_accepted_nonce_and_its_position_are_saved_together_or_not_at_all(tmp_path: Path) -> None:
    store = CommandStore(tmp_path / "commands.db")
    store.handling(("t.commands", 0, 8))
    store.remember("n-1", datetime.now(UTC) + timedelta(hours=1))
    assert store.positions("t.commands") == {0: 8} and "n-1" in store
    store.remember("n-2", datetime.now(UTC) + timedelta(hours=1))  # no record named: no position
    store.handling(("t.commands", 0, 9))
    store._db.execute("DROP TABLE nonces")  # a damaged file: the nonce cannot be saved
    with pytest.raises(StateError):
        store.remember("n-3", datetime.now(UTC) + timedelta(hours=1))
    assert store.positions("t.commands") == {0: 8}  # ... nor the position that came with it
    store.close()


async def test_kill_command_for_a_recycled_pid_fails_and_leaves_it(
    block: Rig, procs: list[Popen[bytes]]
) -> None:
    bystander = spawn("sleep", "60")
    procs.append(bystander)
    started_ns = start_time_ns_from_ticks(read_stat(bystander.pid).start_ticks)
    stale_key = make_process_key(DEVICE, bystander.pid, started_ns - 5_000_000_000)
    value = encode(command(block.key, now=datetime.now(UTC), process_key=stale_key, pid=bystander.pid))
    result = await block.commands.handle(value)
    assert result is not None and result.outcome is Outcome.FAILED and result.error_class == "pid_reused"
    assert alive(bystander.pid)


async def test_audit_mode_kill_command_kills_nothing(audit: Rig, procs: list[Popen[bytes]]) -> None:
    victim = spawn("sleep", "60")
    procs.append(victim)
    result = await audit.commands.handle(kill_command(audit.key, victim.pid))
    assert result is not None and result.outcome is Outcome.AUDITED and alive(victim.pid)


async def test_undecodable_commands_are_refused_when_they_can_be_named(block: Rig) -> None:
    named = b'{"action": "quarantine_file", "command_id": "c-1", "device_id": "' + DEVICE.encode() + b'"}'
    assert await block.commands.handle(named) is None
    [refused] = block.reporter.results
    assert refused.action is ActionKind.QUARANTINE_FILE and refused.command_id == "c-1"
    assert refused.outcome is Outcome.REFUSED and refused.error_class == "ValidationFailed"
    assert await block.commands.handle(b"\xff not json") is None
    assert block.commands.unreportable == 1 and block.commands.refused == 2


async def test_quarantine_and_restore_commands(tmp_path: Path, block: Rig) -> None:
    image, sha = private_sleep(tmp_path)
    now = datetime.now(UTC)
    quarantined = await block.commands.handle(encode(command(
        block.key, CommandAction.QUARANTINE_FILE, now=now, path=str(image), sha256=sha)))
    assert quarantined is not None and quarantined.outcome is Outcome.SUCCEEDED and not image.exists()
    restored = await block.commands.handle(encode(command(
        block.key, CommandAction.RESTORE_FILE, now=now, sha256=sha)))
    assert restored is not None and restored.outcome is Outcome.SUCCEEDED and sha256_of(image) == sha


async def test_quarantine_of_changed_content_fails(tmp_path: Path, block: Rig) -> None:
    image, _ = private_sleep(tmp_path)
    result = await block.commands.handle(encode(command(
        block.key, CommandAction.QUARANTINE_FILE, now=datetime.now(UTC), path=str(image), sha256="1" * 64)))
    assert result is not None and result.outcome is Outcome.FAILED and result.error_class == "ContentMismatch"
    assert image.exists()


async def test_audit_mode_quarantines_nothing(tmp_path: Path, audit: Rig) -> None:
    image, sha = private_sleep(tmp_path)
    result = await audit.commands.handle(encode(command(
        audit.key, CommandAction.QUARANTINE_FILE, now=datetime.now(UTC), path=str(image), sha256=sha)))
    assert result is not None and result.outcome is Outcome.AUDITED and "content matches" in result.reason
    assert image.exists()
