"""Pure parts of the local Kafka launcher: paths, versions, server.properties, status values, errors.

Kept apart from the process handling in `pipeline.kafka_local` so they can be tested without Java,
Maven or a broker. Nothing here starts a process; `port_in_use` and `tail_lines` only look.

Errors (under `pipeline.errors.PipelineError`)::

    LocalKafkaError
     ├── JavaMissingError      no java, or older than 17
     ├── MavenMissingError     no mvn to resolve the jars
     ├── JarResolutionError    mvn ran and failed
     ├── PortInUseError        another process owns the port
     ├── BrokerNotReadyError   started but never answered (carries the log's last lines)
     └── NotManagedError       the named cluster is external: nothing to start or stop
"""

from __future__ import annotations

import base64
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

MIN_JAVA = 17
DEFAULT_PORT = 9092
LOCAL_HOST = "127.0.0.1"


class LocalKafkaError(PipelineError):
    """Root of the local-broker errors; the message is one line meant for the user."""


class JavaMissingError(LocalKafkaError):
    pass


class MavenMissingError(LocalKafkaError):
    pass


class JarResolutionError(LocalKafkaError):
    pass


class PortInUseError(LocalKafkaError):
    pass


class BrokerNotReadyError(LocalKafkaError):
    def __init__(self, message: str, log_tail: list[str]) -> None:
        tail = "\n".join(f"  | {line}" for line in log_tail)
        super().__init__(f"{message}\n{tail}" if tail else message)
        self.log_tail = log_tail


class NotManagedError(LocalKafkaError):
    pass



# ---------------------------------------------------------------- pure helpers


def kafka_deploy_dir() -> Path:
    """`deploy/kafka` of this source tree (pom and log4j2 config)."""
    return Path(__file__).resolve().parent.parent / "deploy" / "kafka"


def ringfence_home(environ: Mapping[str, str]) -> Path:
    """`$RINGFENCE_HOME`, else `$XDG_CACHE_HOME/ringfence`, else `~/.cache/ringfence`."""
    if environ.get("RINGFENCE_HOME"):
        return Path(environ["RINGFENCE_HOME"]).expanduser()
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ringfence"


def kafka_version_from_pom(pom_text: str) -> str:
    """The `<kafka.version>` property of the pom (names the jar cache directory)."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom_text)
    if match is None:
        raise JarResolutionError("deploy/kafka/pom.xml has no <kafka.version> property")
    return match.group(1)


def parse_java_version(version_output: str) -> int:
    """Major version from `java -version` output: `"17.0.15"` -> 17, `"1.8.0_292"` -> 8, `"21"` -> 21."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?[^"]*"', version_output)
    if match is None:
        raise JavaMissingError(f"cannot read the Java version from: {version_output.strip()[:120]!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in unpadded url-safe base64, as `kafka-storage random-uuid`.

    Never one starting with "-" (1 in 64 would): `kafka-storage format -t -abc...` reads it as an
    option and fails, which is also why Kafka's own random ids avoid that prefix.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def render_server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """server.properties for one combined broker+controller on 127.0.0.1, tuned for a laptop."""
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{LOCAL_HOST}:{controller_port}",
        f"listeners=PLAINTEXT://{LOCAL_HOST}:{port},CONTROLLER://{LOCAL_HOST}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{LOCAL_HOST}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        # One node: internal topics cannot have more replicas; few partitions start faster.
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=8",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Same as the shared dev broker; `ringfence topics apply` still owns the contract topics.
        "auto.create.topics.enable=true",
        # Let compaction be observed within seconds rather than the default 15 s back-off.
        "log.cleaner.backoff.ms=1000",
    ]
    return "\n".join(lines) + "\n"


def port_in_use(port: int, host: str = LOCAL_HOST) -> bool:
    """True if something listens on host:port (binding with SO_REUSEADDR ignores TIME_WAIT leftovers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def find_free_port_pair(avoid: frozenset[int] = frozenset({19092, 19093})) -> int:
    """A port P such that P (broker) and P+1 (controller) are both free on 127.0.0.1.

    Asks the OS for an ephemeral port, so concurrent callers rarely collide; `avoid` keeps well-known
    brokers (the team's dev broker) out even if they are momentarily down."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOCAL_HOST, 0))
            port = int(probe.getsockname()[1])
        if port < 65535 and not {port, port + 1} & avoid and not port_in_use(port) \
                and not port_in_use(port + 1):
            return port
    raise PortInUseError("no free pair of ports found on 127.0.0.1")


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a text file ([] if it does not exist); reads at most the last 256 KiB."""
    if count <= 0 or not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 256 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    return text.splitlines()[-count:]


@dataclass(frozen=True)
class LocalKafkaPaths:
    """Where one local broker keeps its jars and state."""

    home: Path
    version: str
    port: int

    @property
    def libs(self) -> Path:
        return self.home / "kafka" / self.version / "libs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run" / str(self.port)

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kafka.pid"

    @property
    def server_log(self) -> Path:
        return self.run_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def properties(self) -> Path:
        return self.run_dir / "server.properties"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    port: int
    version: str
    pid: int | None = None
    note: str = ""

    @property
    def bootstrap(self) -> str:
        return f"{LOCAL_HOST}:{self.port}"

    def line(self) -> str:
        """One human line, e.g. `kafka: running pid=123 bootstrap=127.0.0.1:9092 version=4.4.0`."""
        state = f"running pid={self.pid}" if self.running else "stopped"
        note = f" ({self.note})" if self.note else ""
        return f"kafka: {state} bootstrap={self.bootstrap} version={self.version}{note}"
