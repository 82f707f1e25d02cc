"""`ringfence topics apply|check` against the real broker, on a uniquely prefixed copy of the topic set."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.commands.topics import default_topics_file
from pipeline.topics_admin import ObservedTopic, TopicsAdmin
from pipeline.topics_spec import load_topics_file
from schemas import topics

pytestmark = pytest.mark.integration


def _cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RINGFENCE_KAFKA_BOOTSTRAP": bootstrap}
    env.pop("RINGFENCE_EVENTS_PARTITIONS", None)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "topics", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


async def _with_admin(bootstrap: str, work: Callable[[AIOKafkaAdminClient], object]) -> object:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await work(admin)  # type: ignore[misc]
    finally:
        await admin.close()


def _observe(bootstrap: str, prefix: str) -> dict[str, ObservedTopic]:
    async def work(admin: AIOKafkaAdminClient) -> dict[str, ObservedTopic]:
        return await TopicsAdmin(admin).observe(prefix + name for name in topics.ALL_TOPICS)

    return asyncio.run(_with_admin(bootstrap, work))  # type: ignore[arg-type, return-value]


@pytest.fixture
def prefix(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Iterator[str]:
    chosen = unique_name("it-topics") + "."
    yield chosen

    async def delete(admin: AIOKafkaAdminClient) -> None:
        ours = [t for t in await admin.list_topics() if t.startswith(chosen)]
        if ours:
            await admin.delete_topics(ours)

    asyncio.run(_with_admin(kafka_bootstrap, delete))


def test_apply_creates_the_contract_then_reports_no_changes(kafka_bootstrap: str, prefix: str) -> None:
    count = len(load_topics_file(default_topics_file()).topics)
    before = _cli(kafka_bootstrap, "check", "--prefix", prefix)
    assert before.returncode == 1
    assert f"topics: drift found ({count} fixable" in before.stdout

    first = _cli(kafka_bootstrap, "apply", "--prefix", prefix)
    assert first.returncode == 0, first.stderr
    assert sum(line.startswith(f"  create {prefix}") for line in first.stdout.splitlines()) == count
    assert f"topics: {count} change(s) applied" in first.stdout

    second = _cli(kafka_bootstrap, "apply", "--prefix", prefix)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "topics: no changes"
    after = _cli(kafka_bootstrap, "check", "--prefix", prefix)
    assert (after.returncode, after.stdout.splitlines()[-1]) == (0, "topics: no drift")

    seen = _observe(kafka_bootstrap, prefix)
    events, verdicts = seen[prefix + topics.EVENTS], seen[prefix + topics.VERDICTS]
    assert events.partitions == 12
    assert events.config["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert verdicts.config["cleanup.policy"] == "compact"
    assert verdicts.config["compression.type"] == "zstd"


def test_apply_repairs_a_config_someone_changed(kafka_bootstrap: str, prefix: str) -> None:
    assert _cli(kafka_bootstrap, "apply", "--prefix", prefix).returncode == 0
    alerts = prefix + topics.ALERTS

    async def tamper(admin: AIOKafkaAdminClient) -> None:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, alerts, configs={
            "cleanup.policy": "delete", "retention.ms": "1234", "compression.type": "zstd",
            "min.insync.replicas": "1", "segment.ms": "3600000"})])

    asyncio.run(_with_admin(kafka_bootstrap, tamper))
    # AlterConfigs returns before every broker view reflects it: wait (bounded) until it is visible.
    deadline = time.monotonic() + 15
    while _observe(kafka_bootstrap, prefix)[alerts].config.get("retention.ms") != "1234":
        assert time.monotonic() < deadline, "the tampered config never became visible"
        time.sleep(0.2)

    drift = _cli(kafka_bootstrap, "check", "--prefix", prefix)
    assert drift.returncode == 1
    assert (f"  alter {alerts}: retention.ms: 1234 -> 7776000000; "
            "segment.ms: remove unmanaged override 3600000") in drift.stdout.splitlines()

    repair = _cli(kafka_bootstrap, "apply", "--prefix", prefix)
    assert repair.returncode == 0, repair.stderr
    assert "topics: 1 change(s) applied" in repair.stdout
    assert _cli(kafka_bootstrap, "check", "--prefix", prefix).returncode == 0
    repaired = _observe(kafka_bootstrap, prefix)[alerts].config
    assert repaired["retention.ms"] == "7776000000"
    assert "segment.ms" not in repaired


def test_events_partitions_can_grow_from_the_environment(kafka_bootstrap: str, prefix: str) -> None:
    assert _cli(kafka_bootstrap, "apply", "--prefix", prefix).returncode == 0
    grown = _cli(kafka_bootstrap, "apply", "--prefix", prefix, "--events-partitions", "16")
    assert f"  partitions {prefix}{topics.EVENTS}: 12 -> 16" in grown.stdout.splitlines()
    assert _observe(kafka_bootstrap, prefix)[prefix + topics.EVENTS].partitions == 16
    # Back to the file's 12: Kafka cannot shrink, so check notes it but does not call it drift.
    note = _cli(kafka_bootstrap, "check", "--prefix", prefix)
    assert note.returncode == 0
    assert "partitions cannot shrink" in note.stdout


def test_unreachable_cluster_is_one_clear_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _cli(f"127.0.0.1:{port}", "check")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ringfence: error: cannot reach Kafka at 127.0.0.1:{port}")
