"""`ringfence alerts tail|show`: the SOC's terminal view of `ringfence.alerts.v1`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from schemas.cli_support import CliError

T = TypeVar("T")

DESCRIPTION = """\
Alerts for the SOC, read straight from the alert topic without a consumer group (nothing you run
here moves an offset the pipeline or a SIEM connector depends on).

  tail   follow new alerts (or all retained ones with --from-beginning), filtered by device,
         device group (looked up on the devices topic), tactic and minimum score; prints a table,
         JSON Lines of Alert records (--json) or OCSF Detection Findings (--ocsf).
  show   find one alert by id and draw its process tree: each process with its image, command
         line, the evidence events and the actions taken, then the features behind the score.

Control characters in alert content (ANSI escapes, newlines, bidi overrides) are shown escaped.
The cluster is RINGFENCE_KAFKA_BOOTSTRAP (or --bootstrap), else the local broker 127.0.0.1:9092.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("alerts", help="follow the alert topic, or draw one alert's process tree",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    tail = actions.add_parser("tail", help="follow alerts, filtered; table, --json or --ocsf",
                              description="Follow the alert topic and print the alerts that match.")
    _common(tail)
    tail.add_argument("--device", help="only this device (device id or hostname)")
    tail.add_argument("--group", help="only devices of this group (from the devices topic)")
    tail.add_argument("--tactic", help="only this tactic, e.g. CredentialAccess")
    tail.add_argument("--min-score", type=float, default=0.0, help="only alerts scoring at least this")
    tail.add_argument("--from-beginning", action="store_true", help="start with the oldest retained alert")
    tail.add_argument("--limit", type=int, default=None, help="exit after printing this many alerts")
    output = tail.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_const", dest="fmt", const="json",
                        help="one Alert record per line (JSON Lines)")
    output.add_argument("--ocsf", action="store_const", dest="fmt", const="ocsf",
                        help="one OCSF Detection Finding per line")
    tail.set_defaults(func=_tail, fmt="table")
    show = actions.add_parser("show", help="draw one alert: process tree, evidence, actions, features",
                              description="Scan the alert topic (bounded) for ALERT_ID and draw it.")
    _common(show)
    show.add_argument("alert_id", metavar="ALERT_ID", help="the alert's id")
    show.add_argument("--max-records", type=int, default=1_000_000, help="scan at most this many records")
    show.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    show.add_argument("--width", type=int, default=None, help="line width (default: the terminal's)")
    show.set_defaults(func=_show)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: $RINGFENCE_KAFKA_BOOTSTRAP)")
    parser.add_argument("--prefix", default="", help="prefix of the topic names (isolated test topic sets)")


def _tail(args: argparse.Namespace) -> int:
    from pipeline.soc.alerts_cli import AlertFeed, OutputFormat, TailOptions, tail
    from pipeline.soc.filters import AlertFilter, parse_tactic
    from pipeline.soc.settings import kafka_settings
    from schemas import topics

    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be at least 1")
    try:
        tactic = parse_tactic(args.tactic) if args.tactic else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not 0.0 <= args.min_score <= 1.0:
        raise CliError("--min-score must be between 0 and 1")
    devices_topic = args.prefix + topics.DEVICES
    feed = AlertFeed(AlertFilter(args.device, args.group, tactic, args.min_score), OutputFormat(args.fmt),
                     devices_topic)
    options = TailOptions(args.prefix + topics.ALERTS, devices_topic,
                          "earliest" if args.from_beginning else "latest", args.limit)
    _run(tail(kafka_settings(args.bootstrap), feed, options, _emit))
    return 0


def _show(args: argparse.Namespace) -> int:
    from pipeline.soc.alerts_cli import show
    from pipeline.soc.settings import kafka_settings
    from schemas import topics

    width = args.width or shutil.get_terminal_size((110, 24)).columns
    text = _run(show(kafka_settings(args.bootstrap), args.prefix + topics.ALERTS, args.alert_id,
                     max_records=args.max_records, timeout_s=args.timeout, width=width))
    sys.stdout.write(text)
    return 0


def _emit(line: str) -> None:
    print(line, flush=True)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    from aiokafka.errors import KafkaError

    from pipeline.soc.errors import SocError

    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # keep aiokafka's chatter out of the output
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        return asyncio.run(coroutine)
    except SocError as exc:
        raise CliError(str(exc), exit_code=1) from None
    except (KafkaError, TimeoutError) as exc:
        raise CliError(f"Kafka: {exc or type(exc).__name__}", exit_code=1) from None
