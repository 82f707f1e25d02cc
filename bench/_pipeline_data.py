"""Workloads for the pipeline benchmark: realistic EventBatch record values, built fast, and attack probes.

Values are written as JSON by orjson from plain dicts in the contract's shape (building pydantic
models for a million events would take longer than the benchmark), byte for byte what an agent
publishes (`schemas.codec.encode_batch`, which `agents.batch_codec.splice_batch` reproduces): every
field in the models' order, defaults written out. `check_sample` decodes a few with `schemas.codec`
and re-encodes them, so a drift from the contract or from the agents' bytes fails loudly instead of
measuring the DLQ or another producer's shape.

The mix per device: a few anchors (explorer, svchost, services), processes started under them
(4 % of events) and a trail of behaviour, the most recent processes the busiest: file writes,
registry sets, connections, DNS, image loads, process access. One record = one device's batch,
as the agent's publisher sends them.

`recorded_records` is the other workload: real telemetry, the OTRF recordings of ../shared/datasets/otrf
mapped by the agent's own Sysmon/4688 mapping, each recording one device. Its processes, command
lines and behaviour are a lab's, not a generator's: long launcher lines, lsass and svchost read by
everyone (Sysmon 10 is 56 % of its events), 0.5 % process starts. The generated fleet hid a cost it
shows (BENCHMARKS.md, "Session Z"); it also raises alerts where the attacks are, not on a generator's
shells (the generated mix makes the model alert every ~390 events).
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from pipeline.eventkit import EventKit
from schemas.codec import decode_record, encode_batch, encode_event
from schemas.events import PAYLOAD_TYPES, BehaviorEvent, EventBatch

_EPOCH = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
_ANCHORS = [
    ("explorer", r"C:\Windows\explorer.exe", "C:\\Windows\\Explorer.EXE"),
    ("svchost", r"C:\Windows\System32\svchost.exe", "svchost.exe -k netsvcs -p -s Schedule"),
    ("services", r"C:\Windows\System32\services.exe", ""),
]
_IMAGES = [
    (r"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE", "OUTLOOK.EXE /recycle"),
    (r"C:\Program Files\Google\Chrome\Application\chrome.exe", "chrome.exe --type=renderer --lang=en-US"),
    (r"C:\Program Files\Microsoft VS Code\Code.exe", "Code.exe --type=utility"),
    (r"C:\Windows\System32\conhost.exe", "conhost.exe 0xffffffff -ForceV1"),
    (r"C:\Windows\System32\cmd.exe", "cmd.exe /c dir C:\\Users"),
    (
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
        "powershell -NoProfile -File C:\\s\\a.ps1",
    ),
    (r"C:\Program Files\App\updater.exe", "updater.exe /silent /check"),
    (r"C:\Windows\System32\whoami.exe", "whoami /all"),
]


class _Device:
    """One device's stream: seq, clock, live processes."""

    def __init__(self, device_id: str, rng: random.Random, own_lines: float = 0.0) -> None:
        self.device_id, self.rng, self.seq, self.own_lines = device_id, rng, 0, own_lines
        self.live: list[tuple[str, str]] = []  # (process_key, image)
        self.anchors = [(f"{device_id}-{name}", image, cmd) for name, image, cmd in _ANCHORS]

    def event(
        self, key: str, image: str, payload: dict[str, object], parent: str | None = None
    ) -> dict[str, object]:
        self.seq += 1
        ts = _EPOCH + timedelta(milliseconds=5 * self.seq)
        event: dict[str, object] = {
            "schema_version": "1.0",
            "event_id": f"{self.device_id}-{self.seq}",
            "device_id": self.device_id,
            "seq": self.seq,
            "ts": ts.isoformat().replace("+00:00", "Z"),
            "platform": "windows",
            "process_key": key,
            "image": image,
            "payload": payload,
        }
        if parent is not None:
            event["parent_process_key"] = parent
        return event

    def start_anchors(self) -> list[dict[str, object]]:
        return [
            self.event(k, image, {"kind": "process_start", "image": image, "command_line": cmd})
            for k, image, cmd in self.anchors
        ]

    def next_event(self) -> dict[str, object]:
        rng = self.rng
        if rng.random() < 0.04 or not self.live:
            return self._start()
        if rng.random() < 0.33:
            key, image, _ = rng.choice(self.anchors)
        else:
            key, image = self.live[-1 - int(len(self.live) * rng.random() ** 3)]
        return self.event(key, image, self._behaviour(rng.random()))

    def _start(self) -> dict[str, object]:
        """A new process's start or, once 200 are live, the end of the oldest (the start comes later).
        Until session P the 201st process was added to the live list with only the oldest's end sent,
        so from then on every new process's start was lost (its events made placeholder nodes); runs
        short of 200 starts per device (the full run's 200,000 events make about 40) are unchanged."""
        if len(self.live) >= 200:
            old, old_image = self.live.pop(0)
            return self.event(old, old_image, {"kind": "process_end"})
        image, cmd = self.rng.choice(_IMAGES)
        if self.own_lines and self.rng.random() < self.own_lines:  # no draw at all when 0: the same stream
            cmd = _own_line(cmd, self.seq, self.rng)
        parent = (
            self.rng.choice(self.live[-20:])[0]
            if self.live and self.rng.random() < 0.3
            else self.rng.choice(self.anchors)[0]
        )
        key = f"{self.device_id}-p{self.seq}"
        self.live.append((key, image))
        return self.event(key, image, {"kind": "process_start", "image": image, "command_line": cmd}, parent)

    def _behaviour(self, roll: float) -> dict[str, object]:
        n = self.seq
        if roll < 0.45:
            return {"kind": "file_write", "path": rf"C:\Users\u\AppData\Local\Temp\f{n % 997}.tmp"}
        if roll < 0.60:
            return {
                "kind": "registry_set",
                "key": r"HKLM\Software\Vendor\Settings",
                "value_name": f"v{n % 13}",
            }
        if roll < 0.72:
            return {"kind": "network_connect", "dst_ip": f"10.0.{n % 7}.{n % 251}", "dst_port": 443}
        if roll < 0.82:
            return {"kind": "dns_query", "query": f"host{n % 101}.example.com"}
        if roll < 0.95:
            return {"kind": "image_load", "path": r"C:\Windows\System32\winhttp.dll", "signed": True}
        return {
            "kind": "process_access",
            "target_image": r"C:\Windows\System32\svchost.exe",
            "granted_access": 4096,
        }


