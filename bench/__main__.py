"""`python -m bench [NAMES...] [--quick] [--repeat K] [--json OUT]`: run the benchmarks, print medians.

Each selected `bench/bench_*.py` module (NAMES: `pipeline`, `bench_pipeline`, `kafka-baseline`...;
none = all) runs K times (default 3; with `--quick` 2, or 1 when one run takes longer than
QUICK_SECOND_RUN_S), and every figure is printed as its median with min/max, next to the median of
its same-run baseline and the median of the per-run ratios. A module's `run(quick)` returns a
list of `bench.Result`; one that returns something else is still run and shown by its own
`format_table`, without medians. A module that raises is reported as FAILED after the others have
run, and the exit status is 1.

Kafka: RINGFENCE_KAFKA_BOOTSTRAP names the broker to use; when it is unset and a selected module
needs one (`NEEDS_KAFKA`, default True), a throwaway local broker is started on a free port
(`pipeline.kafka_local.LocalKafka`), exported to the modules and always stopped and purged at the
end. The header names the machine, the date and the git commit, because the numbers mean nothing
without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import pkgutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import bench
from bench import Result, Summary, summarize
from bench._machine import Broker, machine, terminate_as_interrupt

FULL_REPEAT = 3
QUICK_REPEAT = 2
QUICK_SECOND_RUN_S = 15.0  # in --quick mode, a benchmark slower than this runs once
NAME_WIDTH = 64  # figure names longer than this get a line of their own


class UnknownBenchmark(ValueError):
    """A NAME on the command line matches no bench/bench_*.py module."""


@dataclasses.dataclass(frozen=True)
class Options:
    names: tuple[str, ...] = ()
    quick: bool = False
    repeat: int | None = None  # None: FULL_REPEAT, or QUICK_REPEAT / 1 with quick
    json_out: Path | None = None
    only: str | None = None  # legacy `--only TEXT`: modules whose name contains TEXT


@dataclasses.dataclass
class Outcome:
    """Everything one benchmark module produced over its runs."""

    name: str
    runs: list[list[Any]] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summaries(self) -> list[Summary] | None:
        """Medians over the runs, or None when the module does not return `Result`s."""
        if not all(isinstance(r, Result) for run in self.runs for r in run):
            return None
        return summarize(self.runs)


# ---------------------------------------------------------------- selection


def discover(only: str | None, package: ModuleType = bench) -> list[str]:
    """Names of the benchmark modules, sorted; `only` keeps those whose name contains it."""
    names = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_")]
    return sorted(n for n in names if only is None or only in n)


def select(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """Module names for the NAMES given (all when none), in the order given, without duplicates.

    A NAME matches a module exactly (`bench_pipeline`), without its prefix (`pipeline`), with `-`
    for `_` (`kafka-baseline`), or else as a unique prefix of the short name (`kafka`)."""
    if not wanted:
        return list(available)
    chosen = [_match(name, available) for name in wanted]
    return list(dict.fromkeys(chosen))


def _match(name: str, available: Sequence[str]) -> str:
    short = name.strip().replace("-", "_").removeprefix("bench_")
    if f"bench_{short}" in available:
        return f"bench_{short}"
    prefixed = [m for m in available if short and m.removeprefix("bench_").startswith(short)]
    if len(prefixed) == 1:
        return prefixed[0]
    known = ", ".join(m.removeprefix("bench_") for m in available) or "none found"
    what = f"ambiguous benchmark {name!r} ({', '.join(prefixed)})" if prefixed else None
    what = what or f"unknown benchmark {name!r}"
    raise UnknownBenchmark(f"{what}; available: {known}")


# ---------------------------------------------------------------- running


def repeats(options: Options, first_run_s: float) -> int:
    """How many runs a benchmark gets, given how long its first one took."""
    if options.repeat is not None:
        return options.repeat
    if not options.quick:
        return FULL_REPEAT
    return QUICK_REPEAT if first_run_s <= QUICK_SECOND_RUN_S else 1


def run_benchmark(name: str, options: Options, broker: Broker, package: ModuleType = bench) -> Outcome:
    """Import the module and run it until its repeat count; stop at its first failure."""
    outcome = Outcome(name)
    try:
        module = importlib.import_module(f"{package.__name__}.{name}")
        if getattr(module, "NEEDS_KAFKA", True):
            broker.ensure()
        while not outcome.runs or len(outcome.runs) < repeats(options, outcome.seconds[0]):
            print(f"== {_short(name)}: run {len(outcome.runs) + 1}", flush=True)
            started = time.monotonic()
            outcome.runs.append(list(module.run(quick=options.quick)))
            outcome.seconds.append(time.monotonic() - started)
    except Exception as exc:  # one broken benchmark must not hide the others
        traceback.print_exc()
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    _show(module, outcome)
    return outcome


def run_suite(options: Options, package: ModuleType = bench) -> int:
    """Run the selection, print the header, each summary and a verdict line; 0 if all succeeded."""
    available = discover(options.only, package)
    names = select(options.names, available)
    if not names:
        matching = f" matching {options.only!r}" if options.only else ""
        print(f"bench: no bench/bench_*.py modules found{matching}")
        return 0
    where = machine()
    print(header(where, options))
    broker = Broker()
    outcomes: list[Outcome] = []
    try:
        with terminate_as_interrupt():
            for name in names:
                outcomes.append(run_benchmark(name, options, broker, package))
    finally:
        broker.close()
    print(verdict(outcomes))
    if options.json_out is not None:
        options.json_out.write_text(json.dumps(as_json(where, broker, options, outcomes), indent=2))
    return 0 if all(o.ok for o in outcomes) else 1


# ---------------------------------------------------------------- output


def header(where: dict[str, Any], options: Options) -> str:
    runs = f"{options.repeat}" if options.repeat else ("1-2" if options.quick else str(FULL_REPEAT))
    load = " ".join(f"{x:.2f}" for x in where["load_average"])
    return "\n".join([
        f"ringfence benchmarks: {where['date']}, commit {where['commit']}",
        f"machine: {where['cores']} cores ({where['cpu_model']}), {where['memory_gib']} GiB memory, "
        f"load average {load}, {where['os']}, Python {where['python']}",
        f"mode: {'quick' if options.quick else 'full'}, {runs} run(s) per benchmark; "
        "medians with [min .. max]; ratio = figure / same-run baseline",
    ])


def _short(name: str) -> str:
    return name.removeprefix("bench_")


def _num(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def format_summaries(summaries: Sequence[Summary]) -> str:
    """One row per figure: median [min .. max], baseline median, ratio median [min .. max]."""
    width = min(max((len(s.name) for s in summaries), default=10), NAME_WIDTH)
    lines = [f"  {'figure':<{width}}  {'median':>18}  {'[min .. max]':<22} {'baseline':>12}"
             "  ratio [min .. max]"]
    for s in summaries:
        spread = f"[{_num(s.figure.low)} .. {_num(s.figure.high)}]" if s.runs > 1 else "(one run)"
        base = _num(s.baseline.median) if s.baseline else "-"
        ratio = f"{s.ratio.median:.3g}x" if s.ratio else "-"
        ratio += f" [{s.ratio.low:.3g} .. {s.ratio.high:.3g}]" if s.ratio and s.runs > 1 else ""
        value = f"{_num(s.figure.median)} {s.unit}"
        if len(s.name) > width:  # a long name gets a line of its own, the numbers stay in their columns
            lines.append(f"  {s.name}")
        name = s.name if len(s.name) <= width else ""
        lines.append(f"  {name:<{width}}  {value:>18}  {spread:<22} {base:>12}  {ratio}")
        lines += [f"  {'':<4}{note}" for note in _notes(s)]
    return "\n".join(lines)


def _notes(s: Summary) -> list[str]:
    """What the baseline is (with its min/max) and other spellings of the figure's name."""
    notes = [f"also reported as: {other}" for other in s.other_names]
    if s.baseline is None and not s.baseline_name:
        return notes
    spread = f" [{_num(s.baseline.low)} .. {_num(s.baseline.high)}]" if s.baseline and s.runs > 1 else ""
    return [f"baseline: {s.baseline_name or 'same run'}{spread}", *notes]


