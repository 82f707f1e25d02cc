"""`python -m bench [--quick] [--only TEXT] [--json PATH]`: run every `bench/bench_*.py` and print a table.

A module must expose `run(quick: bool) -> list[bench.Result]`. A module that returns something else
(e.g. dicts) is still run; its own `format_table(results)` prints it if it has one. A module that
raises is reported and makes the exit status 1, after the others have run.
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
from pathlib import Path
from typing import Any

import bench
from bench import Result


def discover(only: str | None) -> list[str]:
    """Names of the benchmark modules, sorted; `only` keeps those whose name contains it."""
    names = [m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")]
    return sorted(n for n in names if only is None or only in n)


def format_results(results: list[Result]) -> str:
    lines = [f"  {'figure':<58} {'value':>16} {'baseline':>16} {'ratio':>8}"]
    for r in results:
        value = f"{r.figure:,.1f} {r.unit}"
        base = f"{r.baseline:,.1f}" if r.baseline is not None else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        lines.append(f"  {r.name:<58} {value:>16} {base:>16} {ratio:>8}")
        if r.baseline_name:
            lines.append(f"  {'':<58} baseline: {r.baseline_name}")
    return "\n".join(lines)


def _show(module: Any, results: list[Any]) -> None:
    if all(isinstance(r, Result) for r in results):
        print(format_results(results))
    elif hasattr(module, "format_table"):
        print(module.format_table(results))
    else:
        for row in results:
            print(f"  {row}")


def _as_json(result: Any) -> Any:
    if isinstance(result, Result):
        return {**dataclasses.asdict(result), "ratio": result.ratio}
    return result


def run_one(name: str, quick: bool) -> tuple[list[Any], bool]:
    """Run one module; return its results and whether it succeeded."""
    print(f"== {name}")
    started = time.monotonic()
    try:
        module = importlib.import_module(f"bench.{name}")
        results = list(module.run(quick=quick))
    except Exception:  # one broken benchmark must not hide the others
        traceback.print_exc()
        print(f"  {name}: FAILED")
        return [], False
    _show(module, results)
    print(f"  ({time.monotonic() - started:.1f} s)")
    return results, True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (smoke test)")
    parser.add_argument("--only", default=None, help="run only modules whose name contains TEXT")
    parser.add_argument("--json", type=Path, default=None, help="also write all results to PATH")
    args = parser.parse_args(argv)
    names = discover(args.only)
    if not names:
        print("bench: no bench/bench_*.py modules found" + (f" matching {args.only!r}" if args.only else ""))
        return 0
    collected: dict[str, list[Any]] = {}
    ok = True
    for name in names:
        collected[name], succeeded = run_one(name, args.quick)
        ok = ok and succeeded
    if args.json is not None:
        payload = {n: [_as_json(r) for r in rs] for n, rs in collected.items()}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
