"""Pipeline throughput, latency and scale-out against raw Kafka reads of the same topic, in one run.

    python -m bench.bench_pipeline [--quick]        (or python -m bench --only pipeline)

Needs a broker: RINGFENCE_KAFKA_BOOTSTRAP (else 127.0.0.1:9092). For each record shape (EventBatch
records of 50 events, as agents publish; and single-event records, as the issue's baseline was
measured) on the same pre-filled topic:

(a) raw: aiokafka `getmany` + `orjson.loads` of every value — the floor;
(b) the whole worker path in this process: `BatchWorker` with real clients (decode + validate,
    tree, windows, features, one predict per micro-batch, policy, signed outputs, state records
    at commit points, offset commits) — the ratio (b)/(a) is the goal (>= 25 %);
    plus, without Kafka, decode alone and the detector alone on the same values (where time goes);
    (a) and (b) again on recorded telemetry: ../shared/datasets/otrf replayed as agents would publish
    it, one device per recording, up to 50 events a record within an agent's 500 ms linger (so 18 on
    average: its devices are quieter) (`bench._pipeline_data.recorded_records`; left out,
    with a note, when the recordings are not there): real processes, lines and behaviour, and alerts
    where the attacks are, where the generated fleet's shells make the model alert every ~390 events;
(c) faust's per-event agent path (`_pipeline_faust`, its own process): decode + detector per record;
(e) scale-out: one vs two `ringfence worker` processes draining the same backlog, written once every
    worker holds its share of the (empty) topic's partitions, timed from its first record written
    until the group's committed offsets reach the end (worker processes here commit every second,
    the default is 5 s, so the end is seen up to a second late);
(d) event produced -> signed verdict on its topic, p50/p99, with a `ringfence worker` process under
    background load at 25/50/90 % of (e)'s one-process rate, the maximum of a worker process on this
    machine (probes: a whole ransomware tree in one record, 10 per second). This worker runs with the
    default settings (state checkpoints every 5 s); until session F it committed every second like
    (e)'s, which doubled the p99 at 50 % (BENCHMARKS.md, Pipeline, session F). (e)'s rate is measured
    with 1 s commits, whose state writes the checkpoint schedule caps at 20 % of the rest of the CPU
    (`pipeline.checkpoints`): a default worker's maximum may be somewhat higher, so "50 %" may be a
    little under half of it.

`RINGFENCE_BENCH_PROBES=file.csv` also writes every probe of (d): level, when it was sent, and ms to
the broker's ack, to the worker's decision (`issued_at`) and to its verdict's arrival.

`--latency-only --max-rate N` runs (d) alone against a given one-process rate (events/s), e.g. the
scale-out figure of an earlier run, to compare worker versions in the same minutes.

`--throughput-only [--events N] [--repeat K] [--workload generated|recorded]` runs (a) and (b) alone on
a backlog of N events (50 per record; default 200,000, the full run's), K times on the same topic, and
prints with each run the share of (b)'s timed window the worker's thread was on the CPU (BENCHMARKS.md,
Pipeline, session P: a longer backlog runs slower, because each device's forest keeps growing), and last
the median of the runs' ratios with their range (one run's ratio moves with the host by ±15 %).
`--breakdown` adds, per run, the window split into the worker thread's own CPU time per part of the path
and the time it waited (`bench._worker_parts`; measured with the parts wrapped, so read the headline from
runs without it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import Result, Spread
from bench._pipeline_data import RECORDINGS, attack_probe, check_sample, recorded_records, records
from bench._pipeline_kafka import Bench, WorkerProcess, fill, raw_rate, wait_until, worker_rate
from bench._worker_parts import Parts
from schemas.fastcodec import decode_events
from schemas.topics import KafkaSettings

LEVELS = (0.25, 0.5, 0.9)
RAW_BASELINE = "aiokafka getmany + orjson.loads, same topic, same run"
COMMIT_MS = 1000  # (e)'s worker processes commit every second: their progress is seen through commits
SCALE_PARTITIONS = 4


@dataclass(frozen=True)
class Sizes:
    batched_events: int  # events on the 50-events/record topic
    single_events: int  # events on the 1-event/record topic
    latency_s: float  # seconds per load level
    scale_events: int  # backlog drained by one, then two worker processes
    faust_batched: bool  # also run faust on the batched topic


QUICK = Sizes(24_000, 4_000, 2.5, 30_000, False)
FULL = Sizes(200_000, 40_000, 12.0, 300_000, True)
DEVICES = 200


def run(
    quick: bool,
    max_rate: float | None = None,
    seconds: float | None = None,
    throughput: tuple[int, int] | None = None,
    breakdown: bool = False,
    workload: str = "generated",
) -> list[Result]:
    """All figures of the section (see the module docstring); only (d) when `max_rate` is given; only
    (a) and (b) when `throughput` = (events, runs) is, with (b)'s window per part when `breakdown`, on
    the `workload` ("generated" or "recorded")."""
    os.environ.setdefault(
        "OMP_NUM_THREADS", "1"
    )  # as `ringfence worker` runs (effective if xgboost is not loaded yet)
    with tempfile.TemporaryDirectory(prefix="rf-bench-pipeline-") as workdir:
        bench = Bench(_kafka(), Path(workdir))
        if throughput is not None:
            return asyncio.run(_throughput_only(bench, *throughput, breakdown, workload))
        sizes = QUICK if quick else FULL
        if seconds is not None:
            sizes = dataclasses.replace(sizes, latency_s=seconds)
        return asyncio.run(_run(bench, sizes) if max_rate is None else _latency_only(bench, max_rate, sizes))


async def _latency_only(bench: Bench, max_rate: float, sizes: Sizes) -> list[Result]:
    await bench.setup()
    try:
        return await _latency(bench, max_rate, sizes)
    finally:
        await bench.cleanup()


def _kafka() -> KafkaSettings:
    settings = KafkaSettings()
    return settings if settings.bootstrap else settings.model_copy(update={"bootstrap": "127.0.0.1:9092"})


async def _run(bench: Bench, sizes: Sizes) -> list[Result]:
    await bench.setup()
    try:
        results: list[Result] = []
        for per_record, events in ((50, sizes.batched_events), (1, sizes.single_events)):
            await _throughput(bench, per_record, events, sizes, results)
        if RECORDINGS.is_dir():
            await _throughput(bench, 50, sizes.batched_events, sizes, results, "recorded")
        else:
            print(f"(b) on recorded telemetry left out: no {RECORDINGS}", file=sys.stderr)
        one, two = await _scale_out(bench, sizes)
        results.append(
            Result(
                "scale-out: 2 worker processes draining a backlog",
                two,
                "events/s",
                one,
                "1 worker process, same backlog",
            )
        )
        results += await _latency(bench, one, sizes)
        return results
    finally:
        await bench.cleanup()


async def _throughput(
    bench: Bench,
    per_record: int,
    events: int,
    sizes: Sizes,
    results: list[Result],
    workload: str = "generated",
) -> float:
    shape = _shape(per_record, workload)
    topic, values, count = await _filled_topic(bench, per_record, events, workload)
    settings = bench.settings(f"w{per_record}{workload[0]}", topic)  # its own state topic and group
    raw, _ = await raw_rate(bench.kafka, topic, count, settings.poll_max_records)
    measured = await worker_rate(bench, settings, count)
    full, model = measured.events_per_s, measured.worker.detector.model.version
    results += [
        Result(
            f"full worker path, {shape}, model {model} (goal >= 25 % of raw)",
            full,
            "events/s",
            raw,
            RAW_BASELINE,
        ),
        _busy(measured.main_thread_busy, shape),
        _decode_only([v for _, v in values], raw, shape),
    ]
    if workload == "generated" and (per_record == 1 or sizes.faust_batched):
        results.append(
            Result(
                f"faust per-event agent path, {shape}",
                _faust_rate(bench, topic, count),
                "events/s",
                raw,
                RAW_BASELINE,
            )
        )
    return full


async def _filled_topic(
    bench: Bench, per_record: int, events: int, workload: str = "generated"
) -> tuple[str, list[tuple[bytes, bytes]], int]:
    """A new 2-partition topic holding `events` events of the `workload` (generated: `records`' fleet;
    recorded: `recorded_records`, the OTRF recordings), `per_record` to a record: (topic, the records'
    keys and values, records written)."""
    topic = bench.name(f"events{per_record}{workload[0]}")
    await bench.create([(topic, 2)])
    if workload == "recorded":
        values = list(recorded_records(events, per_record, prefix=f"r{per_record}"))
    else:
        values = list(records(events, per_record, DEVICES, prefix=f"d{per_record}"))
    check_sample([v for _, v in values])
    return topic, values, await fill(bench.kafka, topic, values)


def _shape(per_record: int, workload: str) -> str:
    """How a topic's records hold their events, as the figures name it."""
    if workload == "recorded":
        return f"recorded telemetry, up to {per_record} ev/record"
    return f"{per_record} ev/record"


