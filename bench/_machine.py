"""Where the numbers come from: the machine, the commit, and the Kafka broker the benchmarks use.

Split from the runner (`bench/__main__.py`) because it is the part with side effects: it reads
/proc and git, and may start (and must always stop) a local broker. `Broker` starts one only when a
benchmark that needs Kafka is about to run and RINGFENCE_KAFKA_BOOTSTRAP names none.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    """Where the numbers come from: cores, memory, CPU model, load, OS, Python, date, commit."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "cores": os.cpu_count() or 0,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(_memory_bytes() / 2**30, 1),
        "cpu_model": _cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


def _memory_bytes() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class Broker:
    """The Kafka the benchmarks use: RINGFENCE_KAFKA_BOOTSTRAP's, or a local one started on demand."""

    def __init__(self) -> None:
        self.bootstrap = os.environ.get("RINGFENCE_KAFKA_BOOTSTRAP", "").strip() or None
        self.origin = "RINGFENCE_KAFKA_BOOTSTRAP" if self.bootstrap else ""
        self._local: Any = None
        self._failure: str | None = None

    def ensure(self) -> str:
        """The bootstrap address, starting a local broker the first time one is needed."""
        if self.bootstrap is not None:
            return self.bootstrap
        if self._failure is not None:
            raise RuntimeError(self._failure)
        from pipeline.kafka_local import LocalKafka, LocalKafkaError
        from pipeline.kafka_local_config import find_free_port_pair

        port = find_free_port_pair()
        print(f"bench: starting a local Kafka on 127.0.0.1:{port} (stopped at the end)", flush=True)
        self._local = LocalKafka.from_env(port, os.environ)
        try:
            self._local.up(fresh=True)
        except LocalKafkaError as exc:
            self._failure = f"no Kafka: RINGFENCE_KAFKA_BOOTSTRAP is unset and a local broker failed: {exc}"
            raise RuntimeError(self._failure) from exc
        self.bootstrap, self.origin = f"127.0.0.1:{port}", "local broker started by this run"
        os.environ["RINGFENCE_KAFKA_BOOTSTRAP"] = self.bootstrap
        return self.bootstrap

    def close(self) -> None:
        """Stop and purge the broker this run started (if any); leave a configured one alone."""
        if self._local is None:
            return
        local, self._local = self._local, None
        os.environ.pop("RINGFENCE_KAFKA_BOOTSTRAP", None)
        try:
            local.down(purge=True)
            print(f"bench: stopped the local Kafka on port {local.paths.port}, data deleted", flush=True)
        except Exception as exc:  # report, never mask the benchmark's own outcome
            print(f"bench: WARNING: could not stop the local Kafka on port {local.paths.port}: {exc}",
                  file=sys.stderr)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the broker started here is stopped either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