def format_results(results: list[Result]) -> str:
    """A single run's table (used by the modules' own `__main__`s)."""
    lines = [f"  {'figure':<58} {'value':>16} {'baseline':>16} {'ratio':>8}"]
    for r in results:
        value = f"{r.figure:,.1f} {r.unit}"
        base = f"{r.baseline:,.1f}" if r.baseline is not None else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        lines.append(f"  {r.name:<58} {value:>16} {base:>16} {ratio:>8}")
        if r.baseline_name:
            lines.append(f"  {'':<58} baseline: {r.baseline_name}")
    return "\n".join(lines)


def _show(module: ModuleType, outcome: Outcome) -> None:
    times = ", ".join(f"{s:.1f} s" for s in outcome.seconds)
    print(f"== {_short(outcome.name)}: {len(outcome.runs)} run(s) ({times})")
    summaries = outcome.summaries()
    if summaries is not None:
        print(format_summaries(summaries))
        return
    for run in outcome.runs:  # not Results: the module's own table, run by run
        own = getattr(module, "format_table", None)
        print(own(run) if own is not None else "\n".join(f"  {r}" for r in run))


def verdict(outcomes: Sequence[Outcome]) -> str:
    failed = [o for o in outcomes if not o.ok]
    lines = [f"bench: {len(outcomes) - len(failed)} of {len(outcomes)} benchmark(s) succeeded"
             f" in {sum(sum(o.seconds) for o in outcomes):.0f} s of runs"]
    lines += [f"  {_short(o.name)}: FAILED ({o.error})" for o in failed]
    return "\n".join(lines)


