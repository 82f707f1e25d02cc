"""What the demo and the feedback-loop tests share: a safe attack kit, an isolated topic set, processes.

**The attack** (`prepare_attack`) lives entirely in one folder. Its "ransomware" is a private copy
of the shell with random bytes appended (`bin/rf-locker`: an ELF ignores trailing bytes, so it
still runs, but its sha256 exists nowhere else, which is what a fleet-wide verdict will name). It
runs a script that, touching nothing outside the folder:
  1. persistence: copies a cron line into `work/var/spool/cron/crontabs/root` (a crontab path
     *inside* the folder, never the system's);
  2. impact: encrypts the victim files it finds in `work/victim` one by one with `openssl enc`,
     destroys each original with `shred -u` and waits `delay_s` between files;
  3. credential access: copies the fake `work/etc/shadow` the kit wrote;
  4. drops a ransom note.
Why child processes (`openssl`, `shred`, `cp`, `cat`) rather than encrypting in-process: the live
Linux agent sees file changes through inotify, which cannot name the writing process, so file
events carry no process (`linux:unattributed`) and the process-tree model cannot charge a mass
encryption to the process doing it. It does see every process start with its command line, which
is how script-driven Linux ransomware shows itself. A pristine copy `samples/rf-locker` stays for
re-launch checks (block mode quarantines `bin/rf-locker`).

**Topics** (`FleetTopics`): every topic of deploy/topics.yaml under a unique prefix, so a demo or a
test shares a broker with anything else; `env()` gives the worker's and agents' variables.

**Processes** (`Supervisor`): children with their output in log files, stopped with SIGTERM then
SIGKILL, always, in reverse start order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipeline.errors import PipelineError
from schemas.alerts import Tactic

__all__ = ["AGENT_READY", "ATTACK_TACTICS", "SOURCE_READY", "WORKER_READY", "AttackKit", "DemoError",
           "FleetTopics", "Supervisor", "agent_env", "apply_topics", "assigned_partitions", "delete_topics",
           "prepare_attack", "worker_env"]

LOCKER = "rf-locker"
ATTACK_TACTICS = frozenset({Tactic.PERSISTENCE, Tactic.IMPACT, Tactic.CREDENTIAL_ACCESS})
"""The attack's steps (cron line, encryption, shadow copy): an alert naming one of them is right."""
ENCRYPTED_SUFFIX = ".rfenc"
_SCRIPT = """\
# ringfence demo attack. It touches nothing outside "$1", the demo's temporary folder.
set -u
W="$1/work"
DELAY="$2"
# 1. persistence: a cron line for ourselves, in a crontab path INSIDE the demo folder
mkdir -p "$W/var/spool/cron/crontabs" "$W/loot"
cp "$W/payload/cron.txt" "$W/var/spool/cron/crontabs/root"
# 2. impact: encrypt the victim files one by one and destroy the originals
for f in "$W"/victim/*.docx; do
  openssl enc -aes-256-cbc -pbkdf2 -salt -pass pass:ringfence-demo -in "$f" -out "$f.rfenc"
  shred -u "$f"
  sleep "$DELAY"
done
# 3. credential access: take a copy of the (fake) shadow file
cat "$W/etc/shadow" > "$W/loot/shadow.txt"
# 4. the ransom note
echo "Your files are encrypted (ringfence demo: nothing left this folder)." > "$W/victim/README_RESTORE.txt"
"""


class DemoError(PipelineError):
    """The demo (or a feedback-loop test) cannot set up or run a step."""


@dataclass(frozen=True)
class AttackKit:
    """The attack's folder and files."""

    root: Path
    locker: Path  # bin/rf-locker: the attack's binary
    sample: Path  # samples/rf-locker: same bytes, kept for re-launch checks
    script: Path
    victims: tuple[Path, ...]
    sha256: str

    @property
    def work(self) -> Path:
        """The folder the attack reads and writes (the live agent watches it)."""
        return self.root / "work"

    def argv(self, delay_s: float) -> list[str]:
        return [str(self.locker), str(self.script), str(self.root), f"{delay_s:g}"]

    def encrypted(self) -> int:
        return len(list((self.work / "victim").glob(f"*{ENCRYPTED_SUFFIX}")))

    def originals_left(self) -> int:
        return sum(1 for path in self.victims if path.exists())


