"""`ringfence-agent ingest`: Sysmon/Security logs (.evtx, JSON Lines, gzip) -> BehaviorEvent JSON Lines.

The command is a thin shell: `SysmonSource` produces events, a *sink* consumes them. A sink is
any `async (events) -> count` function, so shipping to Kafka is one more sink:

    EventSink = Callable[[AsyncIterator[BehaviorEvent]], Awaitable[int]]

`jsonl_sink(handle)` writes JSON Lines, `count_sink` only counts, and `--kafka` ships through the
agent's durable spool and publisher (`agents.kafka_sink`: EventBatch records keyed by device_id,
acks=all). A per-file summary goes to stderr so that `--stdout` output stays pure JSON Lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

from schemas.cli_support import CliError

if TYPE_CHECKING:  # the models are imported by the handlers, not when `--help` builds the parser
    from agents.sources import Source, SourceStats
    from agents.sysmon import FileStats
    from schemas.events import BehaviorEvent

EventSink = Callable[["AsyncIterator[BehaviorEvent]"], Awaitable[int]]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "ingest", help="convert Sysmon/Security logs (.evtx, JSON Lines, .gz) to BehaviorEvent JSON Lines",
        description="Read Windows event logs (.evtx files; JSON Lines as winlogbeat, nxlog or evtx_dump "
        "write them, plain or gzip; JSON arrays; directories are searched) and map Sysmon 1, 3, 5, 7, 8, 10, "
        "11, 12, 13, 14, 22, 23, 26 and Security 4688 to BehaviorEvents. Other events are counted and "
        "skipped. Prints a per-file summary (read, mapped, skipped by reason) to stderr.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or directories")
    add_output_arguments(parser)
    parser.add_argument("--device-id", help="device id for every event (default: the record's host name)")
    parser.add_argument("--follow", action="store_true",
                        help="keep reading JSON Lines files as they grow (tail -F); stop with Ctrl-C")
    parser.add_argument("--poll-interval-s", type=float, default=0.5,
                        help="with --follow: longest wait between checks for new lines (default 0.5)")
    parser.add_argument("--duration-s", type=float, default=None,
                        help="stop after this many seconds (useful with --follow)")
    parser.set_defaults(func=_handle)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """`--out FILE` / `--stdout` / `--kafka`; with none, events are only counted."""
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--out", type=Path, help="write BehaviorEvent JSON Lines here (.gz compresses)")
    output.add_argument("--stdout", action="store_true", help="write BehaviorEvent JSON Lines to stdout")
    output.add_argument("--kafka", action="store_true",
                        help="publish to the events topic (RINGFENCE_AGENT_EVENTS_TOPIC) through a durable "
                        "spool, as EventBatch records keyed by device_id with acks=all; Kafka settings from "
                        "RINGFENCE_KAFKA_*")
    parser.add_argument("--spool-dir", type=Path, default=None,
                        help="with --kafka: spool folder (default: RINGFENCE_AGENT_SPOOL_DIR/ingest); events "
                        "the broker did not acknowledge stay there and are sent first by the next run")
    parser.add_argument("--flush-timeout-s", type=float, default=60.0,
                        help="with --kafka: after the input ends, wait this long for the broker to "
                        "acknowledge everything (default 60); what is left stays spooled (exit code 2)")


def _handle(args: argparse.Namespace) -> int:
    from agents.sysmon import FollowError, InputFileError, SysmonSource, read_paths

    paths = read_paths(args.paths)
    missing = [str(path) for path in paths if not path.exists() and not args.follow]
    if missing or not paths:
        raise CliError(f"no such file: {', '.join(missing)}" if missing else "no input files found")
    source = SysmonSource(paths, device_id=args.device_id, follow=args.follow,
                          poll_interval_s=args.poll_interval_s)
    try:
        with choose_sink(args, flush_each=args.follow) as sink:
            asyncio.run(run_source(source, sink, args.duration_s))
    except (InputFileError, FollowError, SinkError) as exc:
        raise CliError(str(exc)) from None
    except BrokenPipeError:
        quiet_stdout()
    finally:
        print_summary(source.stats, source.file_stats)
    return 0


def quiet_stdout() -> None:
    """The reader of our stdout went away (`| head`): stop writing without a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def choose_sink(args: argparse.Namespace, *, flush_each: bool = False) -> Iterator[EventSink]:
    """The sink the arguments ask for; a Kafka sink's failures surface as `SinkError`."""
    if args.stdout:
        yield jsonl_sink(sys.stdout.buffer, flush_each=True)
    elif args.out is not None:
        with _open_out(args.out) as handle:
            yield jsonl_sink(handle, flush_each=flush_each)
    elif args.kafka:
        yield _kafka_sink(args)
    else:
        yield count_sink


