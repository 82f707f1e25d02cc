"""`ringfence-agent`: the endpoint command line (collect, ship, enforce).

Each subcommand lives in its own module under `agents/commands/` and exposes
`register(subparsers)`. Only the `agent` extra is needed: nothing here imports faust or xgboost.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agents import commands
from schemas.cli_support import run_cli

DESCRIPTION = """\
ringfence-agent — the ringfence endpoint: collects behaviour events (live Linux, Sysmon .evtx or
JSON Lines, replay), ships them to Kafka through a durable local spool, and enforces the fleet's
signed verdicts and commands (kill, quarantine, block). Run `ringfence-agent COMMAND --help`.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the chosen subcommand, map our errors to a one-line message."""
    return run_cli("ringfence-agent", DESCRIPTION, commands, argv)


if __name__ == "__main__":
    sys.exit(main())
