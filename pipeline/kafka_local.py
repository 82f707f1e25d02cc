"""A real single-node Apache Kafka (KRaft) for development and tests, started from Maven Central jars.

Why not a container or a Python fake: the project must run where Docker does not, and tests must
meet the real broker's behaviour (compaction, idempotence, group protocol). So `ringfence kafka up`
resolves `org.apache.kafka:kafka_2.13` with `deploy/kafka/pom.xml`, caches the jars under
`$RINGFENCE_HOME/kafka/<version>/libs`, formats KRaft storage once and runs `kafka.Kafka` bound to
127.0.0.1. Each port has its own state under `$RINGFENCE_HOME/run/<port>/` (data, pid file,
server.log), so data survives down/up until `--fresh`.

The pure parts (version parsing, config rendering, paths, the error tree) live in
`pipeline.kafka_local_config` and are re-exported here; this module is the thin process shell.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil

from pipeline.kafka_local_config import (
    DEFAULT_PORT,
    LOCAL_HOST,
    MIN_JAVA,
    BrokerNotReadyError,
    BrokerStatus,
    JarResolutionError,
    JavaMissingError,
    LocalKafkaError,
    LocalKafkaPaths,
    MavenMissingError,
    NotManagedError,
    PortInUseError,
    kafka_deploy_dir,
    kafka_version_from_pom,
    new_cluster_id,
    parse_java_version,
    port_in_use,
    render_server_properties,
    ringfence_home,
    tail_lines,
)

__all__ = [
    "DEFAULT_PORT",
    "BrokerNotReadyError",
    "BrokerStatus",
    "JarResolutionError",
    "JavaMissingError",
    "LocalKafka",
    "LocalKafkaError",
    "LocalKafkaPaths",
    "MavenMissingError",
    "NotManagedError",
    "PortInUseError",
    "probe_cluster",
]

log = logging.getLogger(__name__)

DEFAULT_HEAP = "512m"
DEFAULT_READY_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 30.0


# ---------------------------------------------------------------- tools on the machine


def java_executable(environ: Mapping[str, str]) -> str:
    """`$JAVA_HOME/bin/java` when JAVA_HOME is set, else `java` from PATH."""
    java_home = environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else "java"


def check_java(java: str) -> int:
    """Return Java's major version; raise JavaMissingError if absent or older than 17."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise JavaMissingError(
            f"Java not found ({java}): install Java {MIN_JAVA}+ or set RINGFENCE_KAFKA_BOOTSTRAP"
        ) from None
    major = parse_java_version(done.stderr + done.stdout)
    if major < MIN_JAVA:
        raise JavaMissingError(f"Java {major} found ({java}); Kafka needs Java {MIN_JAVA}+")
    return major


def ensure_jars(paths: LocalKafkaPaths, pom: Path) -> Path:
    """Resolve the broker's jars once per pom content; later calls return the cached directory."""
    stamp = paths.libs / ".pom-sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return paths.libs
    with _locked(paths.libs.parent):  # concurrent first runs: one resolves, the others reuse
        if stamp.exists() and stamp.read_text().strip() == digest:
            return paths.libs
        _resolve_jars(paths, pom, digest)
    return paths.libs