class SinkError(Exception):
    """The sink could not take every event (Kafka: a backlog left in the spool, a spool in use)."""


def _kafka_sink(args: argparse.Namespace) -> EventSink:
    """The agent's spool + publisher, configured like `ringfence-agent run` (RINGFENCE_AGENT_*/KAFKA_*)."""
    from pydantic import ValidationError

    from agents.kafka_sink import BacklogLeft, KafkaSinkConfig, kafka_sink
    from agents.publisher import PublisherConfig, kafka_producer_factory
    from agents.settings import AgentSettings
    from agents.spool import SpoolError
    from schemas.topics import KafkaSettings

    try:
        settings, kafka = AgentSettings(), KafkaSettings()
    except ValidationError as exc:
        raise CliError(f"invalid setting: {exc.errors(include_url=False)[0]['msg']}") from None
    spool_dir = args.spool_dir if args.spool_dir is not None else Path(settings.spool_dir) / "ingest"
    config = KafkaSinkConfig(
        spool_path=spool_dir / "spool.db", publisher=PublisherConfig.from_settings(settings),
        spool_max_bytes=settings.spool_max_bytes, spool_sync=settings.spool_sync,
        flush_timeout_s=args.flush_timeout_s,
    )
    inner = kafka_sink(config, kafka_producer_factory(kafka))

    async def sink(events: AsyncIterator[BehaviorEvent]) -> int:
        try:
            return await inner(events)
        except (BacklogLeft, SpoolError) as exc:
            raise SinkError(str(exc)) from None

    return sink


def _open_out(path: Path) -> IO[bytes]:
    try:
        if path.suffix == ".gz":
            return cast("IO[bytes]", gzip.open(path, "wb"))
        return path.open("wb")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def jsonl_sink(handle: IO[bytes], *, flush_each: bool = False) -> EventSink:
    """A sink writing one compact JSON event per line."""
    from schemas.codec import encode_event

    async def sink(events: AsyncIterator[BehaviorEvent]) -> int:
        count = 0
        async for event in events:
            handle.write(encode_event(event) + b"\n")
            count += 1
            if flush_each:
                handle.flush()
        return count

    return sink


async def count_sink(events: AsyncIterator[BehaviorEvent]) -> int:
    """A sink that only counts (a dry run: the summary is the output)."""
    count = 0
    async for _ in events:
        count += 1
    return count


async def run_source(source: Source, sink: EventSink, duration_s: float | None = None) -> int:
    """Drive `source` into `sink`, for at most `duration_s` seconds; returns events consumed."""
    try:
        return await asyncio.wait_for(sink(source.events()), timeout=duration_s)
    except TimeoutError:
        return source.stats.emitted


def print_summary(stats: SourceStats, files: Sequence[FileStats] = ()) -> None:
    """Per-file lines and a total, on stderr (CLI output)."""
    for file_stats in files:
        print(file_stats.summary(), file=sys.stderr)
    skipped = ", ".join(f"{reason}={count}" for reason, count in stats.skipped.most_common(5))
    print(f"total: read {stats.read}, mapped {stats.emitted}, skipped {stats.skipped_total}"
          + (f" (top reasons: {skipped})" if skipped else ""), file=sys.stderr)
