"""Instructions per event of the worker's path without Kafka, counted by callgrind: the host's noise moves
none of them.

Why: on this shared 2-vCPU VM the same code's CPU time per event moves 10-30 % from one minute to the
next (`bench.core_replay`'s stages, BENCHMARKS.md), so a change worth 3-6 % of the fold is invisible
in time unless run dozens of times. Valgrind's callgrind counts the instructions the CPU executes,
which is the same from run to run for the same input (to within a few in a million: objects' addresses,
and so a few hash probes, still differ between runs): a small change to the C fold or the decoder
shows as a difference far above that. Instructions are not time (a cache miss costs many cycles and one
instruction), so this complements `bench.core_replay`, it does not replace it. The child runs with
PYTHONHASHSEED=0: str hashes, and so most dict probes, are then the same in every run.

    .venv/bin/python -m bench.core_instructions [--events 20000] [--per-record 50]
        [--workload generated|recorded] [--against PATH]

It replays `bench.core_replay`'s records (the pipeline benchmark's fleet, or with `--workload recorded`
the OTRF recordings: `bench._pipeline_data`) in a child process under `valgrind --tool=callgrind`,
counting only two regions: decoding every record (`schemas.fastcodec.decode_events`), then
`Detector.process` of each record on `core_replay`'s clock (3 ms a record) and the last flush. It prints
instructions per event of each region and the decisions made (a sanity check: the same for the same
input). `--against PATH` replays the same records with another checkout's code (PATH on `sys.path`
first: its `pipeline` and `schemas`, C extensions built in place with `setup.py build_ext --inplace`)
and prints this tree / that tree for each region. Under callgrind a replay runs ~50x slower: 20,000
events take about a minute.

Needs valgrind (callgrind) and gcc, for a 10-line helper that starts and stops the count around the
regions (valgrind's client requests, `<valgrind/callgrind.h>`); without them it says what is missing.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_HELPER_C = """#include <valgrind/callgrind.h>
void region_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void region_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
"""
_REGIONS = ("decode", "detector")


def _helper(workdir: Path) -> Path:
    """The region helper, built with gcc in `workdir` (a clear error when gcc or the header is missing)."""
    if shutil.which("gcc") is None:
        raise SystemExit("core_instructions needs gcc (to build its 10-line callgrind helper)")
    if not Path("/usr/include/valgrind/callgrind.h").exists():
        raise SystemExit(
            "core_instructions needs valgrind's headers (<valgrind/callgrind.h>): install valgrind"
        )
    source, library = workdir / "region.c", workdir / "libregion.so"
    source.write_text(_HELPER_C)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def _write(values: list[bytes], path: Path) -> None:
    path.write_bytes(b"".join(len(v).to_bytes(4, "little") + v for v in values))


def _read(path: Path) -> list[bytes]:
    data, at, values = path.read_bytes(), 0, []
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "little")
        values.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return values


def _child(helper: str, records_file: str) -> None:
    """In the valgrind child (the tree counted first on sys.path): count the two regions, nothing else."""
    from pipeline import detect
    from pipeline.scoring import load_model
    from pipeline.worker_runtime import tune_gc
    from schemas.fastcodec import decode_events

    values = _read(Path(records_file))
    detector = detect.Detector(load_model())
    region = ctypes.CDLL(helper)
    decode_events(values[0])  # imports and caches warm, as in a running worker
    tune_gc()
    region.region_start()
    decoded = [decode_events(value) for value in values]
    region.region_stop(b"decode")
    decisions, now = 0, 1_700_000_000_000
    region.region_start()
    for batch in decoded:
        now += 3
        decisions += len(detector.process(batch, now))
    decisions += len(detector.flush(now + 1_000))
    region.region_stop(b"detector")
    print(f"events {detector.stats.events} decisions {decisions}", flush=True)


def _count(tree: Path, helper: Path, records_file: Path, workdir: Path, tag: str) -> dict[str, float]:
    """Run the child under callgrind with `tree` first on sys.path: instructions per event per region."""
    out = workdir / f"callgrind.{tag}"
    # one predict thread, as `ringfence worker` runs; str hashes (and so most dict probes) the same every run
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, str(Path(__file__).resolve()), "--child", str(helper), "--records", str(records_file),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=False)
    found = re.search(r"events (\d+) decisions (\d+)", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the replay under callgrind failed ({tree}):\n{done.stdout}\n{done.stderr[-2000:]}")
    events = int(found.group(1))
    counts = {"decisions": float(found.group(2))}
    for dump in sorted(workdir.glob(f"callgrind.{tag}.*")):  # one file per region, in dump order
        text = dump.read_text(errors="replace")
        name = re.search(r"^desc: Trigger: Client Request: (\w+)", text, re.M)
        total = re.search(r"^totals: (\d+)", text, re.M)  # (its "summary:" line is written before counting)
        if name and total and name.group(1) in _REGIONS:
            counts[name.group(1)] = int(total.group(1)) / events
    if set(_REGIONS) - set(counts):
        raise SystemExit(f"callgrind wrote no count for {sorted(set(_REGIONS) - set(counts))} ({tree})")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--per-record", type=int, default=50)
    parser.add_argument("--workload", choices=("generated", "recorded"), default="generated")
    parser.add_argument(
        "--against",
        type=Path,
        metavar="PATH",
        help="another checkout (extensions built in place) to count with the same records",
    )
    parser.add_argument("--child", metavar="HELPER", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.records)
        return
    if args.events < 100 or args.per_record < 1:
        parser.error("--events at least 100, --per-record at least 1")
    if args.against is not None and not (args.against / "pipeline").is_dir():
        parser.error(f"--against {args.against}: no pipeline/ there (a checkout of this project is expected)")
    # here, not at the top: the child runs this file against another checkout, whose bench/ may differ
    from bench._pipeline_data import RECORDINGS
    from bench.core_replay import workload_values

    if args.workload == "recorded" and not RECORDINGS.is_dir():
        parser.error(f"--workload recorded needs the recordings: no {RECORDINGS}")
    if shutil.which("valgrind") is None:
        raise SystemExit("core_instructions needs valgrind (callgrind): e.g. apt-get install valgrind")
    trees = [("this tree", ROOT)] + ([("against", args.against.resolve())] if args.against else [])
    with tempfile.TemporaryDirectory(prefix="rf-instructions-") as folder:
        workdir = Path(folder)
        helper, records_file = _helper(workdir), workdir / "records.bin"
        _write(workload_values(args.workload, args.events, args.per_record), records_file)
        counts = {
            name: _count(tree, helper, records_file, workdir, f"t{i}") for i, (name, tree) in enumerate(trees)
        }
    print(f"{args.workload} workload, {args.events:,} events, {args.per_record} a record; "
          "instructions per event (callgrind):")  # fmt: skip
    for name, tree in trees:
        c = counts[name]
        print(
            f"  {name:9} decode {c['decode']:9,.0f}  detector {c['detector']:9,.0f}  "
            f"decisions {c['decisions']:.0f}  ({tree})"
        )
    if args.against:
        this, that = counts["this tree"], counts["against"]
        print("  ratio     " + "  ".join(f"{r} {this[r] / that[r]:.3f}" for r in _REGIONS)
              + "  (this tree / against; below 1: fewer instructions here)")  # fmt: skip


if __name__ == "__main__":
    main()
