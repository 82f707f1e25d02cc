"""`ringfence`: the fleet-side command line (Kafka, topics, worker, model, hunting, SOC tools).

Each subcommand lives in its own module under `pipeline/commands/` and exposes
`register(subparsers)`; this file only discovers them, so adding a command never edits it.
Command modules import heavy libraries (faust, xgboost) inside their handlers, never at import
time, so `ringfence --help` stays fast and works with only the base install.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipeline import commands
from schemas.cli_support import CliError, build_parser

DESCRIPTION = """\
ringfence — open, Kafka-native client behavioral blocking (fleet side and tools).

Endpoints publish behaviour events to Kafka; `ringfence worker` windows them into process trees,
scores them with XGBoost and emits alerts, verdicts and commands. Run `ringfence COMMAND --help`
for the details of each command.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the chosen subcommand, map our errors to a one-line message."""
    parser = build_parser("ringfence", DESCRIPTION, commands)
    return _run(parser, argv)


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.func(args)
    except CliError as exc:
        print(f"ringfence: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
