"""`ringfence bench [NAMES...] [--quick] [--repeat K] [--json OUT]`: the benchmark suite of `bench/`.

The same runner as `python -m bench` and `make bench` (one implementation, so the numbers in
BENCHMARKS.md mean the same whichever way they were produced). The benchmarks live in the source
checkout, not in the installed packages: they need the test-like fixtures and the Kafka jars of
the repository, so this command finds `bench/` next to the `pipeline` package and says so when it
is not there (e.g. a wheel install).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType

from schemas.cli_support import CliError

DESCRIPTION = """\
Run the benchmarks in bench/ (all, or the NAMEs given: agent, contracts, fanout, kafka-baseline,
pipeline, xgboost, ...) and print, for each figure, the median over the runs with [min .. max],
the baseline measured in the same run and the median ratio figure/baseline.

Kafka: RINGFENCE_KAFKA_BOOTSTRAP names the broker; without it a throwaway local broker is started
on a free port for the benchmarks that need one, and always stopped. --quick runs the whole suite
in under 3 minutes (smaller workloads, 1-2 runs each); the numbers recorded in BENCHMARKS.md come
from full runs.
"""

CHECKOUT = Path(__file__).resolve().parents[2]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("bench", help="run the benchmarks (figure, same-run baseline, ratio; medians)",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    if _has_checkout():
        _runner().add_arguments(parser)
    else:
        _fallback_arguments(parser)
    parser.set_defaults(func=_bench)


def _has_checkout() -> bool:
    return (CHECKOUT / "bench" / "__main__.py").is_file()


def _runner() -> ModuleType:
    """`bench.__main__` from the checkout (stdlib-only at import time, so `--help` stays fast)."""
    if not _has_checkout():
        raise CliError(f"no benchmarks here: they live in the source checkout (bench/ next to "
                       f"{CHECKOUT / 'pipeline'}); run ringfence from a clone of the repository")
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    import bench.__main__ as runner

    return runner


def _fallback_arguments(parser: argparse.ArgumentParser) -> None:
    """Enough to parse a command line and then explain why it cannot run here."""
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None, metavar="K")
    parser.add_argument("--json", default=None, metavar="OUT")
    parser.add_argument("--only", default=None, metavar="TEXT")


def _bench(args: argparse.Namespace) -> int:
    runner = _runner()
    try:
        code: int = runner.run_suite(runner.options_from(args))
    except runner.UnknownBenchmark as exc:
        raise CliError(str(exc)) from None
    return code
