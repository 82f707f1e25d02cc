"""The worker's state checkpoints without Kafka: CPU per event of saving device states, by strategy.

Why: through Kafka the checkpoint share of a worker's CPU hides in the noise of a shared 2-vCPU VM;
this replays the pipeline benchmark's records (`bench._pipeline_data`, 200 devices, 50 events per
record) through one `Detector` on a simulated clock (`--rate` events/s) and, every commit interval
of that clock, saves every device changed since the last checkpoint as the worker does: encode,
then zstd as `pipeline.state_out.pack_state` compresses it (in a thread of the worker since session
H, off the event loop: the "zstd" column is CPU, no longer loop time; since session J with a zstd
context kept per thread, as the worker's writer compresses its runs). CPU time (`process_time`) per
stage.

    .venv/bin/python -m bench.core_checkpoint [--events 300000] [--rate 7000] [--mode MODE]

Modes: `whole` encodes each state from scratch with `Detector.device_state` (what the worker did
before `tree_state.ForestEncoder`; run this file with PYTHONPATH pointing at an older tree to time
its encoder); `incremental` uses a `ForestEncoder` as the worker does (an older tree's encoder is
also told each record's events with its `touch`, which it needed before session I; since then the
forest stamps the nodes events name and the encoder has no `touch`); `spaced` adds the worker's
spacing of checkpoints under load (`pipeline.checkpoints.spaced_interval_ms`, `STATE_CPU_SHARE`, the
rest of the CPU being the detector's here, so it stretches sooner than a worker whose CPU also goes to
Kafka).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench._pipeline_data import records
from pipeline.detect import Detector
from pipeline.scoring import load_model
from pipeline.state_out import pack_state
from pipeline.worker_runtime import tune_gc
from schemas.fastcodec import decode_events

COMMIT_MS = 1000  # as the pipeline benchmark's worker processes


Touch = Callable[[str, Sequence[Any]], None]


def _strategy(detector: Detector, mode: str) -> tuple[Touch, Callable[[str], bytes]]:
    """(note a record's events, encode a device's state) for the mode."""
    if mode == "whole":
        return (lambda device, events: None), lambda device: detector.device_state(device) or b""
    from pipeline.tree_state import ForestEncoder  # inside: older trees have none

    encoder = ForestEncoder()
    older_touch = getattr(encoder, "touch", None)  # an encoder before session I must be told the events

    def touch(device: str, events: Sequence[Any]) -> None:
        if older_touch is not None:
            older_touch(device, events, detector.forests.get(device))

    def state(device: str) -> bytes:
        return detector.device_state(device, encoder) or b""

    return touch, state


def _next_interval(mode: str, elapsed_ms: float, state_s: float, rest_s: float) -> float:
    if mode != "spaced":
        return COMMIT_MS
    from pipeline.checkpoints import spaced_interval_ms

    return spaced_interval_ms(COMMIT_MS, elapsed_ms, state_s, rest_s)


def replay(values: list[bytes], rate: float, mode: str) -> dict[str, float]:
    """Events through the detector on a clock of `rate` events/s; checkpoints as the worker makes them."""
    decoded = [decode_events(value) for value in values]
    detector = Detector(load_model())
    touch, state = _strategy(detector, mode)
    step_ms = 1000 * len(decoded[0]) / rate
    now = last = 1_700_000_000_000.0
    due = now + COMMIT_MS
    core = encode = compress = rest_mark = 0.0
    checkpoints, states, size, dirty = 0, 0, 0, set[str]()
    for events in decoded:
        now += step_ms
        started = time.process_time()
        touch(events[0].device_id, events)
        detector.process(events, int(now))
        core += time.process_time() - started
        dirty.add(events[0].device_id)
        if now < due:
            continue
        started = time.process_time()
        written = [state(device) for device in dirty]
        encoded = time.process_time()
        for data in written:
            pack_state(data)
        compressed = time.process_time()
        encode, compress = encode + encoded - started, compress + compressed - encoded
        checkpoints, states, size = checkpoints + 1, states + len(written), size + sum(map(len, written))
        due = now + _next_interval(mode, max(now - last, COMMIT_MS), compressed - started, core - rest_mark)
        last, rest_mark, dirty = now, core, set()
    return {"events": sum(map(len, decoded)), "core_s": core, "encode_s": encode, "zstd_s": compress,
            "checkpoints": checkpoints, "states": states, "bytes": size}


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rate", type=float, default=7_000, help="simulated events per second")
    parser.add_argument("--mode", choices=("whole", "incremental", "spaced"), default="incremental")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    values = [value for _, value in records(args.events, 50, 200)]
    tune_gc()  # as `ringfence worker` runs: the start-up heap frozen, its collection thresholds
    r = replay(values, args.rate, args.mode)
    n, saved = r["events"], r["encode_s"] + r["zstd_s"]
    print(
        f"{args.mode}: {n:,.0f} events at {args.rate:,.0f}/s simulated, {r['checkpoints']:.0f} checkpoints, "
        f"{r['states']:.0f} states, {r['bytes'] / n:,.0f} state bytes/event\n"
        f"  CPU per event: detector {r['core_s'] / n * 1e6:.1f} us, states {saved / n * 1e6:.2f} us "
        f"(encode {r['encode_s'] / n * 1e6:.2f}, zstd {r['zstd_s'] / n * 1e6:.2f}) = "
        f"{saved / (saved + r['core_s']) * 100:.0f} % of the CPU"
    )


if __name__ == "__main__":
    main()