def _parts(parts: dict[str, float], run: str) -> list[Result]:
    """(b)'s window per part (`--breakdown`), in % of it: they sum to 100."""
    window = sum(parts.values())
    return [Result(f"    {name}, {run}", 100.0 * seconds / window, "% of the timed window")
            for name, seconds in parts.items()] if window > 0 else []  # fmt: skip


def _busy(share: float, shape: str) -> Result:
    """The worker thread's CPU share of (b)'s timed window: near 100 % means no waiting to win back."""
    return Result(f"  worker thread on the CPU, {shape}", 100.0 * share, "% of the timed window")


async def _throughput_only(
    bench: Bench, events: int, repeat: int, breakdown: bool = False, workload: str = "generated"
) -> list[Result]:
    """(a) then (b) on one backlog of `events` (50 per record) of the `workload`, `repeat` times,
    alternated on one topic; with `breakdown`, (b)'s window split into the parts of `bench._worker_parts`
    (each run measured so)."""
    await bench.setup()
    try:
        topic, _, count = await _filled_topic(bench, 50, events, workload)
        results: list[Result] = []
        ratios: list[float] = []
        for run_index in range(repeat):
            settings = bench.settings(f"w50-{run_index}", topic)
            raw, backlog = await raw_rate(bench.kafka, topic, count, settings.poll_max_records)
            measured = await worker_rate(bench, settings, count, Parts() if breakdown else None)
            model = measured.worker.detector.model.version
            ratios.append(measured.events_per_s / raw)
            results += [
                Result(
                    f"full worker path, {_shape(50, workload)}, backlog of {backlog:,} {workload} events, "
                    f"model {model}, run {run_index + 1}",
                    measured.events_per_s,
                    "events/s",
                    raw,
                    RAW_BASELINE,
                ),
                _busy(measured.main_thread_busy, f"run {run_index + 1}"),
                *_parts(measured.parts, f"run {run_index + 1}"),
            ]
            del measured  # its worker's trees are garbage before the next raw read (`raw_rate` collects it)
        if repeat > 1:  # one run's ratio moves with the host (BENCHMARKS.md, Pipeline): the runs' middle
            results.append(_median_ratio(ratios))
        return results
    finally:
        await bench.cleanup()


