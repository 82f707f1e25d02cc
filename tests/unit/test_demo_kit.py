"""The demo's attack kit stays in its folder, the topic-set environment is what the settings read,
and the supervisor stops what it starts."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from agents.settings import AgentSettings
from pipeline.demo_kit import (
    DemoError,
    FleetTopics,
    Supervisor,
    agent_env,
    assigned_partitions,
    prepare_attack,
    worker_env,
)
from pipeline.settings import WorkerSettings
from schemas.topics import ACTIONS, ALL_TOPICS, EVENTS, VERDICTS, WORKER_STATE


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_the_attack_kit_is_a_runnable_private_binary_and_files_in_one_folder(tmp_path: Path) -> None:
    kit = prepare_attack(tmp_path / "a", files=5)
    other = prepare_attack(tmp_path / "b", files=1)
    assert kit.sha256 != other.sha256  # unique per kit: a verdict on it blocks nothing else
    assert kit.locker.read_bytes() == kit.sample.read_bytes() and os.access(kit.locker, os.X_OK)
    ran = subprocess.run([str(kit.locker), "-c", "echo ok"], capture_output=True, check=True)
    assert ran.stdout == b"ok\n"
    assert len(kit.victims) == 5 and all(v.parent == kit.work / "victim" for v in kit.victims)
    assert all(str(p).startswith(str(tmp_path)) for p in (kit.root / "work").rglob("*"))


def test_the_attack_touches_nothing_outside_its_folder(tmp_path: Path) -> None:
    kit = prepare_attack(tmp_path / "kit", files=3)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    system_crontab = Path("/var/spool/cron/crontabs/root")
    before = system_crontab.stat().st_mtime_ns if system_crontab.exists() else None
    subprocess.run(kit.argv(0), cwd=outside, check=True, timeout=60)
    assert kit.encrypted() == 3 and kit.originals_left() == 0
    assert {"work/var/spool/cron/crontabs/root", "work/loot/shadow.txt",
            "work/victim/README_RESTORE.txt"} <= tree(kit.root)
    assert tree(outside) == {"keep.txt"} and (outside / "keep.txt").read_text() == "untouched"
    assert (system_crontab.stat().st_mtime_ns if system_crontab.exists() else None) == before


def test_a_kit_is_never_written_over_an_existing_attack(tmp_path: Path) -> None:
    prepare_attack(tmp_path / "kit", files=1)
    with pytest.raises(FileExistsError):
        prepare_attack(tmp_path / "kit", files=1)


def test_the_topic_set_environment_is_what_agent_and_worker_settings_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = FleetTopics("t-1.")
    for name, value in {**worker_env(topics, tmp_path / "keys", "k:1"),
                        **agent_env(topics, tmp_path / "bundle", tmp_path / "state", "k:1")}.items():
        if name != "RINGFENCE_AGENT_IDENTITY_DIR":  # needs a real bundle (tests/unit/test_enroll.py)
            monkeypatch.setenv(name, value)
    agent, worker = AgentSettings(), WorkerSettings()
    assert (agent.events_topic, agent.verdicts_topic, agent.actions_topic) == (
        f"t-1.{EVENTS}", f"t-1.{VERDICTS}", f"t-1.{ACTIONS}")
    assert agent.state_dir == tmp_path / "state" / "state" and agent.spool_sync == "normal"
    assert (worker.events_topic, worker.state_topic, worker.keys_dir) == (
        f"t-1.{EVENTS}", f"t-1.{WORKER_STATE}", tmp_path / "keys")
    assert worker.kafka.bootstrap == "k:1" and worker.group_id == "t-1.workers"
    assert not worker.provisional_model  # the demo's worker scores with the trained model
    assert sorted(topics.all()) == sorted(f"t-1.{t}" for t in ALL_TOPICS)


async def test_the_supervisor_stops_children_and_reads_only_a_restarts_log(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    supervisor.start("chatty", ["sh", "-c", "echo first-run; sleep 30"], env={})
    await supervisor.wait_for("chatty", "first-run", 10)
    assert supervisor.stop("chatty", 5) == -15
    supervisor.start("chatty", ["sh", "-c", "echo second-run; exit 3"], env={})
    with pytest.raises(DemoError, match="exited before 'first-run'"):
        await supervisor.wait_for("chatty", "first-run", 10)
    assert "second-run" in supervisor.log("chatty") and "first-run" not in supervisor.log("chatty")
    supervisor.stop_all()
    assert not supervisor.children


async def test_waiting_for_a_line_that_never_comes_times_out(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    supervisor.start("quiet", ["sleep", "30"], env={})
    try:
        with pytest.raises(DemoError, match="timed out"):
            await asyncio.wait_for(supervisor.wait_for("quiet", "never", 0.3), 5)
    finally:
        supervisor.stop_all(2)


def test_starting_a_name_again_stops_the_child_still_running_under_it(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    first = supervisor.start("dev-b", ["sleep", "30"], env={})
    try:
        second = supervisor.start("dev-b", ["sleep", "30"], env={})  # e.g. a test after a failed one
        assert first.poll() == -15  # not orphaned: nothing else would ever stop it
        assert second.poll() is None and supervisor.children == {"dev-b": second}
    finally:
        supervisor.stop_all(2)
        if first.poll() is None:
            first.kill()
    assert second.poll() is not None


def test_assigned_partitions_reads_the_latest_assignment_of_a_worker_log() -> None:
    line = "18:59:20,801 INFO pipeline.worker: assigned events partitions {} (kept 0, restored 0)\n"
    assert assigned_partitions("worker starting\nrevoked events partitions [0, 1]\n") is None
    assert assigned_partitions(line.format("[]")) == []
    assert assigned_partitions(line.format("[0, 1, 2, 3]") + line.format("[1, 3]")) == [1, 3]
