"""`ringfence-agent run` end to end: a real agent process ships live events and a heartbeat, and
stops cleanly on SIGTERM with nothing left in its spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from agents.spool import Spool
from schemas.codec import decode_batch
from schemas.devices import Heartbeat
from schemas.events import BehaviorEvent, FileCreate, ProcessEnd

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def consume(
    bootstrap: str, topic: str, until: Callable[[list[bytes]], bool], timeout_s: float = 30
) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None)
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(values) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(record.value for record in records)
    finally:
        await consumer.stop()
    return values


def wait_for_log(path: Path, text: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"agent never logged {text!r}:\n{path.read_text()[-3000:]}"
        time.sleep(0.1)


async def test_agent_ships_live_events_and_heartbeats_then_stops_on_sigterm(
    tmp_path: Path, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    events_topic, devices_topic = unique_name("it-agent-run-events"), unique_name("it-agent-run-devices")
    device = unique_name("itest-agent")
    watched = tmp_path / "watched"
    watched.mkdir()
    env = {**os.environ, "RINGFENCE_KAFKA_BOOTSTRAP": kafka_bootstrap, "RINGFENCE_AGENT_DEVICE_ID": device,
           "RINGFENCE_AGENT_SPOOL_DIR": str(tmp_path / "spool"), "RINGFENCE_AGENT_WATCH_PATHS": str(watched),
           "RINGFENCE_AGENT_EVENTS_TOPIC": events_topic, "RINGFENCE_AGENT_DEVICES_TOPIC": devices_topic,
           "RINGFENCE_AGENT_HEARTBEAT_INTERVAL_S": "1", "RINGFENCE_AGENT_LINGER_MS": "50",
           "RINGFENCE_AGENT_QUARANTINE_DIR": str(tmp_path / "quarantine"), "RINGFENCE_AGENT_SOURCES": "linux"}
    log_path = tmp_path / "agent.log"
    with open(log_path, "w") as log:
        agent = subprocess.Popen([sys.executable, "-m", "agents.cli", "run"], cwd=REPO, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_log(log_path, "process events:")
        (watched / "dropped.bin").write_bytes(b"payload")
        shell = subprocess.run(["/bin/sh", "-c", "sleep 0.2; exit 7"], check=False)
        assert shell.returncode == 7

        def seen(values: list[bytes]) -> bool:
            events = [e for v in values for e in decode_batch(v).events]
            exited = any(isinstance(e.payload, ProcessEnd) and e.payload.exit_code == 7 for e in events)
            dropped = any(isinstance(e.payload, FileCreate) and e.payload.path.endswith("dropped.bin")
                          for e in events)
            return exited and dropped

        values = await consume(kafka_bootstrap, events_topic, seen)
        beats = await consume(kafka_bootstrap, devices_topic, lambda v: len(v) >= 1)
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=30)
    assert code == 0, log_path.read_text()[-3000:]

    events: list[BehaviorEvent] = [e for v in values for e in decode_batch(v).events]
    assert seen(values)
    assert all(e.device_id == device for e in events)
    seqs = [e.seq for e in events]
    assert seqs == list(range(len(seqs)))  # numbered by the spool, in order, no gap
    heartbeat = Heartbeat.model_validate_json(beats[0])
    assert heartbeat.device_id == device and heartbeat.agent_version
    assert "agent " + device + " stopped" in log_path.read_text()
    spool = Spool(tmp_path / "spool" / "spool.db")
    assert spool.pending_events == 0  # SIGTERM flushed the spool
    spool.close()