def _median_ratio(ratios: list[float]) -> Result:
    """The median of the runs' worker/raw ratios, in % of raw, with their range (`bench.Spread`)."""
    spread = Spread.of(ratios)
    assert spread is not None  # one ratio per run, and there are runs
    return Result(f"median of the {len(ratios)} runs' ratios (goal >= 25 %)", 100 * spread.median,
                  f"% of raw [{100 * spread.low:.1f} .. {100 * spread.high:.1f}]")


def _decode_only(values: list[bytes], raw: float, shape: str) -> Result:
    """The worker's decoder (`schemas.fastcodec`) on the same values, no Kafka: how much of the gap is
    validation."""
    started = time.perf_counter()
    events = sum(len(decode_events(v)) for v in values)
    return Result(
        f"  of which decode+validate alone, {shape}",
        events / (time.perf_counter() - started),
        "events/s",
        raw,
        "raw rate above",
    )


def _faust_rate(bench: Bench, topic: str, count: int) -> float:
    result = bench.workdir / f"faust-{topic}.json"
    log = (bench.workdir / f"faust-{topic}.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench._pipeline_faust",
            bench.kafka.bootstrap_servers,
            topic,
            str(count),
            str(result),
        ],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": "."},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        while not result.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if not result.exists():
            raise RuntimeError(f"faust agent did not finish: see {log.name}")
        measured = json.loads(result.read_text())
        return float(measured["events"]) / float(measured["seconds"])
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