def _resolve_jars(paths: LocalKafkaPaths, pom: Path, digest: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenMissingError("Maven (mvn) not found: install Maven 3.6+ or set RINGFENCE_KAFKA_BOOTSTRAP")
    staging = paths.libs.with_name(f"libs.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    log.info("resolving Kafka %s jars with Maven into %s", paths.version, paths.libs)
    _run_maven(mvn, pom, staging)
    (staging / ".pom-sha256").write_text(digest + "\n")
    shutil.rmtree(paths.libs, ignore_errors=True)
    staging.rename(paths.libs)


def _run_maven(mvn: str, pom: Path, output_dir: Path) -> None:
    command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={output_dir}", "-DincludeScope=runtime"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        last = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise JarResolutionError(f"mvn failed (exit {done.returncode}): {' / '.join(last)}")


# ---------------------------------------------------------------- processes


def _our_broker(pid: int, properties: Path) -> bool:
    """True if `pid` is alive and is the broker started with `properties` (guards against PID reuse)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "kafka.Kafka" in cmdline and str(properties) in cmdline


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise changes to `directory` (a port's state, a jar cache) between concurrent invocations."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _spawn_detached(command: list[str], console_log: Path, cwd: Path) -> int:
    """Start `command` in its own session, not as our child (it outlives the CLI); return its pid."""
    shell = '"$@" </dev/null >>"$RF_CONSOLE_LOG" 2>&1 & echo $!'
    env = {**os.environ, "RF_CONSOLE_LOG": str(console_log)}
    done = subprocess.run(["/bin/sh", "-c", shell, "sh", *command], capture_output=True, text=True,
                          env=env, cwd=cwd, start_new_session=True, check=True, timeout=30)
    return int(done.stdout.strip())


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((LOCAL_HOST, port), timeout=1.0):
        return True
    return False


def probe_cluster(bootstrap: str, timeout_s: float = 5.0) -> int:
    """One Kafka API round trip (DescribeCluster); return the number of live brokers."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        return len(cluster["brokers"])

    return asyncio.run(asyncio.wait_for(describe(), timeout_s * 2))


# ---------------------------------------------------------------- the launcher


class LocalKafka:
    """Start, stop and inspect the single-node broker that listens on 127.0.0.1:`port`."""

    def __init__(self, paths: LocalKafkaPaths, pom: Path, java: str = "java", heap: str = DEFAULT_HEAP):
        self.paths = paths
        self.pom = pom
        self.java = java
        self.heap = heap

    @classmethod
    def from_env(cls, port: int, environ: Mapping[str, str], heap: str = DEFAULT_HEAP) -> LocalKafka:
        pom = kafka_deploy_dir() / "pom.xml"
        if not pom.exists():
            raise JarResolutionError(f"{pom} not found: run ringfence from its source checkout")
        paths = LocalKafkaPaths(ringfence_home(environ), kafka_version_from_pom(pom.read_text()), port)
        return cls(paths, pom, java_executable(environ), heap)

    @property
    def controller_port(self) -> int:
        return self.paths.port + 1

    def status(self) -> BrokerStatus:
        pid = _read_pid(self.paths.pid_file)
        if pid is not None and _our_broker(pid, self.paths.properties):
            return BrokerStatus(True, self.paths.port, self.paths.version, pid)
        note = "stale pid file" if pid is not None else ""
        return BrokerStatus(False, self.paths.port, self.paths.version, None, note)

    def up(self, fresh: bool = False, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> BrokerStatus:
        """Start the broker (or find it running) and return once it answers Kafka requests."""
        with _locked(self.paths.run_dir):
            if fresh:
                self._stop_locked(DEFAULT_STOP_TIMEOUT_S)
                shutil.rmtree(self.paths.data_dir, ignore_errors=True)
            current = self.status()
            if current.running:
                current = dataclasses.replace(current, note="already running")
            else:
                current = self._start_locked()
        self.wait_ready(current.pid, ready_timeout_s)
        return current

    def down(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S, purge: bool = False) -> bool:
        """Stop the broker; True if one was running. SIGTERM first, SIGKILL after `timeout_s`.

        `purge` also deletes this port's state (data, logs): for throwaway brokers such as `make test`'s."""
        with _locked(self.paths.run_dir):
            was_running = self._stop_locked(timeout_s)
            if purge:
                shutil.rmtree(self.paths.run_dir, ignore_errors=True)
        return was_running

    def fetch_jars(self) -> Path:
        """Check Java and resolve (or find cached) the broker's jars, without starting anything."""
        check_java(self.java)
        return ensure_jars(self.paths, self.pom)

    def logs(self, lines: int) -> list[str]:
        return tail_lines(self.paths.server_log, lines)

    def wait_ready(self, pid: int | None, timeout_s: float) -> None:
        """Poll until a DescribeCluster round trip lists the broker; fail early if the JVM died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pid is not None and not _pid_alive(pid):
                raise BrokerNotReadyError(f"Kafka on port {self.paths.port} exited during start-up",
                                          self._diagnostic_tail())
            if _tcp_open(self.paths.port) and self._answers():
                return
            time.sleep(0.5)
        raise BrokerNotReadyError(f"Kafka on port {self.paths.port} not ready after {timeout_s:.0f}s",
                                  self._diagnostic_tail())

    def _answers(self) -> bool:
        from aiokafka.errors import KafkaError

        try:
            return probe_cluster(f"{LOCAL_HOST}:{self.paths.port}", timeout_s=3.0) >= 1
        except (KafkaError, OSError, TimeoutError) as exc:  # any of these just means "not yet"
            log.debug("kafka port %s not ready yet: %s", self.paths.port, exc)
            return False

    def _diagnostic_tail(self) -> list[str]:
        return tail_lines(self.paths.server_log, 15) or tail_lines(self.paths.console_log, 15)

    def _start_locked(self) -> BrokerStatus:
        check_java(self.java)
        if port_in_use(self.paths.port):
            raise PortInUseError(f"port {self.paths.port} is in use by another process: "
                                 "choose another --port")
        if port_in_use(self.controller_port):
            raise PortInUseError(f"controller port {self.controller_port} (--port + 1) is in use by another "
                                 "process: choose another --port")
        libs = ensure_jars(self.paths, self.pom)
        self._prepare_storage(libs)
        pid = _spawn_detached(self._java_command(libs, "kafka.Kafka", str(self.paths.properties)),
                              self.paths.console_log, self.paths.run_dir)
        self.paths.pid_file.write_text(f"{pid}\n")
        log.info("started Kafka %s pid=%s port=%s", self.paths.version, pid, self.paths.port)
        return BrokerStatus(True, self.paths.port, self.paths.version, pid)

    def _prepare_storage(self, libs: Path) -> None:
        """Write server.properties and format the data directory unless it already holds a cluster."""
        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        self.paths.properties.write_text(
            render_server_properties(self.paths.port, self.controller_port, self.paths.data_dir)
        )
        if (self.paths.data_dir / "meta.properties").exists():
            return
        command = self._java_command(libs, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(),
                                     "-c", str(self.paths.properties))
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise BrokerNotReadyError("formatting KRaft storage failed",
                                      (done.stdout + done.stderr).strip().splitlines()[-10:])

    def _java_command(self, libs: Path, main_class: str, *args: str) -> list[str]:
        log4j = kafka_deploy_dir() / "log4j2.properties"
        return [self.java, f"-Xmx{self.heap}", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.paths.run_dir}",
                "-cp", f"{libs}/*", main_class, *args]

    def _stop_locked(self, timeout_s: float) -> bool:
        pid = _read_pid(self.paths.pid_file)
        running = pid is not None and _our_broker(pid, self.paths.properties)
        if pid is not None and running:
            _terminate(pid, timeout_s)
        self.paths.pid_file.unlink(missing_ok=True)
        return running


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM (Kafka shuts down cleanly), then SIGKILL if it is still there after `timeout_s`."""
    proc = psutil.Process(pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        log.warning("kafka pid=%s ignored SIGTERM for %.0fs, killing it", pid, timeout_s)
        proc.kill()
        proc.wait(10)
    except psutil.NoSuchProcess:
        pass