def prepare_attack(root: Path, *, files: int = 40) -> AttackKit:
    """Write the attack kit under `root` (created; must not exist yet)."""
    missing = [tool for tool in ("bash", "openssl", "shred", "cp", "cat") if shutil.which(tool) is None]
    if missing:
        raise DemoError(f"the demo attack needs {', '.join(missing)} on PATH")
    work = root / "work"
    for folder in ("bin", "samples", "work/victim", "work/etc", "work/payload"):
        (root / folder).mkdir(parents=True, exist_ok=folder != "bin")
    victims = tuple(_victim(work / "victim", i) for i in range(1, files + 1))
    (work / "etc" / "shadow").write_text("root:$6$ringfence.demo$notarealhash:19700:0:99999:7:::\n")
    (work / "payload" / "cron.txt").write_text(f"*/5 * * * * {root / 'bin' / LOCKER} # ringfence demo\n")
    script = root / "bin" / "locker.sh"
    script.write_text(_SCRIPT)
    locker = root / "bin" / LOCKER
    shutil.copyfile(shutil.which("bash") or "/bin/bash", locker)
    with locker.open("ab") as handle:
        handle.write(b"ringfence-demo:" + uuid.uuid4().bytes)
    locker.chmod(0o755)
    sample = root / "samples" / LOCKER
    shutil.copy2(locker, sample)
    return AttackKit(root, locker, sample, script, victims, hashlib.sha256(locker.read_bytes()).hexdigest())


def _victim(folder: Path, index: int) -> Path:
    path = folder / f"report-{index:02d}.docx"
    path.write_text(f"Quarterly report {index}\n" + "confidential figures\n" * 50)
    return path


# -- topics -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetTopics:
    """The ringfence topics under one prefix (e.g. `demo-1a2b3c4d.`)."""

    prefix: str

    @classmethod
    def unique(cls, label: str) -> FleetTopics:
        return cls(f"{label}-{uuid.uuid4().hex[:8]}.")

    def name(self, topic: str) -> str:
        return self.prefix + topic

    def worker_env(self) -> dict[str, str]:
        """RINGFENCE_*_TOPIC for `ringfence worker`."""
        from schemas import topics as t

        names = {"EVENTS": t.EVENTS, "DLQ": t.EVENTS_DLQ, "ALERTS": t.ALERTS, "VERDICTS": t.VERDICTS,
                 "COMMANDS": t.COMMANDS, "DEVICES": t.DEVICES, "POLICY": t.POLICY, "STATE": t.WORKER_STATE}
        return {f"RINGFENCE_{key}_TOPIC": self.name(topic) for key, topic in names.items()}

    def agent_env(self) -> dict[str, str]:
        """RINGFENCE_AGENT_*_TOPIC for `ringfence-agent run`."""
        from schemas import topics as t

        names = {"EVENTS": t.EVENTS, "DEVICES": t.DEVICES, "VERDICTS": t.VERDICTS, "COMMANDS": t.COMMANDS,
                 "ACTIONS": t.ACTIONS, "POLICY": t.POLICY}
        return {f"RINGFENCE_AGENT_{key}_TOPIC": self.name(topic) for key, topic in names.items()}

    def all(self) -> list[str]:
        from schemas.topics import ALL_TOPICS

        return [self.name(topic) for topic in ALL_TOPICS]