async def _latency(bench: Bench, max_rate: float, sizes: Sizes) -> list[Result]:
    topic = bench.name("events-latency")
    await bench.create([(topic, 2)])
    settings = bench.settings("latency", topic)  # the worker as shipped: its default commit interval
    worker = WorkerProcess(bench.env(settings), bench.workdir / "worker-latency.log")
    try:
        await wait_until(worker.assigned, 60, "the latency worker's assignment")
        async with _Probe(bench, topic) as probe:
            await probe.warm_up()
            results = []
            for level in LEVELS:
                latencies, lost = await probe.level(max_rate * level, sizes.latency_s, f"l{int(level * 100)}")
                name = f"produced -> verdict at {int(level * 100)} % of max ({max_rate * level:,.0f} ev/s)"
                decided, acked = probe.to_decision(latencies), probe.to_broker(latencies)
                results += [
                    Result(f"{name} p50", _pct(list(latencies.values()), 50), "ms", higher_is_better=False),
                    Result(
                        f"{name} p99 (goal <= 100 ms at 50 %){f', {lost} lost' if lost else ''}",
                        _pct(list(latencies.values()), 99),
                        "ms",
                        higher_is_better=False,
                    ),
                    Result(
                        f"{name}: of which produced -> acked, p99",
                        _pct(acked, 99),
                        "ms",
                        higher_is_better=False,
                    ),
                    Result(
                        f"{name}: of which produced -> decided, p99",
                        _pct(decided, 99),
                        "ms",
                        higher_is_better=False,
                    ),
                ]
            return results
    finally:
        worker.stop()


def _pct(values: list[float], pct: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1] if len(values) > 1 else values[0]


