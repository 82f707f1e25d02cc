"""Shared plumbing for the two command lines: subcommand discovery and the CLI error type.

Lives in `schemas` because both `ringfence` (pipeline) and `ringfence-agent` (agents) use it and
`schemas` is the one package both may import.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType


class CliError(Exception):
    """An error to print as one line (`<prog>: error: ...`) with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser(prog: str, description: str, package: ModuleType) -> argparse.ArgumentParser:
    """Build the top-level parser with one subcommand per module found in `package`.

    Every module in the package that defines `register(subparsers)` contributes its
    subcommand(s); `register` must set `func` (returning an exit code) via `set_defaults`.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def run_cli(prog: str, description: str, package: ModuleType, argv: Sequence[str] | None) -> int:
    """Parse `argv`, configure logging once, run the chosen subcommand and return its exit code.

    A `CliError` becomes one line on stderr (`<prog>: error: ...`) and its exit code; Ctrl-C is 130.
    """
    args = build_parser(prog, description, package).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.func(args)
    except CliError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return result
