"""A small recorder that turns simulated process activity into real `BehaviorEvent`s.

Why a builder and not literal event lists: every simulated tree must differ in names, paths,
process ids and timing, or the model memorises strings. Technique generators describe *what a
process does* (spawn, write, connect, read LSASS); the builder assigns keys, pids, clocks and
sequence numbers, and records which processes belong to the attack so labels follow behaviour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.events import (
    BehaviorEvent,
    DnsQuery,
    FileCreate,
    FileDelete,
    FileRename,
    FileWrite,
    ImageLoad,
    NetworkConnect,
    Payload,
    Platform,
    ProcessAccess,
    ProcessEnd,
    ProcessStart,
    RegistrySet,
    RemoteThread,
    Script,
)


@dataclass(frozen=True, slots=True)
class Proc:
    """A simulated process: enough to name it as a parent or a target."""

    key: str
    image: str
    pid: int
    command_line: str
    user: str | None
    integrity: str | None
    attack: bool


@dataclass(frozen=True, slots=True)
class SimTree:
    """One simulated recording: its events, its label and which processes are the attack."""

    tree_id: str
    label: str
    platform: Platform
    technique: str
    events: tuple[BehaviorEvent, ...]
    node_labels: dict[str, str]
    """Malicious process keys -> the tactic of the step that started them; all others are benign."""


@dataclass(slots=True)
class TreeBuilder:
    """Accumulates events for one device; the clock only moves forward."""

    rng: random.Random
    platform: Platform
    device_id: str
    clock: datetime
    label: str = "Benign"
    """Tactic recorded for processes started with attack=True (set per technique step)."""
    events: list[BehaviorEvent] = field(default_factory=list)
    node_labels: dict[str, str] = field(default_factory=dict)
    _seq: int = 0

    def tick(self, low_s: float = 0.01, high_s: float = 2.0) -> None:
        """Advance the device clock by a random delay (seconds)."""
        self.clock += timedelta(seconds=self.rng.uniform(low_s, high_s))

    def existing(self, image: str, *, user: str | None = None, attack: bool = False) -> Proc:
        """A process that started before the recording: it has a key but no process_start event."""
        proc = Proc(self._key(), image, self._pid(), "", user, None, attack)
        if attack:
            self.node_labels[proc.key] = self.label
        return proc

    def spawn(
        self,
        parent: Proc | None,
        image: str,
        command_line: str,
        *,
        user: str | None = None,
        integrity: str | None = None,
        attack: bool = True,
        cwd: str | None = None,
    ) -> Proc:
        """Start a child of `parent` (None: parent unknown) and record its process_start."""
        self.tick()
        user = user if user is not None else (parent.user if parent else None)
        integrity = integrity if integrity is not None else (parent.integrity if parent else None)
        proc = Proc(self._key(), image, self._pid(), command_line, user, integrity, attack)
        if attack:
            self.node_labels[proc.key] = self.label
        payload = ProcessStart(
            image=image, command_line=command_line, sha256=self._hash(), user=user,
            integrity_level=integrity if self.platform is Platform.WINDOWS else None,
            uid=self._uid(user) if self.platform is Platform.LINUX else None, pid=proc.pid,
            ppid=parent.pid if parent else None, parent_image=parent.image if parent else None,
            parent_command_line=parent.command_line if parent else None, cwd=cwd,
        )
        self._emit(proc, parent.key if parent else None, payload)
        return proc

    def end(self, proc: Proc, exit_code: int = 0) -> None:
        """The process exits."""
        self.tick(0.01, 0.5)
        self._emit(proc, None, ProcessEnd(pid=proc.pid, exit_code=exit_code))

    def create(self, proc: Proc, path: str) -> None:
        """The process creates a file."""
        self._act(proc, FileCreate(path=path))

    def write(self, proc: Proc, path: str, size: int | None = None) -> None:
        """The process writes a file."""
        size = size if size is not None else self.rng.randint(200, 400_000)
        self._act(proc, FileWrite(path=path, bytes_written=size))

    def delete(self, proc: Proc, path: str) -> None:
        """The process deletes a file."""
        self._act(proc, FileDelete(path=path))

    def rename(self, proc: Proc, old_path: str, new_path: str) -> None:
        """The process renames or moves a file."""
        self._act(proc, FileRename(path=new_path, old_path=old_path))

    def reg(self, proc: Proc, key: str, value: str | None = None, data: str | None = None,
            operation: str = "set_value") -> None:
        """The process changes the registry (Windows only)."""
        op = operation if operation in _REG_OPS else "set_value"
        self._act(proc, RegistrySet.model_validate(
            {"key": key, "value_name": value, "data": data, "operation": op}))

    def connect(self, proc: Proc, ip: str, port: int, *, hostname: str | None = None,
                udp: bool = False, outbound: bool = True) -> None:
        """The process opens a network connection."""
        self._act(proc, NetworkConnect(
            dst_ip=ip, dst_port=port, src_ip=None, src_port=self.rng.randint(49152, 65535),
            protocol="udp" if udp else "tcp", outbound=outbound, dst_hostname=hostname,
        ))

    def dns(self, proc: Proc, query: str, answers: tuple[str, ...] = ()) -> None:
        """The process resolves a name."""
        self._act(proc, DnsQuery(query=query, answers=answers))

    def load(self, proc: Proc, path: str, *, signed: bool | None = True, signer: str | None = None) -> None:
        """The process loads a module."""
        self._act(proc, ImageLoad(path=path, signed=signed, signer=signer))

    def access(self, proc: Proc, target: Proc | str, granted: int, trace: str | None = None) -> None:
        """The process opens another process (e.g. LSASS) with `granted` rights."""
        key, image = (target.key, target.image) if isinstance(target, Proc) else (None, target)
        self._act(proc, ProcessAccess(target_process_key=key, target_image=image,
                                      granted_access=granted, call_trace=trace))

    def inject(self, proc: Proc, target: Proc | str) -> None:
        """The process creates a thread in another process."""
        key, image = (target.key, target.image) if isinstance(target, Proc) else (None, target)
        address = f"0x{self.rng.getrandbits(44):012X}"
        self._act(proc, RemoteThread(target_process_key=key, target_image=image, start_address=address))

    def script(self, proc: Proc, content: str, interpreter: str | None = None) -> None:
        """The interpreter saw script content (PowerShell 4104, AMSI)."""
        self._act(proc, Script(content=content, interpreter=interpreter))

    def build(self, tree_id: str, label: str, technique: str) -> SimTree:
        """Freeze the recording."""
        return SimTree(tree_id, label, self.platform, technique, tuple(self.events), dict(self.node_labels))

    def _act(self, proc: Proc, payload: Payload) -> None:
        self.tick(0.001, 0.8)
        self._emit(proc, None, payload)

    def _emit(self, proc: Proc, parent_key: str | None, payload: Payload) -> None:
        self.events.append(BehaviorEvent(
            event_id=f"{self.rng.getrandbits(128):032x}", device_id=self.device_id, seq=self._seq,
            ts=self.clock, platform=self.platform, process_key=proc.key,
            parent_process_key=parent_key, image=proc.image, payload=payload,
        ))
        self._seq += 1

    def _key(self) -> str:
        if self.platform is Platform.WINDOWS:
            raw = f"{self.rng.getrandbits(128):032x}"
            return f"{{{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}}}"
        return f"{self.rng.getrandbits(128):032x}"

    def _pid(self) -> int:
        return self.rng.randint(300, 65000) if self.platform is Platform.WINDOWS else self.rng.randint(
            300, 4_000_000)

    def _hash(self) -> str:
        return f"{self.rng.getrandbits(256):064x}"

    @staticmethod
    def _uid(user: str | None) -> int:
        if user in (None, "root"):
            return 0
        return 1000 + (sum(map(ord, user or "")) % 50)


_REG_OPS = frozenset({"set_value", "create_key", "delete_key", "delete_value", "rename_key"})
