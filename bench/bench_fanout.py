"""Fleet fan-out: a signed verdict published once -> applied by every device, for N = 10, 50, 200.

Each simulated device is a real `agents.verdict_follower.VerdictFollower`: its own aiokafka
consumer with no group (every device reads every partition), its own on-disk blocklist (SQLite, as
the agent keeps it), signature and validity checks with the fleet keyring. Devices are packed
`--per-process` to a shard process (default 100), so N = 200 runs 200 consumers in 2 processes.

Latency = the follower's clock when its blocklist changed - the record's Kafka timestamp (the
producer's clock at send): both on this machine, so "published -> applied" with no clock skew.
R verdicts are published ~`--gap-ms` apart once every device has caught up; every (device, verdict)
pair is one sample. Baseline: a fleet of one device, measured in the same run. Last, a device that
was offline during the rounds starts (fresh state) and must catch up with all R verdicts.

    RINGFENCE_KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python -m bench.bench_fanout [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import Result

FLEETS = (10, 50, 200)
QUICK_FLEETS = (10, 50)
PARTITIONS = 3  # as deploy/topics.yaml gives ringfence.verdicts.v1
_PY = sys.executable


@dataclass(frozen=True)
class Options:
    rounds: int = 5
    gap_ms: int = 300
    per_process: int = 100
    fetch_wait_ms: int = 500  # the agent's default long-poll
    timeout_s: float = 120.0


# -- shard process: many followers, JSON lines on stdout ---------------------------------------------


async def shard_main(topic: str, first: int, count: int, keyring_path: Path, fetch_wait_ms: int) -> None:
    """Run `count` followers until stdin closes; print `ready`, then one line per applied verdict."""
    from agents.blocklist import Blocklist
    from agents.verdict_follower import AppliedVerdict, VerdictFollower, VerdictHandler
    from agents.verdict_follower import kafka_consumer_factory as consumers
    from schemas.identity import load_keyring_file
    from schemas.topics import KafkaSettings

    keyring = load_keyring_file(keyring_path).keyring()
    factory = consumers(KafkaSettings(), fetch_max_wait_ms=fetch_wait_ms)
    state = Path(tempfile.mkdtemp(prefix="fanout-"))

    pending: list[str] = []  # written every 20 ms: a write per sample would delay the other devices

    def emit(device: str) -> Any:
        def on_applied(applied: AppliedVerdict) -> None:
            latency_ms = applied.applied_at.timestamp() * 1000 - applied.record_ts_ms
            pending.append(json.dumps({"device": device, "artifact": applied.artifact_id, "ms": latency_ms}))
        return on_applied

    followers = []
    for i in range(first, first + count):
        device = f"fan-{i:05d}"
        blocklist = Blocklist(state / f"{device}.db", topic, sync="normal")
        handler = VerdictHandler(device_id=device, group="bench", blocklist=blocklist, keyring=keyring,
                                 reporter=_NullReporter(), on_applied=[emit(device)])
        followers.append(VerdictFollower(handler, factory, topic, fetch_timeout_ms=fetch_wait_ms))
    tasks = [asyncio.create_task(f.run()) for f in followers]
    await asyncio.gather(*(f.caught_up.wait() for f in followers))
    _write(pending)
    print(json.dumps({"ready": count}), flush=True)
    tasks.append(asyncio.create_task(_drain(pending)))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for follower in followers:
        follower.blocklist.close()


def _write(lines: list[str]) -> None:
    if lines:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
        lines.clear()


async def _drain(lines: list[str]) -> None:
    while True:
        await asyncio.sleep(0.02)
        _write(lines)


class _NullReporter:
    def report(self, result: object) -> None:
        """Action reports are not part of the measured path."""


# -- coordinator ------------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The shard processes of one fleet size and the samples they report."""

    procs: list[asyncio.subprocess.Process]
    samples: list[float]
    applied: dict[str, set[str]]  # artifact -> devices that applied it

    def take(self, line: bytes) -> None:
        sample = json.loads(line)
        self.samples.append(float(sample["ms"]))
        self.applied.setdefault(sample["artifact"], set()).add(sample["device"])

    async def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def start_fleet(n: int, topic: str, keyring: Path, opts: Options) -> Fleet:
    fleet = Fleet([], [], {})
    for first in range(0, n, opts.per_process):
        count = min(opts.per_process, n - first)
        fleet.procs.append(await asyncio.create_subprocess_exec(
            _PY, "-m", "bench.bench_fanout", "--shard", topic, str(first), str(count), str(keyring),
            str(opts.fetch_wait_ms), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        ))
    try:
        await asyncio.wait_for(asyncio.gather(*(_ready(p, fleet) for p in fleet.procs)), opts.timeout_s)
    except BaseException:
        await fleet.close()
        raise
    return fleet