def _own_line(cmd: str, seq: int, rng: random.Random) -> str:
    """`cmd` with arguments of its own, as a browser's child or an installer's run carries them (ids,
    handles, a temporary path): a line no cache has seen, about as long as the OTRF recordings' average."""
    handle, channel = rng.getrandbits(32), rng.getrandbits(16)
    return (f"{cmd} --instance-id={seq} --field-trial-handle={handle},i,{channel},{handle ^ channel},131072 "
            f"--mojo-platform-channel-handle={channel} --log-file=C:\\Users\\u\\AppData\\Local\\Temp\\"
            f"run{handle:08x}.log /prefetch:{seq % 9}")  # fmt: skip


def records(
    n_events: int,
    events_per_record: int,
    n_devices: int,
    *,
    prefix: str = "dev",
    seed: int = 7,
    own_lines: float = 0.0,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) EventBatch records, devices round-robin, until `n_events` events were written.
    `own_lines`: the share of process starts whose command line carries arguments of its own (0: eight
    fixed lines, every mask a cache hit; in OTRF's recordings, starts carry 39 % as many distinct lines)."""
    rng = random.Random(seed)
    devices = [_Device(f"{prefix}-{d}", rng, own_lines) for d in range(n_devices)]
    pending = {d.device_id: d.start_anchors() for d in devices}
    written, turn = 0, 0
    while written < n_events:
        device = devices[turn % n_devices]
        turn += 1
        events = pending.pop(device.device_id, [])
        while len(events) < events_per_record:
            events.append(device.next_event())
        written += len(events)
        yield device.device_id.encode(), _batch(device.device_id, events)


# ../shared beside the checkout, or where RINGFENCE_SHARED says (as the tests find it: tests/shared_data.py)
_SHARED = Path(os.environ.get("RINGFENCE_SHARED") or Path(__file__).resolve().parents[2] / "shared")
RECORDINGS = _SHARED / "datasets" / "otrf"


def recorded_records(
    n_events: int, events_per_record: int, root: Path = RECORDINGS, *, prefix: str = "rec"
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) records of real telemetry until `n_events` events were written: each recording under
    `root` (`*.gz`, in name order) is one device, its events read by `agents.sysmon.loader.load_events`
    in recorded order. A record is one device's batch as its agent would have sent it: at most
    `events_per_record` events, spanning at most the agent's linger (`AGENT_LINGER_MS` of event time: the
    agent sends what it spooled within one linger, so a quiet device's events go in smaller records, not
    one record spanning minutes); devices take turns. A recording that ends drops out; when all have
    ended they start again as new devices (`<prefix>-<round>-<index>`). Files are read as far as needed,
    so a short run reads only the head of each."""
    from agents.sysmon.loader import load_events

    files = sorted(p for p in root.rglob("*.gz") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no recordings (*.gz) under {root}: the workload reads OTRF's recordings")
    written, round_no = 0, 0
    while written < n_events:
        streams = deque(
            _Recording(load_events(path, device_id=f"{prefix}-{round_no}-{i}"))
            for i, path in enumerate(files)
        )
        before = written
        while streams and written < n_events:
            stream = streams.popleft()
            chunk = stream.batch(events_per_record, AGENT_LINGER_MS)
            if not chunk:
                continue  # ended: it drops out
            streams.append(stream)
            written += len(chunk)
            key = chunk[0].device_id.encode()
            yield key, encode_event(chunk[0]) if len(chunk) == 1 else encode_batch(EventBatch.of(chunk))
        if written == before:
            raise ValueError(f"the recordings under {root} hold no event the mapping reads")
        round_no += 1


AGENT_LINGER_MS = 500  # agents.publisher.PublisherConfig.linger_ms's default


class _Recording:
    """One recording's events, taken a batch at a time (the event that would not fit waits for the next)."""

    def __init__(self, events: Iterator[BehaviorEvent]) -> None:
        self.events = iter(events)
        self.held: BehaviorEvent | None = None

    def batch(self, most: int, span_ms: int) -> list[BehaviorEvent]:
        """Up to `most` next events whose times lie within `span_ms` of each other."""
        out: list[BehaviorEvent] = []
        low = high = 0.0
        while len(out) < most:
            event = self.held if self.held is not None else next(self.events, None)
            self.held = None
            if event is None:
                break
            when = event.ts.timestamp() * 1000
            if out and max(high, when) - min(low, when) > span_ms:
                self.held = event
                break
            low, high = (min(low, when), max(high, when)) if out else (when, when)
            out.append(event)
        return out


