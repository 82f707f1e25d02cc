"""Decode+validate throughput of the events contract: single-event records vs batches of 100 and 1,000.

Two decoders: `schemas.codec` (pydantic; what every other reader uses) and the worker's fast path
`schemas.fastcodec.decode_events` (msgspec, falling back to the codec on anything it cannot prove).

Why ratios: absolute events/s depend on the machine (and on how many others share its CPUs); the
ratio to bare `orjson.loads` of the *same bytes in the same run* shows what the contract costs on
top of parsing. Each case is timed best-of-N, alternating codec and orjson, to damp noise.

    .venv/bin/python -m bench.bench_contracts [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson

from bench import Result
from schemas import codec, fastcodec
from schemas.events import (
    BehaviorEvent,
    DnsQuery,
    EventBatch,
    FileWrite,
    NetworkConnect,
    Payload,
    Platform,
    ProcessStart,
    RegistrySet,
)

NEEDS_KAFKA = False  # pure CPU: `python -m bench` starts no broker for it

BATCH_SIZES = (1, 100, 1000)
_START = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def _payload(rng: random.Random, index: int) -> Payload:
    roll = rng.random()
    if roll < 0.15:
        return ProcessStart(
            image=r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
            command_line=f"powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\jobs\\j{index}.ps1",
            sha256=f"{rng.getrandbits(256):064x}",
            user="CORP\\alice",
            integrity_level="Medium",
            pid=rng.randrange(100, 60000),
            ppid=rng.randrange(100, 60000),
            parent_image=r"C:\Windows\explorer.exe",
        )
    if roll < 0.55:
        return FileWrite(
            path=f"C:\\Users\\alice\\AppData\\Local\\Temp\\f{index % 997}.tmp", bytes_written=4096
        )
    if roll < 0.70:
        return RegistrySet(
            key=r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run",
            value_name="Updater",
            data=r"C:\Users\alice\AppData\Roaming\upd.exe",
        )
    if roll < 0.85:
        return NetworkConnect(
            dst_ip=f"10.0.{index % 250}.{index % 200}", dst_port=443, src_port=50000 + index % 9999
        )
    return DnsQuery(query=f"host{index % 500}.example.org", answers=("203.0.113.7",))


def make_events(count: int, device_id: str = "bench-dev-1", seed: int = 11) -> list[BehaviorEvent]:
    """A realistic mix of Windows events for one device, seq 0..count-1."""
    rng = random.Random(seed)
    return [
        BehaviorEvent(
            event_id=f"{rng.getrandbits(128):032x}",
            device_id=device_id,
            seq=index,
            ts=_START + timedelta(milliseconds=5 * index),
            platform=Platform.WINDOWS,
            process_key=f"{{{rng.getrandbits(128):032x}}}",
            parent_process_key=f"{{{rng.getrandbits(64):016x}}}",
            image=r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
            payload=_payload(rng, index),
        )
        for index in range(count)
    ]


def records(events: list[BehaviorEvent], batch_size: int) -> list[bytes]:
    """The record values a shipper would publish with this batch size."""
    if batch_size == 1:
        return [codec.encode_event(event) for event in events]
    chunks = [events[start : start + batch_size] for start in range(0, len(events), batch_size)]
    return [codec.encode_batch(EventBatch.of(chunk)) for chunk in chunks]


def _seconds(work: Callable[[], object]) -> float:
    """One timed pass with the cyclic GC off (as timeit does): its pauses are not the codec's cost."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started
    finally:
        gc.enable()


def _case(
    name: str, data: list[bytes], n_events: int, decode: Callable[[bytes], object], repeats: int
) -> Result:
    codec_s = orjson_s = float("inf")
    for _ in range(repeats):  # alternate so both see the same machine load
        codec_s = min(codec_s, _seconds(lambda: [decode(item) for item in data]))
        orjson_s = min(orjson_s, _seconds(lambda: [orjson.loads(item) for item in data]))
    return Result(
        name=name,
        figure=n_events / codec_s,
        unit="events/s",
        baseline=n_events / orjson_s,
        baseline_name="orjson.loads of the same bytes",
    )


def run(quick: bool = False) -> list[Result]:
    """One result per case: events/s through the codec, through bare orjson.loads, and their ratio."""
    n_events, repeats = (2_000, 5) if quick else (10_000, 25)  # many short passes: best-of beats noise
    events = make_events(n_events)
    results = []
    for size in BATCH_SIZES:
        data = records(events, size)
        decode = codec.decode_record if size == 1 else codec.decode_batch
        label = "1 event/record" if size == 1 else f"{size} events/record"
        results.append(_case(f"contracts: decode+validate, {label}", data, n_events, decode, repeats))
        fast = fastcodec.decode_events
        results.append(_case(f"contracts: fastcodec.decode_events, {label}", data, n_events, fast, repeats))
    data = records(events, 1000)
    results.append(
        _case(
            "contracts: model_validate_json alone, 1000 events/record",
            data,
            n_events,
            lambda item: EventBatch.model_validate_json(item, strict=True),
            repeats,
        )
    )
    return results


def format_table(results: list[Result]) -> str:
    """A Markdown table of `run()`'s results (as recorded in BENCHMARKS.md)."""
    lines = ["| case | events/s | orjson.loads events/s | cost vs orjson.loads |", "|---|---:|---:|---:|"]
    for row in results:
        baseline = row.baseline or 0.0
        lines.append(f"| {row.name} | {row.figure:,.0f} | {baseline:,.0f} | {baseline / row.figure:.1f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2,000 events x 5 passes (default 10,000 x 25)")
    print(format_table(run(quick=parser.parse_args().quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