async def _ready(proc: asyncio.subprocess.Process, fleet: Fleet) -> None:
    """Wait for the shard's `ready` line (a late device reports what it caught up with before it)."""
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        if "ready" in json.loads(line):
            return
        fleet.take(line)
    raise RuntimeError(f"shard {proc.pid} ended before it was ready")


async def collect(fleet: Fleet, expected: int, timeout_s: float) -> None:
    """Read samples from every shard until `expected` arrived or the time is up."""

    async def read(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while sum(map(len, fleet.applied.values())) < expected:
            line = await proc.stdout.readline()
            if not line:
                return
            fleet.take(line)

    readers = [asyncio.create_task(read(p)) for p in fleet.procs]
    deadline = time.monotonic() + timeout_s
    while sum(map(len, fleet.applied.values())) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


async def publish_rounds(producer: Any, topic: str, key: Any, rounds: int, gap_ms: int) -> list[str]:
    from schemas.codec import encode
    from schemas.signing import sign_verdict
    from schemas.verdicts import Disposition, Verdict, VerdictSource

    artifacts = []
    for _ in range(rounds):
        sha = uuid.uuid4().hex * 2
        verdict = sign_verdict(Verdict(artifact_id=sha, disposition=Disposition.MALICIOUS,
                                       source=VerdictSource.ML, reason="fan-out benchmark",
                                       issued_at=datetime.now(UTC)), key)
        await producer.send_and_wait(topic, encode(verdict), key=sha.encode())
        artifacts.append(sha)
        await asyncio.sleep(gap_ms / 1000)
    return artifacts


@dataclass(frozen=True)
class FleetRun:
    n: int
    samples: list[float]
    complete: bool  # every device applied every verdict
    catch_up_ms: float | None = None


async def run_fleet(n: int, kafka: Any, key: Any, keyring: Path, opts: Options, *,
                    catch_up: bool = False) -> FleetRun:
    """One fleet size against a fresh verdict topic; optionally an offline device catching up."""
    from aiokafka import AIOKafkaProducer

    topic = f"bench.fanout.verdicts-{uuid.uuid4().hex[:8]}"
    await _create_topic(kafka, topic)
    producer = AIOKafkaProducer(**kafka.client_kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        fleet = await start_fleet(n, topic, keyring, opts)
        try:
            artifacts = await publish_rounds(producer, topic, key, opts.rounds, opts.gap_ms)
            await collect(fleet, n * len(artifacts), timeout_s=30)
        finally:
            await fleet.close()
        complete = all(len(fleet.applied.get(a, ())) == n for a in artifacts)
        late = await offline_catch_up(topic, keyring, artifacts, opts) if catch_up else None
        return FleetRun(n, fleet.samples, complete, late)
    finally:
        await producer.stop()
        await _delete_topic(kafka, topic)


async def offline_catch_up(topic: str, keyring: Path, artifacts: Sequence[str], opts: Options) -> float:
    """Start one more device after the verdicts; ms until it has applied every one of them."""
    started = time.monotonic()
    fleet = await start_fleet(1, topic, keyring, opts)  # `ready` = caught up with the topic's end
    try:
        await collect(fleet, len(artifacts), timeout_s=10)
    finally:
        await fleet.close()
    missing = [a for a in artifacts if not fleet.applied.get(a)]
    if missing:
        raise RuntimeError(f"offline device did not catch up with {len(missing)} verdict(s)")
    return (time.monotonic() - started) * 1000


async def _create_topic(kafka: Any, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        compacted = {"cleanup.policy": "compact"}
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=compacted)])
    finally:
        await admin.close()


