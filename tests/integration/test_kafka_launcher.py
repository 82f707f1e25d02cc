"""`ringfence kafka up/status/down` for real: a JVM broker on a free port, with its own state directory.

The jar cache is shared with the user's (symlinked) so only the first run ever resolves jars. Each
test stops what it started, also when it fails.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.kafka_local import (
    DEFAULT_PORT,
    BrokerNotReadyError,
    JavaMissingError,
    LocalKafka,
    LocalKafkaPaths,
    MavenMissingError,
)
from pipeline.kafka_local_config import find_free_port_pair, port_in_use

pytestmark = pytest.mark.integration


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[LocalKafka]:
    shared = LocalKafka.from_env(DEFAULT_PORT, os.environ)
    try:
        shared.fetch_jars()
    except (JavaMissingError, MavenMissingError) as exc:
        if not os.environ.get("RINGFENCE_KAFKA_BOOTSTRAP"):
            raise
        # The documented alternative to Java+Maven is an external cluster: then there is nothing to launch.
        pytest.skip(f"local launcher unavailable with an external cluster configured: {exc}")
    paths = LocalKafkaPaths(tmp_path / "home", shared.paths.version, find_free_port_pair())
    paths.libs.parent.mkdir(parents=True)
    paths.libs.symlink_to(shared.paths.libs)
    local = LocalKafka(paths, shared.pom, shared.java, heap="256m")
    try:
        yield local
    finally:
        local.down(timeout_s=20)


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000)
        return [m.value for records in batches.values() for m in records if m.value is not None]
    finally:
        await consumer.stop()


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RINGFENCE_HOME": str(home)}
    env.pop("RINGFENCE_KAFKA_BOOTSTRAP", None)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "kafka", *args], capture_output=True,
                          text=True, env=env, timeout=180, check=False)


def test_up_status_down_keeps_data_until_fresh(launcher: LocalKafka) -> None:
    status = launcher.up(ready_timeout_s=120)
    bootstrap = status.bootstrap
    assert status.running and status.pid is not None
    # the broker answers a moment before it logs that it started (seen once in CI): allow ~10 s
    assert _eventually(lambda: "Kafka Server started" in "\n".join(launcher.logs(200)), 10.0)
    asyncio.run(_produce(bootstrap, "launcher-survives", b"still here"))

    shown = _cli(launcher.paths.home, "status", "--port", str(launcher.paths.port))
    assert shown.returncode == 0, shown.stderr
    assert f"kafka: running pid={status.pid} bootstrap={bootstrap}" in shown.stdout
    assert launcher.up().note == "already running"

    assert launcher.down() is True
    assert not psutil.pid_exists(status.pid) or psutil.Process(status.pid).status() == psutil.STATUS_ZOMBIE
    assert not launcher.paths.pid_file.exists()
    assert not port_in_use(launcher.paths.port)
    stopped = _cli(launcher.paths.home, "status", "--port", str(launcher.paths.port))
    assert stopped.returncode == 1
    assert "kafka: stopped" in stopped.stdout

    launcher.up(ready_timeout_s=120)
    assert asyncio.run(_read_all(bootstrap, "launcher-survives")) == [b"still here"]
    launcher.down()

    launcher.up(fresh=True, ready_timeout_s=120)
    assert "launcher-survives" not in asyncio.run(_topics(bootstrap))


def test_broker_that_dies_at_start_is_reported_with_its_log(launcher: LocalKafka) -> None:
    launcher.paths.data_dir.mkdir(parents=True)
    # A data directory formatted for another node: Kafka refuses to start and says why.
    (launcher.paths.data_dir / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\n"
        "directory.id=AAAAAAAAAAAAAAAAAAAAAQ\n")
    with pytest.raises(BrokerNotReadyError) as caught:
        launcher.up(ready_timeout_s=120)
    assert "exited during start-up" in str(caught.value)
    assert caught.value.log_tail, "the error must quote the broker's log"
    assert any("doesn't match previous node id" in line for line in caught.value.log_tail)
    assert not launcher.status().running


def test_cli_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _cli(tmp_path, "up", "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"ringfence: error: port {port} is in use by another process: choose another --port")
    assert done.stdout == ""


def _eventually(check: Callable[[], bool], timeout_s: float) -> bool:
    """True as soon as `check()` is; False after `timeout_s` (polled every 0.2 s)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
