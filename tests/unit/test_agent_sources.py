"""`ringfence-agent run` with the Sysmon and replay sources: built from settings, checked before start,
and shipped through the spool and publisher (a fake producer stands in for Kafka)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeKafka

from agents.cli import main
from agents.commands.run import SOURCE_BUILDERS, run_agent
from agents.settings import AgentSettings
from agents.sources import SourceConfigError
from agents.sysmon import load_events
from schemas.codec import encode_event
from schemas.devices import Heartbeat
from schemas.topics import KafkaSettings

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sysmon" / "otrf_excerpt.jsonl"
EVENTS, DEVICES = "t.events", "t.devices"


def settings(tmp_path: Path, **overrides: Any) -> AgentSettings:
    base: dict[str, Any] = dict(device_id="lab-1", enforce=False, spool_dir=tmp_path / "spool", linger_ms=20,
                                spool_commit_ms=0, events_topic=EVENTS, devices_topic=DEVICES,
                                heartbeat_interval_s=0.05)
    return AgentSettings(**{**base, **overrides})


def test_sysmon_paths_and_replay_settings_accept_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_AGENT_SOURCES", "linux,sysmon")
    monkeypatch.setenv("RINGFENCE_AGENT_SYSMON_PATHS", "/logs/a.evtx, /logs/b")
    monkeypatch.setenv("RINGFENCE_AGENT_REPLAY_PATHS", '["/r/1.jsonl"]')
    monkeypatch.setenv("RINGFENCE_AGENT_REPLAY_SPEED", "0")
    got = AgentSettings()
    assert got.sources == ("linux", "sysmon") and got.sysmon_paths == ("/logs/a.evtx", "/logs/b")
    assert got.replay_paths == ("/r/1.jsonl",) and got.replay_speed == 0
    monkeypatch.setenv("RINGFENCE_AGENT_REPLAY_SPEED", "-1")
    with pytest.raises(ValueError, match="replay_speed"):
        AgentSettings()


async def test_agent_ships_a_sysmon_log_as_its_own_device_then_stops(tmp_path: Path) -> None:
    kafka = FakeKafka()
    await run_agent(settings(tmp_path, sources=("sysmon",), sysmon_paths=(str(FIXTURE),)), KafkaSettings(),
                    producer_factory=kafka.factory)
    keys = {key for key, _value in kafka.values(EVENTS)}
    events = [event for batch in kafka.batches(EVENTS) for event in batch.events]
    assert keys == {b"lab-1"} and len(events) == 15  # the source ended: the agent flushed and stopped
    assert [e.event_id for e in events] == [e.event_id for e in load_events(FIXTURE, device_id="lab-1")]
    assert [e.seq for e in events] == list(range(15)) and {e.device_id for e in events} == {"lab-1"}
    # whether a heartbeat fits in a run this short is timing (test_publisher_agent_run checks them)
    beats = [Heartbeat.model_validate_json(value) for _key, value in kafka.values(DEVICES)]
    assert all(beat.device_id == "lab-1" for beat in beats)


async def test_sysmon_record_mode_keeps_each_hosts_device_id(tmp_path: Path) -> None:
    kafka = FakeKafka()
    agent = settings(tmp_path, sources=("sysmon",), sysmon_paths=(str(tmp_path / "logs"),),
                     sysmon_device="record")
    (tmp_path / "logs").mkdir()
    shutil.copyfile(FIXTURE, tmp_path / "logs" / "day1.jsonl")
    await run_agent(agent, KafkaSettings(), producer_factory=kafka.factory)
    batches = kafka.batches(EVENTS)
    assert {b.device_id for b in batches} == {e.device_id for e in load_events(FIXTURE)}
    keys = [key for key, _value in kafka.values(EVENTS)]
    assert keys == [batch.device_id.encode() for batch in batches]


async def test_replay_source_plays_recorded_events_through_the_publisher(tmp_path: Path) -> None:
    recorded = list(load_events(FIXTURE, device_id="rec-1"))
    path = tmp_path / "rec.jsonl"
    path.write_bytes(b"".join(encode_event(event) + b"\n" for event in recorded))
    kafka = FakeKafka()
    await run_agent(settings(tmp_path, sources=("replay",), replay_paths=(str(path),), replay_speed=0),
                    KafkaSettings(), producer_factory=kafka.factory)
    events = [event for batch in kafka.batches(EVENTS) for event in batch.events]
    assert [e.event_id for e in events] == [e.event_id for e in recorded]
    assert {key for key, _v in kafka.values(EVENTS)} == {b"rec-1"}


@pytest.mark.parametrize(("source", "fields", "message"), [
    ("sysmon", {}, "no input files"),
    ("sysmon", {"sysmon_paths": ("/nonexistent/x.evtx",)}, "no such file: /nonexistent/x.evtx"),
    ("sysmon", {"sysmon_paths": ("EVTX",), "sysmon_follow": True}, "only plain JSON Lines"),
    ("replay", {"replay_paths": ("/nonexistent/r.jsonl",)}, "no such file"),
    ("replay", {"replay_paths": (str(FIXTURE),)}, "is not BehaviorEvent JSON Lines"),
])
def test_a_source_that_cannot_start_is_refused_with_its_reason(
    tmp_path: Path, source: str, fields: dict[str, Any], message: str
) -> None:
    evtx = tmp_path / "a.evtx"
    evtx.write_bytes(b"ElfFile\x00" + b"\x00" * 64)
    fields = {name: tuple(str(evtx) if v == "EVTX" else v for v in value) if isinstance(value, tuple)
              else value for name, value in fields.items()}
    with pytest.raises(SourceConfigError, match=message) as raised:
        SOURCE_BUILDERS[source](settings(tmp_path, **fields))
    assert str(raised.value).startswith(f"source {source}:")


def test_run_command_refuses_a_bad_source_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RINGFENCE_AGENT_SOURCES", "sysmon")
    monkeypatch.setenv("RINGFENCE_AGENT_SYSMON_PATHS", str(tmp_path / "missing.evtx"))
    monkeypatch.setenv("RINGFENCE_AGENT_SPOOL_DIR", str(tmp_path / "spool"))
    assert main(["run"]) == 2
    assert "source sysmon: no such file" in capsys.readouterr().err
    assert not (tmp_path / "spool").exists()  # nothing was started


async def test_a_followed_sysmon_log_ships_lines_appended_while_the_agent_runs(tmp_path: Path) -> None:
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    log = tmp_path / "sysmon.jsonl"
    log.write_bytes(b"".join(lines[:5]))
    kafka = FakeKafka()
    agent = settings(tmp_path, sources=("sysmon",), sysmon_paths=(str(log),), sysmon_follow=True,
                     sysmon_poll_interval_s=0.05)

    async def append_later() -> None:
        await asyncio.sleep(0.5)
        with log.open("ab") as handle:
            handle.write(b"".join(lines[5:]))

    writer = asyncio.create_task(append_later())
    await run_agent(agent, KafkaSettings(), producer_factory=kafka.factory, duration_s=2.5)
    await writer
    events = [event for batch in kafka.batches(EVENTS) for event in batch.events]
    assert [e.event_id for e in events] == [e.event_id for e in load_events(FIXTURE, device_id="lab-1")]