def as_json(where: dict[str, Any], broker: Broker, options: Options, outcomes: Sequence[Outcome]) -> Any:
    def result(r: Any) -> Any:
        return {**dataclasses.asdict(r), "ratio": r.ratio} if isinstance(r, Result) else r

    def summary(o: Outcome) -> Any:
        found = o.summaries()
        return None if found is None else [dataclasses.asdict(s) for s in found]

    return {
        "machine": where,
        "kafka": {"bootstrap": broker.bootstrap, "origin": broker.origin},
        "quick": options.quick,
        "benchmarks": {
            _short(o.name): {"ok": o.ok, "error": o.error, "seconds": o.seconds, "summary": summary(o),
                             "runs": [[result(r) for r in run] for run in o.runs]}
            for o in outcomes
        },
    }


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m bench` (also used by `ringfence bench`)."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="benchmarks to run (default: all), e.g. pipeline kafka-baseline")
    p.add_argument("--quick", action="store_true",
                   help="small workloads, 1-2 runs each (the whole suite in under 3 minutes)")
    p.add_argument("--repeat", type=_positive, default=None, metavar="K",
                   help=f"runs per benchmark (default {FULL_REPEAT}; with --quick 1-2)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="also write the machine, every run and the medians to OUT")
    p.add_argument("--only", default=None, metavar="TEXT",
                   help="(older form) only modules whose name contains TEXT")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def options_from(args: argparse.Namespace) -> Options:
    return Options(tuple(args.names), args.quick, args.repeat, args.json, args.only)


def main(argv: list[str] | None = None, package: ModuleType = bench) -> int:
    args = parser().parse_args(argv)
    try:
        return run_suite(options_from(args), package)
    except UnknownBenchmark as exc:
        print(f"python -m bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
