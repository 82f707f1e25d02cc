"""`ringfence alerts tail|show` as an analyst runs them, against real Kafka on unique topics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import topics
from schemas.alerts import Alert, ProcessTreeSnapshot, Tactic, TreeNode, detection_name
from schemas.codec import encode
from schemas.common import Mode, Platform
from schemas.devices import DeviceRecord

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def _alert(alert_id: str, device_id: str, tactic: Tactic, score: float) -> Alert:
    nodes = (TreeNode(process_key="r", image="/bin/bash", pid=1, command_line="bash -c 'curl x | sh'"),
             TreeNode(process_key="c", parent_process_key="r", image="/tmp/x", pid=2, scored=True,
                      command_line="/tmp/x --encrypt \x1b]0;owned\x07"))
    return Alert(alert_id=alert_id, device_id=device_id, platform=Platform.LINUX,
                 detection_name=detection_name(Platform.LINUX, tactic, "Gen"), tactic=tactic, score=score,
                 model_version="m1", feature_version="f1", mode=Mode.AUDIT,
                 process_tree=ProcessTreeSnapshot(root_process_key="r", nodes=nodes),
                 first_seen=NOW - timedelta(seconds=5), last_seen=NOW, created_at=NOW)


def _device(device_id: str, group: str) -> DeviceRecord:
    return DeviceRecord(device_id=device_id, hostname=device_id, platform=Platform.LINUX, group=group,
                        effective_mode=Mode.AUDIT, agent_version="1", enrolled_at=NOW, last_seen=NOW)


async def _setup(bootstrap: str, prefix: str, alerts: list[Alert], devices: list[DeviceRecord]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(prefix + topics.ALERTS, 3, 1),
                                   NewTopic(prefix + topics.DEVICES, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for device in devices:
            await producer.send_and_wait(prefix + topics.DEVICES, key=device.device_id.encode(),
                                         value=encode(device))
        for alert in alerts:
            await producer.send_and_wait(prefix + topics.ALERTS, key=alert.device_id.encode(),
                                         value=encode(alert))
        await producer.send_and_wait(prefix + topics.ALERTS, key=b"x", value=b"not an alert")
    finally:
        await producer.stop()


def _ringfence(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "COLUMNS": "120"}, check=False)


@pytest.fixture
def prefix(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> str:
    prefix = unique_name("alerts-cli") + "."
    alerts = [_alert("a-fin-cred", "fin-1", Tactic.CREDENTIAL_ACCESS, 0.95),
              _alert("a-fin-low", "fin-2", Tactic.CREDENTIAL_ACCESS, 0.4),
              _alert("a-lab-impact", "lab-1", Tactic.IMPACT, 0.99),
              _alert("a-fin-exec", "fin-1", Tactic.EXECUTION, 0.91)]
    devices = [_device("fin-1", "finance"), _device("fin-2", "finance"), _device("lab-1", "lab")]
    asyncio.run(_setup(kafka_bootstrap, prefix, alerts, devices))
    return prefix


def test_tail_filters_by_group_and_score_from_the_beginning(prefix: str, kafka_bootstrap: str) -> None:
    result = _ringfence("alerts", "tail", "--from-beginning", "--group", "finance", "--min-score", "0.9",
                        "--json", "--limit", "2", "--prefix", prefix, "--bootstrap", kafka_bootstrap)
    assert result.returncode == 0, result.stderr
    shown = sorted(orjson.loads(line)["alert_id"] for line in result.stdout.splitlines())
    assert shown == ["a-fin-cred", "a-fin-exec"]
    assert "skipping invalid alert" in result.stderr  # the junk record was reported, not fatal


def test_tail_table_and_ocsf(prefix: str, kafka_bootstrap: str) -> None:
    table = _ringfence("alerts", "tail", "--from-beginning", "--tactic", "impact", "--limit", "1",
                       "--prefix", prefix, "--bootstrap", kafka_bootstrap)
    header, row = table.stdout.splitlines()
    assert header.startswith("TIME") and "Behavior:Linux/Impact.Gen!ml" in row
    assert row.endswith("a-lab-impact")
    ocsf = _ringfence("alerts", "tail", "--from-beginning", "--device", "lab-1", "--ocsf", "--limit", "1",
                      "--prefix", prefix, "--bootstrap", kafka_bootstrap)
    assert orjson.loads(ocsf.stdout)["finding_info"]["uid"] == "a-lab-impact"


def test_tail_follows_alerts_published_after_it_started(prefix: str, kafka_bootstrap: str) -> None:
    command = [sys.executable, "-m", "pipeline.cli", "alerts", "tail", "--json", "--limit", "1",
               "--prefix", prefix, "--bootstrap", kafka_bootstrap]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as tail:
        time.sleep(4)  # let it reach the end of the topic; old alerts must not be printed
        fresh = _alert("a-fresh", "lab-1", Tactic.IMPACT, 0.97)
        asyncio.run(_produce(kafka_bootstrap, prefix + topics.ALERTS, fresh))
        out, err = tail.communicate(timeout=60)
    assert tail.returncode == 0, err
    assert [orjson.loads(line)["alert_id"] for line in out.splitlines()] == ["a-fresh"]


async def _produce(bootstrap: str, topic: str, alert: Alert) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=alert.device_id.encode(), value=encode(alert))
    finally:
        await producer.stop()


def test_show_draws_the_tree_and_reports_a_missing_alert(prefix: str, kafka_bootstrap: str) -> None:
    shown = _ringfence("alerts", "show", "a-lab-impact", "--width", "120", "--prefix", prefix,
                       "--bootstrap", kafka_bootstrap)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Behavior:Linux/Impact.Gen!ml\n")
    tree = shown.stdout.split("Process tree (root r):\n")[1].splitlines()
    assert tree[:5] == ["bash (pid 1)", "│   cmd   bash -c 'curl x | sh'", "│   image /bin/bash",
                        "└── x (pid 2)  ◀ scored", "        cmd   /tmp/x --encrypt \\x1b]0;owned\\x07"]
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\\x1b]0;owned\\x07" in shown.stdout
    missing = _ringfence("alerts", "show", "nope", "--timeout", "10", "--prefix", prefix,
                         "--bootstrap", kafka_bootstrap)
    assert missing.returncode == 1
    assert "ringfence: error: not among the 5 records scanned" in missing.stderr