class _Probe:
    """Background load at a rate, probes at 10/s, and the verdict consumer timing each probe.

    Besides send -> arrival, each probe's verdict carries the worker's `issued_at` (its wall clock at
    the flush that decided it, same host): send -> decided is the part spent queued and processed in
    the worker, the rest is the way out (producer, broker, this consumer)."""

    def __init__(self, bench: Bench, topic: str) -> None:
        self.bench, self.topic = bench, topic
        kwargs = bench.kafka.client_kwargs()
        self.producer = AIOKafkaProducer(**kwargs, linger_ms=0, compression_type="zstd")
        self.consumer = AIOKafkaConsumer(**kwargs, enable_auto_commit=False, fetch_max_wait_ms=10)
        self.sent: dict[bytes, float] = {}
        self.sent_wall: dict[bytes, float] = {}  # time.time() at send, to compare with `issued_at`
        self.arrived: dict[bytes, float] = {}
        self.issued: dict[bytes, float] = {}  # the verdict's issued_at, epoch seconds
        self.acked: dict[bytes, float] = {}  # when the broker acknowledged the probe
        self.device_of: dict[bytes, str] = {}  # the probe's device (its record key)
        self.index = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Probe:
        await self.producer.start()
        await self.consumer.start()
        tp = TopicPartition(self.bench.name("verdicts"), 0)
        self.consumer.assign([tp])
        await self.consumer.seek_to_end(tp)
        self._task = asyncio.create_task(self._receive())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.producer.stop()
        await self.consumer.stop()

    async def _receive(self) -> None:
        while True:
            for records_ in (await self.consumer.getmany(timeout_ms=50)).values():
                now = time.perf_counter()
                for record in records_:
                    if record.key not in self.arrived:
                        self.arrived[record.key] = now
                        self.issued[record.key] = _issued_at(record.value)

    async def _send_probe(self) -> bytes:
        sha, key, value = attack_probe(self.index, prefix=f"probe{self.bench.suffix}")
        self.index += 1
        self.sent[sha.encode()] = time.perf_counter()
        self.sent_wall[sha.encode()] = time.time()
        self.device_of[sha.encode()] = key.decode()
        ack = await self.producer.send(self.topic, value, key=key)
        ack.add_done_callback(lambda _: self.acked.setdefault(sha.encode(), time.perf_counter()))
        return sha.encode()

    async def warm_up(self) -> None:
        shas = [await self._send_probe() for _ in range(3)]
        await wait_until(lambda: all(s in self.arrived for s in shas), 60, "warm-up verdicts")

    def to_broker(self, probes: Iterable[bytes]) -> list[float]:
        """ms from each probe's send to the broker's acknowledgement (this process's producer)."""
        return [(self.acked[p] - self.sent[p]) * 1000 for p in probes if p in self.acked]

    def to_decision(self, probes: Iterable[bytes]) -> list[float]:
        """ms from each probe's send to the `issued_at` of its verdict (the worker's part)."""
        return [(self.issued[p] - self.sent_wall[p]) * 1000 for p in probes if p in self.issued]

    async def level(self, rate: float, seconds: float, tag: str) -> tuple[dict[bytes, float], int]:
        load = iter(list(records(int(rate * seconds) + 100, 50, DEVICES, prefix=f"{tag}{self.bench.suffix}")))
        probes: list[bytes] = []
        started, sent_events = time.perf_counter(), 0
        while (elapsed := time.perf_counter() - started) < seconds:
            while sent_events < rate * elapsed:
                key, value = next(load)
                await self.producer.send(self.topic, value, key=key)
                sent_events += 50
            if len(probes) < elapsed * 10:
                probes.append(await self._send_probe())
            await asyncio.sleep(0.005)
        deadline = time.perf_counter() + 5
        while not all(p in self.arrived for p in probes) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        latencies = {p: (self.arrived[p] - self.sent[p]) * 1000 for p in probes if p in self.arrived}
        self._write_probes(tag, started, probes)
        await asyncio.sleep(1.0)  # let the worker drain before the next level
        return latencies, len(probes) - len(latencies)

    def _write_probes(self, tag: str, started: float, probes: list[bytes]) -> None:
        """With RINGFENCE_BENCH_PROBES=path: one CSV line per probe (level, s since the level's start,
        ms to the broker's ack, to the worker's decision, to arrival — empty when it never happened —
        and the send's `time.perf_counter()`, the host's monotonic clock, and the probe's device, to
        line up with a worker trace)."""
        path = os.environ.get("RINGFENCE_BENCH_PROBES")
        if not path:
            return

        def ms(ended: float | None, since: float) -> str:
            return "" if ended is None else f"{(ended - since) * 1000:.1f}"

        with open(path, "a") as out:
            for p in probes:
                out.write(
                    f"{tag},{self.sent[p] - started:.3f},{ms(self.acked.get(p), self.sent[p])},"
                    f"{ms(self.issued.get(p), self.sent_wall[p])},{ms(self.arrived.get(p), self.sent[p])},"
                    f"{self.sent[p]:.4f},{self.device_of[p]}\n"
                )