async def apply_topics(kafka: Any, topics: FleetTopics, *, events_partitions: int = 3) -> None:
    """Create the prefixed topic set from deploy/topics.yaml (the same code as `ringfence topics apply`)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from pipeline.commands.topics import default_topics_file
    from pipeline.topics_admin import TopicsAdmin, choose_profile, reconcile
    from pipeline.topics_spec import load_topics_file
    from schemas.topics import EVENTS

    spec = load_topics_file(default_topics_file())
    client = AIOKafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=15000)
    await asyncio.wait_for(client.start(), 30)
    try:
        admin = TopicsAdmin(client)
        profile = choose_profile("auto", await admin.broker_count(),
                                 {n: p.replication_factor for n, p in spec.profiles.items()})
        specs = spec.resolve(profile, prefix=topics.prefix, partitions={EVENTS: events_partitions})
        await reconcile(admin, specs, apply=True)
    finally:
        await client.close()


async def delete_topics(kafka: Any, topics: FleetTopics) -> None:
    """Delete the prefixed topic set (errors ignored: leftovers are harmless, only untidy)."""
    from aiokafka.admin import AIOKafkaAdminClient

    client = AIOKafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=15000)
    try:
        await asyncio.wait_for(client.start(), 30)
        await client.delete_topics(topics.all())
    except Exception:  # noqa: S110 - best-effort cleanup of our own topics
        pass
    finally:
        await client.close()


def worker_env(topics: FleetTopics, keys_dir: Path, bootstrap: str) -> dict[str, str]:
    """Environment of a `ringfence worker` on this topic set, signing with `keys_dir`'s key (and
    scoring with the trained model in `pipeline/model/`, as any worker does)."""
    return {**topics.worker_env(), "RINGFENCE_KAFKA_BOOTSTRAP": bootstrap,
            "RINGFENCE_KEYS_DIR": str(keys_dir), "RINGFENCE_GROUP_ID": f"{topics.prefix}workers",
            "RINGFENCE_COMMIT_INTERVAL_MS": "500"}


def agent_env(topics: FleetTopics, bundle: Path, state: Path, bootstrap: str, *,
              watch: Path | None = None, events_topic: str | None = None) -> dict[str, str]:
    """Environment of a `ringfence-agent run` enrolled with `bundle`, all its files under `state`.

    `events_topic` diverts its telemetry (tests run several "devices" on one host: only one of them
    may report the host's processes to the worker, or every device would be alerted on).
    """
    env = {**topics.agent_env(), "RINGFENCE_KAFKA_BOOTSTRAP": bootstrap,
           "RINGFENCE_AGENT_IDENTITY_DIR": str(bundle), "RINGFENCE_AGENT_SOURCES": "linux",
           "RINGFENCE_AGENT_SPOOL_DIR": str(state / "spool"),
           "RINGFENCE_AGENT_STATE_DIR": str(state / "state"),
           "RINGFENCE_AGENT_QUARANTINE_DIR": str(state / "quarantine"),
           "RINGFENCE_AGENT_SPOOL_SYNC": "normal",
           "RINGFENCE_AGENT_LINGER_MS": "20", "RINGFENCE_AGENT_HEARTBEAT_INTERVAL_S": "2",
           "RINGFENCE_AGENT_NET_ENABLED": "false", "RINGFENCE_AGENT_PROC_POLL_INTERVAL_S": "0.05",
           "RINGFENCE_AGENT_WATCH_PATHS": str(watch) if watch is not None else ""}
    if events_topic is not None:
        env["RINGFENCE_AGENT_EVENTS_TOPIC"] = events_topic
    return env


AGENT_READY = "blocklist caught up"  # the verdict follower read the fleet blocklist to its end
SOURCE_READY = "process events:"  # the live source subscribed (netlink) or took its /proc baseline
WORKER_READY = "assigned events partitions"  # then the sorted partitions: pipeline.worker's log line
_ASSIGNED = re.compile(re.escape(WORKER_READY) + r" \[([0-9, ]*)\]")


def assigned_partitions(log_text: str) -> list[int] | None:
    """The events partitions of the latest assignment in a `ringfence worker`'s log (None before the
    first): what the demo, the benchmark and the tests read from the worker processes they run."""
    found = _ASSIGNED.findall(log_text)
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else None


# -- child processes --------------------------------------------------------------------------------


@dataclass
class Supervisor:
    """Starts children with logs in `log_dir`; `stop_all()` ends every one of them."""

    log_dir: Path
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _starts: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str],
              **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start `argv` (output to `<log_dir>/<name>.log`) in its own session.

        A child of the same name still running is stopped first: replacing its entry would leave
        it running with no one to stop it (a failed test that restarts a device leaked agents so).
        """
        self.stop(name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        self._starts[name] = log.tell()  # a restarted child appends: `log()` shows this run only
        proc = subprocess.Popen(list(argv), env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
        self.children[name] = proc
        return proc

    def python(self, name: str, module: str, *args: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """`python -m module args` with this interpreter and this checkout on the path."""
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        return self.start(name, [sys.executable, "-m", module, *args], {**env, "PYTHONPATH": path})

    def log(self, name: str) -> str:
        """What the child's latest run wrote."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        with path.open("rb") as handle:
            handle.seek(self._starts.get(name, 0))
            return handle.read().decode(errors="replace")

    async def wait_for(self, name: str, needle: str, timeout_s: float) -> None:
        """Until `needle` appears in the child's log; DemoError (with the log's end) if it exits first."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while needle not in self.log(name):
            proc = self.children.get(name)
            if proc is None or proc.poll() is not None or asyncio.get_running_loop().time() > deadline:
                tail = "\n".join(self.log(name).splitlines()[-15:])
                state = "exited" if proc is not None and proc.poll() is not None else "timed out"
                raise DemoError(f"{name} {state} before {needle!r}; its log ends:\n{tail}")
            await asyncio.sleep(0.1)

    def stop(self, name: str, timeout_s: float = 15.0) -> int | None:
        """SIGTERM to the child's process group, SIGKILL after `timeout_s`; returns the exit status."""
        proc = self.children.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: the child and its children
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def stop_all(self, timeout_s: float = 15.0) -> None:
        for name in reversed(list(self.children)):
            self.stop(name, timeout_s)
        for log in self._logs:
            log.close()
        self._logs.clear()
