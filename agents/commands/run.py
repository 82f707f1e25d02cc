"""`ringfence-agent run`: start the configured sources and the publisher (and plugins such as the enforcer).

Lifecycle: settings are read once here and passed down. SIGTERM or SIGINT stops the sources first,
then the publisher spools what is queued and sends the backlog for up to `--flush-timeout-s`;
anything still unsent stays in the spool for the next start. When every source has ended (a file
read to its end) and no plugin is running, the agent stops the same way.

A source that can push (`agents.sources.PushSource`, the live Linux source) gets a sink that does
what the pump does per event (plugins observe, then the publisher queues) straight from its reader
callbacks while the queue has room: no task switch per wake-up, which on small hosts costs more
than the events themselves (BENCHMARKS.md, "Agent"). The pump still runs for what the sink refuses.

Extension points (plain data, no magic discovery):
- `SOURCE_BUILDERS`: source name (as in `RINGFENCE_AGENT_SOURCES`) -> builder taking the settings:
  `linux` (live collection), `sysmon` (`RINGFENCE_AGENT_SYSMON_PATHS`, optionally followed), `replay`
  (`RINGFENCE_AGENT_REPLAY_PATHS` at `RINGFENCE_AGENT_REPLAY_SPEED`). Every source is built before
  anything starts, so a bad path is a one-line error, not a source that dies later.
- `PLUGIN_BUILDERS`: builders of `AgentPlugin`s that run beside the publisher for the agent's life.
  The enforcer plugs in here: its `observe(event)` sees every event before it is queued (a
  blocklisted image can be killed as soon as its process_start is seen) and its `run(context)`
  follows the verdict and command topics; it sets `context.blocklist_version/size` for heartbeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import platform
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from agents.publisher import ProducerFactory, Publisher, PublisherStats
    from agents.settings import AgentSettings
    from agents.sources import Source
    from schemas.events import BehaviorEvent
    from schemas.topics import KafkaSettings

__all__ = ["PLUGIN_BUILDERS", "SOURCE_BUILDERS", "AgentContext", "AgentPlugin", "register", "run_agent"]

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.db"


@dataclass
class AgentContext:
    """What a plugin gets: the settings, the Kafka settings, the publisher, and heartbeat fields."""

    settings: AgentSettings
    kafka: KafkaSettings
    publisher: Publisher
    blocklist_version: int = 0  # set by the enforcer: highest verdict offset applied + 1
    blocklist_size: int = 0  # set by the enforcer: artifacts currently blocked
    mode: str | None = None  # set by the enforcer: the mode it enforces now (None: settings.mode)


class AgentPlugin(Protocol):
    """Something that runs beside sources and publisher (the enforcer)."""

    name: str

    def observe(self, event: BehaviorEvent) -> None:
        """See every event before it is queued; must be quick and must not raise."""
        ...

    async def run(self, context: AgentContext) -> None:
        """Run until cancelled."""
        ...


def _linux_source(settings: AgentSettings) -> Source:
    from agents.linux.source import LinuxLiveConfig, LinuxLiveSource

    return LinuxLiveSource(LinuxLiveConfig(
        device_id=settings.device_id, watch_paths=settings.watch_paths, process_mode=settings.process_mode,
        file_mode=settings.file_mode, proc_poll_interval_s=settings.proc_poll_interval_s,
        net_enabled=settings.net_enabled, net_interval_s=settings.net_interval_s,
        hash_max_bytes=settings.hash_max_bytes,
    ))


def _sysmon_source(settings: AgentSettings) -> Source:
    from agents.sources import SourceConfigError
    from agents.sysmon import InputFileError, SysmonSource, read_paths
    from agents.sysmon.follow import check_followable

    paths = read_paths([Path(path) for path in settings.sysmon_paths])
    if not paths:
        raise SourceConfigError("source sysmon: no input files (set RINGFENCE_AGENT_SYSMON_PATHS)")
    missing = [str(path) for path in paths if not path.exists()]
    if missing and not settings.sysmon_follow:  # a followed file may appear later (tail -F)
        raise SourceConfigError(f"source sysmon: no such file: {', '.join(missing)}")
    try:
        for path in paths if settings.sysmon_follow else ():
            check_followable(path)
    except InputFileError as exc:
        raise SourceConfigError(f"source sysmon: {exc}") from None
    device_id = settings.device_id if settings.sysmon_device == "agent" else None
    return SysmonSource(paths, device_id=device_id, follow=settings.sysmon_follow,
                        poll_interval_s=settings.sysmon_poll_interval_s)


def _replay_source(settings: AgentSettings) -> Source:
    from agents.replay import Pacer, ReplayInputError, ReplaySource, check_replay_inputs
    from agents.sources import SourceConfigError

    paths = [Path(path) for path in settings.replay_paths]
    try:
        check_replay_inputs(paths)
    except ReplayInputError as exc:
        raise SourceConfigError(f"source replay: {exc} (RINGFENCE_AGENT_REPLAY_PATHS)") from None
    return ReplaySource(paths, Pacer(settings.replay_speed), retime=settings.replay_retime)


def _enforcer(settings: AgentSettings, kafka: KafkaSettings) -> AgentPlugin | None:
    from agents.enforcement_plugin import build_plugin

    return build_plugin(settings, kafka)


SOURCE_BUILDERS: dict[str, Callable[[AgentSettings], Source]] = {
    "linux": _linux_source, "sysmon": _sysmon_source, "replay": _replay_source,
}
PLUGIN_BUILDERS: list[Callable[[AgentSettings, KafkaSettings], AgentPlugin | None]] = [_enforcer]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run", help="collect behaviour events and ship them to Kafka through the durable spool",
        description="Run the agent: the sources named in RINGFENCE_AGENT_SOURCES (default: linux), the "
        "spool and publisher (Kafka from RINGFENCE_KAFKA_*), and any enforcement plugin. All settings "
        "come from RINGFENCE_AGENT_* variables (see agents/settings.py). With RINGFENCE_AGENT_FILE_MODE=auto "
        "the linux source attributes file events to the writing process with fanotify when it can (root, "
        "Linux >= 5.17), else uses inotify; the default, inotify, leaves them unattributed; the log says "
        "which is active. Stops on SIGTERM/SIGINT, flushing the spool.",
    )
    parser.add_argument("--duration-s", type=float, default=None,
                        help="stop by itself after this many seconds (benchmarks, smoke tests)")
    parser.add_argument("--flush-timeout-s", type=float, default=10.0,
                        help="on shutdown, keep sending the spooled backlog this long (default 10)")
    parser.add_argument("--identity", type=Path, default=None, metavar="DIR",
                        help="enrollment bundle from `ringfence devices enroll` (device id, group, mode, "
                        "fleet keyring); same as RINGFENCE_AGENT_IDENTITY_DIR")
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from agents.settings import AgentSettings
    from schemas.topics import KafkaSettings

    try:
        identity = {"identity_dir": args.identity} if args.identity is not None else {}
        settings, kafka = AgentSettings(**identity), KafkaSettings()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CliError(f"invalid setting {where} ({exc.title}): {first['msg']}") from None
    unknown = [name for name in settings.sources if name not in SOURCE_BUILDERS]
    if not settings.sources:
        raise CliError("no source configured (RINGFENCE_AGENT_SOURCES is empty)")
    if unknown:
        raise CliError(f"unknown source(s) {unknown}; known: {sorted(SOURCE_BUILDERS)}")
    log.info("%s", settings.describe())
    log.info("%s", kafka.describe())
    sources = _build_sources(settings)
    with _profiled(settings.profile_path):
        asyncio.run(run_agent(settings, kafka, sources=sources, duration_s=args.duration_s,
                              flush_timeout_s=args.flush_timeout_s))
    return 0


def _build_sources(settings: AgentSettings) -> list[Source]:
    from agents.sources import SourceConfigError

    try:
        return [SOURCE_BUILDERS[name](settings) for name in settings.sources]
    except SourceConfigError as exc:
        raise CliError(str(exc)) from None


@contextlib.contextmanager
def _profiled(path: Path | None) -> Iterator[None]:
    """With `RINGFENCE_AGENT_PROFILE_PATH`: cProfile the run in CPU time (not wall time: the agent
    mostly waits) and write the stats there for `python -m pstats`; calls run slower meanwhile."""
    if path is None:
        yield
        return
    import cProfile
    import time

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)
        log.info("CPU profile of the run written to %s", path)


async def run_agent(settings: AgentSettings, kafka: KafkaSettings, *, duration_s: float | None = None,
                    flush_timeout_s: float = 10.0, sources: Sequence[Source] | None = None,
                    producer_factory: ProducerFactory | None = None) -> None:
    """The whole agent until a signal, `duration_s`, or the end of every source.

    `sources` default to those `settings.sources` names (`SOURCE_BUILDERS`); `producer_factory` to
    aiokafka producers for `kafka` (tests pass a fake).
    """
    from agents.publisher import Publisher, PublisherConfig, kafka_producer_factory
    from agents.spool import Spool

    if sources is None:
        sources = [SOURCE_BUILDERS[name](settings) for name in settings.sources]

    spool = Spool(Path(settings.spool_dir) / SPOOL_FILE, max_bytes=settings.spool_max_bytes,
                  sync=settings.spool_sync)
    factory = producer_factory if producer_factory is not None else kafka_producer_factory(kafka)
    publisher = Publisher(spool, factory, PublisherConfig.from_settings(settings))
    context = AgentContext(settings, kafka, publisher)
    publisher.set_heartbeat(lambda stats: _heartbeat(context, stats))
    plugins = [plugin for build in PLUGIN_BUILDERS if (plugin := build(settings, kafka)) is not None]
    # Everything imported so far (pydantic schemas, aiokafka, ...) lives as long as the process: keep
    # it out of the cyclic GC's scans, which otherwise cost ~50 ms per full collection (bench_agent).
    gc.collect()
    gc.freeze()
    publisher.start()
    try:
        await _run_until_stopped(context, sources, plugins, duration_s)
    finally:
        await publisher.close(flush_timeout_s)
        spool.close()
        log.info("agent %s stopped: %s", settings.device_id, publisher.stats)


async def _run_until_stopped(
    context: AgentContext, sources: Sequence[Source], plugins: list[AgentPlugin], duration_s: float | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    publisher = context.publisher
    source_tasks = [asyncio.create_task(_pump(source, plugins, publisher), name=f"source:{source.name}")
                    for source in sources]
    plugin_tasks = [asyncio.create_task(p.run(context), name=f"plugin:{p.name}") for p in plugins]
    waiters: list[asyncio.Task[object]] = [asyncio.create_task(stop.wait())]
    if not plugin_tasks:
        waiters.append(asyncio.create_task(_all_done(source_tasks)))
    try:
        await asyncio.wait(waiters, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await _cancel_all([*waiters, *source_tasks, *plugin_tasks])
        for source in sources:
            stats = source.stats
            log.info("source %s: read=%d emitted=%d skipped=%s", source.name, stats.read, stats.emitted,
                     dict(stats.skipped))


async def _pump(source: Source, plugins: list[AgentPlugin], publisher: Publisher) -> None:
    from agents.sources import PushSource

    if isinstance(source, PushSource):  # its callbacks queue events themselves while there is room
        source.attach_sink(_sink(plugins, publisher))
    try:
        async for event in source.events():
            for plugin in plugins:
                plugin.observe(event)
            await publisher.submit(event)
    except Exception:
        log.exception("source %s failed; the agent goes on without it", source.name)
        return
    log.info("source %s ended", source.name)


def _sink(plugins: list[AgentPlugin], publisher: Publisher) -> Callable[[BehaviorEvent], bool]:
    """What `_pump` does per event, without waiting: False (not taken) when the queue is full."""

    def take(event: BehaviorEvent) -> bool:
        if not publisher.has_room:
            return False
        for plugin in plugins:
            plugin.observe(event)
        publisher.submit_nowait(event)
        return True

    return take


async def _all_done(tasks: Sequence[asyncio.Task[None]]) -> object:
    return await asyncio.gather(*tasks, return_exceptions=True)


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]], timeout_s: float = 10.0) -> None:
    """Cancel and wait (bounded: a task that ignores cancellation must not hang the shutdown)."""
    for task in tasks:
        task.cancel()
    _done, stuck = await asyncio.wait(tasks, timeout=timeout_s)
    for task in stuck:
        log.error("task %s did not stop within %.0fs of shutdown", task.get_name(), timeout_s)


def _heartbeat(context: AgentContext, stats: PublisherStats) -> tuple[str, bytes]:
    from schemas.codec import encode
    from schemas.devices import Heartbeat

    settings = context.settings
    beat = Heartbeat(
        device_id=settings.device_id, hostname=socket.gethostname(), platform="linux",
        os_version=f"{platform.system()} {platform.release()}", group=settings.group,
        mode=context.mode or settings.mode,
        enrolled_at=settings.enrolled_at, mode_override=settings.mode_override,
        agent_version=_agent_version(), blocklist_version=context.blocklist_version,
        blocklist_size=context.blocklist_size, spooled_events=context.publisher.spool.pending_events,
        ts=datetime.now(UTC),
    )
    return settings.device_id, encode(beat)


def _agent_version() -> str:
    try:
        return metadata.version("ringfence")
    except metadata.PackageNotFoundError:
        return "0+unknown"