async def _delete_topic(kafka: Any, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        with suppress(Exception):  # a leftover bench topic is harmless
            await admin.delete_topics([topic])
    finally:
        await admin.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def measure(fleets: Sequence[int], opts: Options) -> tuple[FleetRun, list[FleetRun]]:
    from schemas.identity import KeyEntry, KeyringFile
    from schemas.signing import SigningKey, public_key_text
    from schemas.topics import KafkaSettings

    kafka = KafkaSettings()
    if not kafka.is_external:
        raise RuntimeError("bench_fanout needs a broker: set RINGFENCE_KAFKA_BOOTSTRAP")
    key = SigningKey.generate()
    entry = KeyEntry(key_id=key.key_id, public_key=public_key_text(key.private_key.public_key()),
                     created_at=datetime.now(UTC))
    with tempfile.TemporaryDirectory(prefix="fanout-keys-") as folder:
        keyring = Path(folder) / "keyring.json"
        keyring.write_bytes(KeyringFile(keys=(entry,)).to_json())
        baseline = await run_fleet(1, kafka, key, keyring, opts)
        runs = [await run_fleet(n, kafka, key, keyring, opts, catch_up=n == max(fleets)) for n in fleets]
    return baseline, runs


def results(baseline: FleetRun, runs: Sequence[FleetRun]) -> list[Result]:
    base = {q: percentile(baseline.samples, q) for q in (50, 99)}
    out = []
    for run in runs:
        if not run.complete:
            raise RuntimeError(f"N={run.n}: not every device applied every verdict "
                               f"({len(run.samples)} samples)")
        for q in (50, 99):
            out.append(Result(f"fan-out N={run.n}: published -> applied p{q} ({len(run.samples)} samples)",
                              percentile(run.samples, q), "ms", base[q], "one device, same run",
                              higher_is_better=False))
        if run.catch_up_ms is not None:
            out.append(Result(f"offline device catch-up after N={run.n} run (start -> all applied)",
                              run.catch_up_ms, "ms", higher_is_better=False))
    return out


def run(quick: bool = False, fleets: Sequence[int] | None = None,
        opts: Options | None = None) -> list[Result]:
    """`python -m bench` entry point."""
    opts = opts or (Options(rounds=2) if quick else Options())
    baseline, runs = asyncio.run(measure(fleets or (QUICK_FLEETS if quick else FLEETS), opts))
    for run_ in (baseline, *runs):
        print(f"  N={run_.n}: mean {statistics.fmean(run_.samples):.1f} ms, max {max(run_.samples):.1f} ms")
    return results(baseline, runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 10, 50 and 2 rounds")
    parser.add_argument("--devices", default=None, help="comma-separated fleet sizes (default 10,50,200)")
    parser.add_argument("--rounds", type=int, default=None, help="verdicts per fleet (default 5)")
    parser.add_argument("--per-process", type=int, default=100, help="devices per shard process")
    parser.add_argument("--fetch-wait-ms", type=int, default=500,
                        help="followers' fetch long-poll (default 500, the agent's)")
    parser.add_argument("--shard", nargs=5, metavar=("TOPIC", "FIRST", "COUNT", "KEYRING", "WAIT_MS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.shard:
        topic, first, count, keyring, wait_ms = args.shard
        asyncio.run(shard_main(topic, int(first), int(count), Path(keyring), int(wait_ms)))
        return 0
    from bench.__main__ import format_results

    fleets = tuple(int(n) for n in args.devices.split(",")) if args.devices else None
    base = Options(rounds=2) if args.quick else Options()
    opts = Options(rounds=args.rounds or base.rounds, per_process=args.per_process,
                   fetch_wait_ms=args.fetch_wait_ms)
    print(format_results(run(args.quick, fleets, opts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
