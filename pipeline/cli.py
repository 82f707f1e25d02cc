"""`ringfence`: the fleet-side command line (Kafka, topics, worker, model, hunting, SOC tools).

Each subcommand lives in its own module under `pipeline/commands/` and exposes
`register(subparsers)`; this file only discovers them, so adding a command never edits it.
Command modules import heavy libraries (faust, xgboost) inside their handlers, never at import
time, so `ringfence --help` stays fast and works with only the base install.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipeline import commands
from schemas.cli_support import run_cli

DESCRIPTION = """\
ringfence — open, Kafka-native client behavioral blocking (fleet side and tools).

Endpoints publish behaviour events to Kafka; `ringfence worker` windows them into process trees,
scores them with XGBoost and emits alerts, verdicts and commands. Run `ringfence COMMAND --help`
for the details of each command.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the chosen subcommand, map our errors to a one-line message."""
    return run_cli("ringfence", DESCRIPTION, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
