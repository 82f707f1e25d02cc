"""The worker's path without Kafka: the pipeline benchmark's records through decode and `Detector.process`.

Why: through Kafka on a shared 2-vCPU VM the full-path rate moves 2x between runs, so a 10-30 %
change of the code is invisible there; this replays the same record values (`bench._pipeline_data`,
what agents publish) in one process, timed by CPU time, stage by stage. It also prints a SHA-256 of
every flush's feature matrix and of every decision, so a speed-up can be shown to change nothing:
run it before and after a change and compare the digests.

    .venv/bin/python -m bench.core_replay [--events 60000] [--per-record 50] [--decoder fast|codec] [--stages]
        [--own-lines SHARE] [--workload generated|recorded] [--overlap PAIRS]

The clock advances 3 ms per record (a flush every ~17 records of 50 events, as at ~15k events/s);
the model is whatever `pipeline.scoring.load_model` loads (the committed trained booster), one
OpenMP thread as `ringfence worker` runs it; GC tuned as the worker does. `--stages` also prints
the detector's CPU time per stage (tree update, flush rows, row contexts, features, scoring,
incidents with their explanations), per event, and per scored row with the rows' shape (rows per event,
the share of leaves, window-active descendants per row). `--own-lines` gives that share of the process
starts a command line of its own (the default's eight lines are always in the masks' caches; a fleet's
are not: BENCHMARKS.md, "Session W"). `--workload recorded` replays real telemetry instead
(`bench._pipeline_data.recorded_records`: ../shared/datasets/otrf, one device per recording).
`--overlap PAIRS` also replays in the worker's order (50-record polls) with each flush made at once,
with its predict overlapped with decoding the next records, and with it overlapped with taking them
(the worker since session AE), in turn, by wall time: the digests must be the same all three ways.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import orjson

from bench._pipeline_data import RECORDINGS, recorded_records, records
from pipeline import detect
from pipeline import features as features_module
from pipeline.features import RowContext
from pipeline.flush_overlap import FlushOverlap, WorkAhead
from pipeline.scoring import Scorer, load_model
from pipeline.worker_runtime import tune_gc
from schemas import codec, fastcodec

_DECODERS: dict[str, Callable[[bytes], Sequence[Any]]] = {
    "fast": fastcodec.decode_events,
    "codec": lambda value: codec.decode_record(value).events,
}


STAGES = (
    ("tree update", detect.Detector, "ingest"), ("flush rows", detect.Detector, "take_rows"),
    ("row contexts", detect, "row_contexts"), ("features", features_module, "feature_matrix"),
    ("scoring", Scorer, "score"), ("incidents", detect.Detector, "_decide"),
)  # fmt: skip
PER_ROW = ("row contexts", "features", "scoring")
"""The stages whose work is per scored row (`--stages` prints them per row too)."""


@contextmanager
def _swapped(owner: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """`owner.name` set to `replacement` while inside, then restored."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def timed_parts(parts: Sequence[tuple[str, Any, str]], seconds: dict[str, float]) -> Iterator[None]:
    """Add the CPU seconds of each (label, owner, attribute) function to `seconds[label]` while inside
    (the functions are wrapped, then restored); `bench.incident_cost` times its parts with it too."""

    def wrap(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.process_time() - started

        return timed

    with ExitStack() as stack:
        for label, owner, name in parts:
            stack.enter_context(_swapped(owner, name, wrap(label, getattr(owner, name))))
        yield


def timed_stages(seconds: dict[str, float]) -> AbstractContextManager[None]:
    """Add each detector stage's CPU seconds to `seconds` while inside."""
    return timed_parts(STAGES, seconds)


def feature_matrices(seen: Callable[[Any], object]) -> AbstractContextManager[None]:
    """Hand every flush's feature matrix to `seen` while inside."""
    matrix_of = features_module.feature_matrix

    def tapped(contexts: Sequence[RowContext]) -> Any:
        matrix = matrix_of(contexts)
        seen(matrix)
        return matrix

    return _swapped(detect, "feature_matrix", tapped)  # the detector's own name for it


def row_shapes(shape: dict[str, int]) -> AbstractContextManager[None]:
    """Count the rows the detector scores, the leaves among them and their window-active descendants
    into `shape` while inside: what the per-row stages walk."""
    contexts_of = detect.row_contexts
    shape.update(rows=0, leaves=0, descendants=0)

    def tapped(rows: Sequence[Any], window_ms: int) -> list[RowContext]:
        contexts: list[RowContext] = contexts_of(rows, window_ms)
        shape["rows"] += len(contexts)
        shape["leaves"] += sum(not c.descendants for c in contexts)
        shape["descendants"] += sum(len(c.descendants) for c in contexts)
        return contexts

    return _swapped(detect, "row_contexts", tapped)


def replay(values: list[bytes], decoder: str) -> dict[str, Any]:
    """Decode every value, then feed them to one Detector; CPU seconds per stage and digests."""
    features, decisions = hashlib.sha256(), hashlib.sha256()
    detector = detect.Detector(load_model())
    decode = _DECODERS[decoder]
    started = time.process_time()
    for value in values:  # the benchmark's baseline without Kafka: what `getmany` + `orjson.loads` parses
        orjson.loads(value)
    parsed_at, started = started, time.process_time()
    decoded = [decode(value) for value in values]
    decoded_at = time.process_time()
    with feature_matrices(lambda matrix: features.update(matrix.tobytes())):
        now = 1_700_000_000_000
        out = []
        for events in decoded:
            now += 3
            out += detector.process(events, now)
        out += detector.flush(now + 1_000)
    done = time.process_time()
    for decision in out:
        decisions.update(decision.model_dump_json().encode())
    return {
        "events": sum(len(events) for events in decoded), "orjson_s": started - parsed_at,
        "decode_s": decoded_at - started,
        "core_s": done - decoded_at, "rows": detector.stats.rows_scored, "flushes": detector.stats.flushes,
        "decisions": len(out), "features_sha256": features.hexdigest(),
        "decisions_sha256": decisions.hexdigest(),
    }  # fmt: skip


def replay_inline(values: list[bytes], mode: str, poll: int = 50) -> dict[str, Any]:
    """The worker's order (`pipeline.worker.BatchWorker._handle`): decode a record, ingest it, flush
    when due. `mode` "synchronous": each flush at once; "decode": through the worker's `FlushOverlap`,
    the next records only decoded while a due flush's predict runs on the C trees' thread (the worker
    until session AE); "take": as the worker does since, the next records of devices the flush does not
    hold taken into the trees meanwhile (`WorkAhead`), a flush due after one of them made next. Record i
    is ingested at the same clock in every mode, so the flushes, features and decisions are the same.
    Records come in polls of `poll` (the worker's `poll_max_records`): nothing past a poll's end is
    worked on ahead, and a flush due at its end is made at once (`BatchWorker._handle`'s tick). Timed
    by the wall clock and by this thread's CPU time (a second thread's CPU is no cost to the worker's
    thread); digests as `replay`."""
    features, decisions = hashlib.sha256(), hashlib.sha256()
    detector, flusher = detect.Detector(load_model()), FlushOverlap()
    decode = fastcodec.decode_events
    ahead: list[Sequence[Any] | None] = [None] * len(values)
    out: list[Any] = []
    base = 1_700_000_000_000
    ahead_counts = {"taken": 0, "held": 0}  # records taken ahead; takes refused for a held device

    def clock(i: int) -> int:
        return base + 3 * (i + 1)

    with feature_matrices(lambda matrix: features.update(matrix.tobytes())):
        started, thread_started = time.perf_counter(), time.thread_time()
        i = 0
        while i < len(values):
            events, ahead[i] = ahead[i], None
            now = clock(i)
            detector.ingest(decode(values[i]) if events is None else events, now)
            i += 1
            end = min(len(values), -(-i // poll) * poll)  # this poll's end
            while detector.due(now):
                if mode == "synchronous":
                    out += detector.flush(now)
                    break
                taken: list[int] = []
                work_one = _ahead(detector, values, ahead, i, end, mode, clock, taken, ahead_counts)
                out += flusher.flush(detector, now, work_one)
                i += len(taken)
                ahead_counts["taken"] += len(taken)
                if not taken or not detector.due(taken[-1]):
                    break
                now = taken[-1]
            if i == end and detector.due(now + 1):
                out += detector.flush(now + 1)
        out += detector.flush(clock(len(values)) + 1_000)
        wall, thread_cpu = time.perf_counter() - started, time.thread_time() - thread_started
    for decision in out:
        decisions.update(decision.model_dump_json().encode())
    return {
        "events": detector.stats.events, "wall_s": wall, "thread_cpu_s": thread_cpu,
        "rows": detector.stats.rows_scored, "flushes": detector.stats.flushes, "decisions": len(out),
        "features_sha256": features.hexdigest(), "decisions_sha256": decisions.hexdigest(),
        "overlap": (flusher.ready, flusher.starved, flusher.synchronous), **ahead_counts,
    }  # fmt: skip


def _ahead(detector: detect.Detector, values: list[bytes], ahead: list[Sequence[Any] | None], first: int,
           end: int, mode: str, clock: Callable[[int], int], taken: list[int],
           counts: dict[str, int]) -> WorkAhead[Sequence[Any]]:
    """The worker's `work_one` for a flush due before `values[first]`, its poll ending before `end`: in
    "take" mode records of devices the flush does not hold are ingested (their clocks appended to
    `taken`) until one is not (counted in `counts["held"]`), or a flush is due after one; then, as in
    "decode" mode throughout, records are only decoded into `ahead`."""

    def take(at: int, events: Sequence[Any]) -> bool | None:
        pending = detector.pending
        if mode != "take" or pending is None:
            return None
        if not pending.clear(events):
            counts["held"] += 1
            return None
        now = clock(at)
        detector.ingest(events, now)
        taken.append(now)
        return not detector.due(now)

    return WorkAhead(ahead, first, end, lambda at: fastcodec.decode_events(values[at]), take)


def compare_overlap(values: list[bytes], pairs: int) -> None:
    """`replay_inline` synchronously, decoding ahead and taking ahead, in turn `pairs` times: wall time
    and the replaying thread's CPU time per event (median [min..max]; on a machine with a core to spare
    the wall time comes down to the thread's CPU), and the digests, which must be the same all ways."""
    modes = ("synchronous", "decode", "take")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(pairs):
        for mode in modes:
            runs[mode].append(replay_inline(values, mode))
    for mode in modes:
        digests = sorted({(r["features_sha256"][:16], r["decisions_sha256"][:16]) for r in runs[mode]})
        spans = ", ".join(f"{name} {_spread([r[key] / r['events'] * 1e6 for r in runs[mode]])} us/event"
                          for name, key in (("wall", "wall_s"), ("thread CPU", "thread_cpu_s")))
        counts = runs[mode][-1]["overlap"] if mode != "synchronous" else None
        flushes = f" (last run's flushes ready/starved/synchronous: {counts})" if counts else ""
        print(f"{mode}: {spans} over {pairs} runs; digests (features, decisions) {digests}{flushes}")


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):.2f} [{ordered[0]:.2f}..{ordered[-1]:.2f}]"


def workload_values(
    workload: str, events: int, per_record: int, devices: int = 200, own_lines: float = 0.0
) -> list[bytes]:
    """The record values this replay reads: the generated fleet's (`records`) or, for "recorded", the OTRF
    recordings' (`recorded_records`, which the caller has checked are there). `bench.core_instructions`
    counts the same ones."""
    if workload == "recorded":
        made = recorded_records(events, per_record)
    else:
        made = records(events, per_record, devices, own_lines=own_lines)
    return [value for _, value in made]


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--per-record", type=int, default=50)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--decoder", choices=sorted(_DECODERS), default="fast")
    parser.add_argument("--stages", action="store_true",
                        help="CPU time per detector stage, and per scored row with the rows' shape "
                             "(a second replay)")
    parser.add_argument("--overlap", type=int, default=0, metavar="PAIRS",
                        help="also replay in the worker's order: synchronously, with the predict overlapped "
                             "with decoding ahead, and with taking ahead as the worker does "
                             "(Detector.start_flush), PAIRS times each, by wall time")
    parser.add_argument("--workload", choices=("generated", "recorded"), default="generated",
                        help="generated: the pipeline benchmark's fleet (bench._pipeline_data.records); "
                             "recorded: ../shared/datasets/otrf replayed, one device per recording "
                             "(--devices and --own-lines do not apply)")
    parser.add_argument("--own-lines", type=float, default=0.0, metavar="SHARE",
                        help="share of process starts whose command line has arguments of its own, seen "
                             "nowhere else (default 0: the generator's eight lines, every mask cached; a "
                             "fleet's are not: OTRF's starts carry 0.39 as many distinct lines); other "
                             "digests then")
    args = parser.parse_args()
    if not 0.0 <= args.own_lines <= 1.0:
        parser.error("--own-lines is a share: 0 to 1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.workload == "recorded" and not RECORDINGS.is_dir():
        parser.error(f"--workload recorded needs the recordings: no {RECORDINGS}")
    values = workload_values(args.workload, args.events, args.per_record, args.devices, args.own_lines)
    tune_gc()  # as `ringfence worker` runs: the start-up heap frozen, its collection thresholds
    r = replay(values, args.decoder)
    n = r["events"]
    print(
        f"{n:,} events in {len(values):,} records, decoder {args.decoder}: "
        f"decode {n / r['decode_s']:,.0f}/s, "
        f"detector {n / r['core_s']:,.0f}/s, both {n / (r['decode_s'] + r['core_s']):,.0f}/s (CPU time); "
        f"orjson.loads alone {n / r['orjson_s']:,.0f}/s, "
        f"ratio {r['orjson_s'] / (r['decode_s'] + r['core_s']):.3f}\n"
        f"{r['flushes']} flushes, {r['rows']} rows, {r['decisions']} decisions; SHA-256 features "
        f"{r['features_sha256'][:16]}..., decisions {r['decisions_sha256'][:16]}..."
    )
    if args.overlap:
        compare_overlap(values, args.overlap)
    if args.stages:
        seconds: dict[str, float] = {}
        shape: dict[str, int] = {}
        with timed_stages(seconds), row_shapes(shape):
            n = replay(values, args.decoder)["events"]
        print("per event, CPU: " + ", ".join(f"{label} {s / n * 1e6:.2f} us" for label, s in seconds.items()))
        rows = max(shape["rows"], 1)
        per_row = ", ".join(f"{label} {seconds.get(label, 0.0) / rows * 1e6:.2f} us" for label in PER_ROW)
        print(
            f"per scored row, CPU: {per_row}; rows per event {shape['rows'] / n:.3f}, leaves (no "
            f"window-active descendant) {shape['leaves'] / rows:.0%}, window-active descendants per row "
            f"{shape['descendants'] / rows:.2f}"
        )


if __name__ == "__main__":
    main()
