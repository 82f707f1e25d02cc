"""`ringfence-agent replay`: play BehaviorEvent JSON Lines back at recorded or accelerated speed.

Same shell as `ingest` (a source driven into a sink); the source is `agents.replay.ReplaySource`.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from agents.commands.ingest import (
    SinkError,
    add_output_arguments,
    choose_sink,
    print_summary,
    quiet_stdout,
    run_source,
)
from schemas.cli_support import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "replay", help="replay BehaviorEvent JSON Lines at recorded or accelerated speed",
        description="Replay recorded BehaviorEvent JSON Lines (e.g. the output of `ingest`; plain or .gz) "
        "with the recording's timing: --speed 1 is real time, 10 is ten times faster, 0 is as fast as "
        "possible. Events are replayed unchanged unless --retime shifts them to the present.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="BehaviorEvent JSON Lines files")
    add_output_arguments(parser)
    parser.add_argument("--speed", type=float, default=1.0,
                        help="time factor: 1 = recorded speed (default), 10 = 10x faster, 0 = no waiting")
    parser.add_argument("--max-gap-s", type=float, default=None,
                        help="shorten any pause in the recording to at most this many seconds")
    parser.add_argument("--retime", action="store_true",
                        help="shift event times so the first event happens now (spacing kept)")
    parser.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from agents.replay import Pacer, ReplaySource, check_replay_inputs

    try:
        check_replay_inputs(args.paths)
        pacer = Pacer(args.speed, args.max_gap_s)
    except ValueError as exc:  # ReplayInputError included
        raise CliError(str(exc)) from None
    source = ReplaySource(args.paths, pacer, retime=args.retime)
    try:
        with choose_sink(args, flush_each=args.speed != 0) as sink:
            asyncio.run(run_source(source, sink, args.duration_s))
    except SinkError as exc:
        raise CliError(str(exc)) from None
    except BrokenPipeError:
        quiet_stdout()
    finally:
        print_summary(source.stats)
    return 0