def _issued_at(value: bytes) -> float:
    """A verdict record's `issued_at` as epoch seconds (ISO 8601, UTC)."""
    stamp = str(orjson.loads(value)["issued_at"]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


async def _scale_out(bench: Bench, sizes: Sizes) -> tuple[float, float]:
    """events/s of one, then two worker processes draining the same backlog."""
    values = list(records(sizes.scale_events, 50, DEVICES, prefix="s"))
    return await _drain(bench, values, 1), await _drain(bench, values, 2)


async def _drain(bench: Bench, values: list[tuple[bytes, bytes]], processes: int) -> float:
    """The workers join the group on an empty topic; once every one holds its share of the partitions
    the backlog is written, and the rate is taken from the first record written until the group's
    committed offsets reach the end. (Until session I the backlog was there first: the first worker's
    assignment started the clock while the second still loaded its model, the first then drained
    whole partitions alone until the rebalance, and the second got partitions that were mostly done:
    two workers measured slower than one, BENCHMARKS.md, Pipeline, session I.)"""
    topic = bench.name(f"events-scale{processes}")
    await bench.create([(topic, SCALE_PARTITIONS)])
    settings = bench.settings(f"scale{processes}", topic, commit_interval_ms=COMMIT_MS)
    workers = [
        WorkerProcess(bench.env(settings), bench.workdir / f"worker-scale{processes}-{i}.log")
        for i in range(processes)
    ]
    try:
        await wait_until(lambda: _shared(workers), 120, "every worker's share of the partitions")
        started = time.perf_counter()
        count = await fill(bench.kafka, topic, values)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if await bench.committed(settings.group_id, topic) >= count:
                return count * 50 / (time.perf_counter() - started)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{processes} worker(s) did not drain {topic}")
    finally:
        for worker in workers:
            worker.stop()


def _shared(workers: list[WorkerProcess]) -> bool:
    """Every worker's latest assignment is non-empty and together they hold each partition once."""
    held = [worker.partitions() for worker in workers]
    owned = [p for partitions in held for p in partitions]
    return all(held) and sorted(owned) == list(range(SCALE_PARTITIONS))


def main() -> None:
    from bench.__main__ import format_results

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency-only", action="store_true", help="only (d), at --max-rate")
    parser.add_argument("--max-rate", type=float, help="one worker process's events/s for (d)'s load levels")
    parser.add_argument("--seconds", type=float, help="seconds per load level of (d) (probes: 10/s)")
    parser.add_argument(
        "--throughput-only", action="store_true", help="only (a) and (b), 50 ev/record, --repeat times"
    )
    parser.add_argument(
        "--events",
        type=int,
        help=f"backlog of --throughput-only, in events (at least 1000; default {FULL.batched_events:,}, the "
        "full run's; rounded up to whole records of 50)",
    )
    parser.add_argument("--repeat", type=int, help="runs of --throughput-only (at least 1; default 3)")
    parser.add_argument(
        "--workload",
        choices=("generated", "recorded"),
        help="events of --throughput-only: generated (default: the fleet of bench/_pipeline_data.py) or "
        "recorded (real telemetry: ../shared/datasets/otrf replayed, one device per recording)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="with --throughput-only: also split each run's window into the worker thread's own CPU per part "
        "(decode, tree, flush, incidents, outputs, checkpoint, Kafka clients, other) and its waiting "
        "(client work done while the worker awaited its sends or a checkpoint's acks is in those parts; "
        "bench/_worker_parts.py); the wrappers cost ~1.5 %% of the window",
    )
    args = parser.parse_args()
    if args.latency_only and not args.max_rate:
        parser.error("--latency-only needs --max-rate")
    if not args.throughput_only and (
        args.events is not None or args.repeat is not None or args.breakdown or args.workload is not None
    ):
        parser.error("--events, --repeat, --breakdown and --workload go with --throughput-only")
    if args.throughput_only:
        if args.quick or args.latency_only or args.max_rate is not None or args.seconds is not None:
            parser.error(
                "--throughput-only runs (a) and (b) alone: --quick, --latency-only, --max-rate and "
                "--seconds do not apply"
            )
        args.events = FULL.batched_events if args.events is None else args.events
        args.repeat = 3 if args.repeat is None else args.repeat
        if args.events < 1_000 or args.repeat < 1:
            parser.error("--throughput-only needs --events >= 1000 and --repeat >= 1")
        if args.workload == "recorded" and not RECORDINGS.is_dir():
            parser.error(f"--workload recorded needs the recordings: no {RECORDINGS}")
        throughput = (args.events, args.repeat)
        workload = args.workload or "generated"
        print(format_results(run(False, throughput=throughput, breakdown=args.breakdown, workload=workload)))
        return
    print(format_results(run(args.quick, args.max_rate if args.latency_only else None, args.seconds)))


if __name__ == "__main__":
    main()