_EVENT_FIELDS = {name: field.default for name, field in BehaviorEvent.model_fields.items()}
_PAYLOAD_FIELDS = {
    kind.value: {name: field.default for name, field in model.model_fields.items()}
    for kind, model in PAYLOAD_TYPES.items()
}


def _as_agents_write(event: dict[str, object]) -> dict[str, object]:
    """Every field in the model's order, defaults included (required ones are always set here)."""
    payload: dict[str, object] = event["payload"]  # type: ignore[assignment]
    fields = _PAYLOAD_FIELDS[str(payload["kind"])]
    full = {name: payload.get(name, default) for name, default in fields.items()}
    return {name: full if name == "payload" else event.get(name, v) for name, v in _EVENT_FIELDS.items()}


def _batch(device_id: str, events: list[dict[str, object]]) -> bytes:
    written = [_as_agents_write(event) for event in events]
    if len(written) == 1:
        return orjson.dumps(written[0])
    return orjson.dumps(
        {
            "schema_version": "1.0",
            "device_id": device_id,
            "first_seq": written[0]["seq"],
            "last_seq": written[-1]["seq"],
            "events": written,
        }
    )


def events_in(value: bytes) -> int:
    """Events in one record value (1 for a single-event record)."""
    obj = orjson.loads(value)
    return len(obj["events"]) if "events" in obj else 1


def check_sample(values: list[bytes]) -> None:
    """Decode a few values with the real codec (a generator drift must fail, not be measured) and check
    they are the bytes an agent would have written for those events."""
    for value in values[:: max(1, len(values) // 20)]:
        batch = decode_record(value)
        single = b'"events"' not in value
        written = orjson.dumps(batch.events[0].model_dump(mode="json")) if single else encode_batch(batch)
        if written != value:
            raise ValueError("benchmark records are not what agents write (schemas.codec.encode_batch)")


def attack_probe(index: int, prefix: str = "probe") -> tuple[str, bytes, bytes]:
    """(artifact sha256, key, value): one device's whole ransomware tree in one record (-> a verdict)."""
    device = f"{prefix}-{index}"
    sha = f"{index:064x}"
    kit = EventKit(device, start=datetime.now(UTC))
    word = r"C:\Program Files\Microsoft Office\root\Office16\WINWORD.EXE"
    ps = r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe"
    drop = r"C:\Users\alice\AppData\Local\Temp\upd.exe"
    events = [
        kit.start("e", r"C:\Windows\explorer.exe", "explorer.exe"),
        kit.start("w", word, "WINWORD.EXE /n invoice.docm", parent="e"),
        kit.start("p", ps, "powershell.exe -nop -w hidden -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoA", parent="w"),
        kit.write("p", drop),
        kit.start("u", drop, "upd.exe", parent="p", sha256=sha),
        kit.start(
            "v", r"C:\Windows\System32\vssadmin.exe", "vssadmin.exe delete shadows /all /quiet", parent="u"
        ),
        *(
            kit.rename(
                "u", rf"C:\Users\alice\Documents\f{i}.docx", rf"C:\Users\alice\Documents\f{i}.docx.locked"
            )
            for i in range(12)
        ),
    ]
    return sha, device.encode(), encode_batch(EventBatch.of(events))
