"""The local Kafka launcher's pure parts and its refusals, with no broker and no real JVM."""

from __future__ import annotations

import base64
import hashlib
import socket
import stat
from pathlib import Path

import pytest

from pipeline.kafka_local import (
    BrokerNotReadyError,
    JavaMissingError,
    LocalKafka,
    LocalKafkaPaths,
    MavenMissingError,
    PortInUseError,
    check_java,
    ensure_jars,
    java_executable,
)
from pipeline.kafka_local_config import (
    find_free_port_pair,
    kafka_deploy_dir,
    kafka_version_from_pom,
    new_cluster_id,
    parse_java_version,
    port_in_use,
    render_server_properties,
    ringfence_home,
    tail_lines,
)


@pytest.mark.parametrize(("output", "major"), [
    ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6)', 17),
    ('openjdk version "21" 2023-09-19', 21),
    ('java version "1.8.0_292"\nJava(TM) SE Runtime Environment', 8),
    ('openjdk version "11.0.2-ea" 2019-01-15', 11),
    ('Picked up JAVA_TOOL_OPTIONS: -Xss4m\nopenjdk version "25-ea" 2025-09-16', 25),
])
def test_java_version_parsing(output: str, major: int) -> None:
    assert parse_java_version(output) == major


def test_unreadable_java_version_is_an_error() -> None:
    with pytest.raises(JavaMissingError, match="cannot read the Java version"):
        parse_java_version("command not found")


def _fake_java(tmp_path: Path, version: str) -> str:
    script = tmp_path / "java"
    script.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2020-01-01\' >&2\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_old_java_is_refused_with_the_version(tmp_path: Path) -> None:
    with pytest.raises(JavaMissingError, match=r"Java 11 found .*needs Java 17\+"):
        check_java(_fake_java(tmp_path, "11.0.2"))
    assert check_java(_fake_java(tmp_path, "17.0.1")) == 17


def test_missing_java_suggests_an_external_cluster(tmp_path: Path) -> None:
    with pytest.raises(JavaMissingError, match=r"Java not found.*RINGFENCE_KAFKA_BOOTSTRAP"):
        check_java(str(tmp_path / "no-java"))


def test_java_home_wins_over_path() -> None:
    assert java_executable({"JAVA_HOME": "/opt/jdk"}) == "/opt/jdk/bin/java"
    assert java_executable({}) == "java"


def test_missing_maven_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    with pytest.raises(MavenMissingError, match="Maven"):
        ensure_jars(LocalKafkaPaths(tmp_path, "4.4.0", 9092), pom)


def test_cached_jars_are_reused_without_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    paths = LocalKafkaPaths(tmp_path, "4.4.0", 9092)
    paths.libs.mkdir(parents=True)
    (paths.libs / ".pom-sha256").write_text("a2d4a1f0\n")  # stale digest: would need Maven
    with pytest.raises(MavenMissingError):
        ensure_jars(paths, pom)
    (paths.libs / ".pom-sha256").write_text(hashlib.sha256(b"<project/>").hexdigest() + "\n")
    assert ensure_jars(paths, pom) == paths.libs


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(port)
    assert not port_in_use(port)


def test_free_port_pair_leaves_room_for_the_controller() -> None:
    port = find_free_port_pair()
    assert port not in (19092, 19093, 19091)
    assert not port_in_use(port)
    assert not port_in_use(port + 1)


def test_server_properties_bind_localhost_with_one_voter(tmp_path: Path) -> None:
    text = render_server_properties(29092, 29093, tmp_path / "data")
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["process.roles"] == "broker,controller"
    assert props["offsets.topic.replication.factor"] == "1"


def test_cluster_id_is_a_base64_uuid() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert new_cluster_id() != cluster_id


def test_version_comes_from_the_shipped_pom() -> None:
    assert kafka_version_from_pom((kafka_deploy_dir() / "pom.xml").read_text()).startswith("4.")
    assert (kafka_deploy_dir() / "log4j2.properties").exists()


def test_home_resolution_order(tmp_path: Path) -> None:
    assert ringfence_home({"RINGFENCE_HOME": str(tmp_path)}) == tmp_path
    assert ringfence_home({"XDG_CACHE_HOME": "/c"}) == Path("/c/ringfence")
    assert ringfence_home({}) == Path.home() / ".cache" / "ringfence"


def test_paths_keep_jars_shared_and_state_per_port(tmp_path: Path) -> None:
    a, b = LocalKafkaPaths(tmp_path, "4.4.0", 9092), LocalKafkaPaths(tmp_path, "4.4.0", 9192)
    assert a.libs == b.libs
    assert a.data_dir != b.data_dir
    assert a.server_log.parent == a.run_dir


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    assert tail_lines(log, 3) == []
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    assert tail_lines(log, 3) == ["line 7", "line 8", "line 9"]


def test_not_ready_error_quotes_the_log() -> None:
    error = BrokerNotReadyError("Kafka on port 1 not ready after 5s", ["ERROR boom", "at x"])
    assert str(error).splitlines() == ["Kafka on port 1 not ready after 5s", "  | ERROR boom", "  | at x"]


def test_stale_pid_file_reads_as_stopped(tmp_path: Path) -> None:
    launcher = LocalKafka(LocalKafkaPaths(tmp_path, "4.4.0", 9092), tmp_path / "pom.xml")
    launcher.paths.run_dir.mkdir(parents=True)
    launcher.paths.pid_file.write_text("1\n")  # pid 1 exists but is not our broker
    status = launcher.status()
    assert not status.running
    assert status.line() == "kafka: stopped bootstrap=127.0.0.1:9092 version=4.4.0 (stale pid file)"
    assert launcher.down() is False
    assert not launcher.paths.pid_file.exists()


def test_up_refuses_a_port_someone_else_owns(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        launcher = LocalKafka(LocalKafkaPaths(tmp_path, "4.4.0", port), tmp_path / "pom.xml",
                              java=_fake_java(tmp_path, "17.0.1"))
        with pytest.raises(PortInUseError, match=f"port {port} is in use"):
            launcher.up(ready_timeout_s=1)


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """kafka-storage would read `-t -xyz` as an option: a dash-first id is drawn again."""
    import uuid

    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])  # "-A...", "AAA..."
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert new_cluster_id() == "A" * 22
