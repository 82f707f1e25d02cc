"""Running the console: load its credentials, feed its state from Kafka, serve HTTP until stopped.

The feed reads three topics with one group-less reader: the last `recent_alerts` alerts of each
partition and then every new one, the whole compacted devices topic, and the whole policy topic. A
broker outage does not stop the console: the feed logs, waits and reconnects, and pages keep
serving what is known. Topics that do not exist yet are retried every `MISSING_RETRY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from aiokafka.errors import KafkaError

from pipeline.soc.auth import Analysts, load_token_file
from pipeline.soc.console import ConsoleDeps, build_app
from pipeline.soc.console_state import AlertBoard, Fleet, apply
from pipeline.soc.errors import ConsoleConfigError
from pipeline.soc.kafka_io import Publisher, StartAt, TopicReader
from pipeline.soc.settings import ConsoleSettings, ConsoleTopics
from schemas.errors import KeyMaterialError
from schemas.keyfiles import load_private_key
from schemas.signing import SigningKey
from schemas.topics import KafkaSettings

log = logging.getLogger(__name__)

RETRY_S = 5.0
MISSING_RETRY_S = 30.0


class LazyPublisher:
    """Opens the producer on the first action, so the console starts while the broker is down."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._publisher: Publisher | None = None
        self._lock = asyncio.Lock()

    async def __call__(self, topic: str, key: str, value: bytes | None) -> tuple[int, int]:
        async with self._lock:
            if self._publisher is None:
                self._publisher = await Publisher.open(self._kafka)
        return await self._publisher.send(topic, key, value)

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()


def load_analysts(settings: ConsoleSettings) -> Analysts:
    """Tokens from RINGFENCE_CONSOLE_TOKEN and the token file (either, both, or none: read-only)."""
    analysts = Analysts(())
    if settings.token is not None:
        analysts = Analysts.from_lines([settings.token.get_secret_value()], "RINGFENCE_CONSOLE_TOKEN")
    if settings.token_file is not None:
        analysts = analysts.merged(load_token_file(settings.token_file))
    return analysts


def load_signing_key(settings: ConsoleSettings) -> SigningKey | None:
    if settings.signing_key_file is None:
        return None
    try:
        return load_private_key(settings.signing_key_file)
    except KeyMaterialError as exc:
        raise ConsoleConfigError(str(exc)) from None


async def feed(kafka: KafkaSettings, topics: ConsoleTopics, settings: ConsoleSettings, board: AlertBoard,
               fleet: Fleet) -> None:
    """Fill the console's state from Kafka until cancelled."""
    starts: dict[str, StartAt] = {
        topics.alerts: settings.recent_alerts, topics.devices: "earliest", topics.policy: "earliest",
    }
    loop = asyncio.get_running_loop()
    while True:
        try:
            reader = await TopicReader.open(kafka, starts, missing_ok=True)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("console feed cannot reach Kafka (%r); retrying in %.0f s", exc, RETRY_S)
            await asyncio.sleep(RETRY_S)
            continue
        if reader.missing:
            log.warning("topics %s do not exist yet (ringfence topics apply); retrying in %.0f s",
                        ", ".join(reader.missing), MISSING_RETRY_S)
        reopen_at = loop.time() + MISSING_RETRY_S if reader.missing else float("inf")
        try:
            while loop.time() < reopen_at:
                for record in await reader.batch(timeout_ms=500):
                    apply(record, topics, board, fleet)
        except (KafkaError, OSError) as exc:
            log.warning("console feed lost Kafka (%r); reconnecting in %.0f s", exc, RETRY_S)
            await asyncio.sleep(RETRY_S)
        finally:
            await reader.close()


async def serve(settings: ConsoleSettings, kafka: KafkaSettings, *, on_ready: Callable[[str], None],
                stop: asyncio.Event | None = None) -> None:
    """Run the console until `stop` is set (or forever); `on_ready` gets its URL once listening."""
    topics = ConsoleTopics.with_prefix(settings.topic_prefix)
    analysts, key = load_analysts(settings), load_signing_key(settings)
    if not analysts.digests:
        log.warning("no console token configured: the console is read-only (every action answers 401)")
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("console bound to %s: reachable from the network; reads need no token", settings.host)
    board, fleet, publisher = AlertBoard(settings.max_alerts), Fleet(), LazyPublisher(kafka)
    deps = ConsoleDeps(settings, topics, analysts, key, board, fleet, publisher, lambda: datetime.now(UTC))
    runner = web.AppRunner(build_app(deps), handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    feeding = asyncio.create_task(feed(kafka, topics, settings, board, fleet))
    stop = stop or asyncio.Event()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info("%s", settings.describe())
        _stop_on_signals(stop)
        on_ready(_url(runner))
        await stop.wait()
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        await runner.cleanup()
        await publisher.close()


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM (docker, systemd) and SIGINT stop the console cleanly, even when started in background."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
            log.debug("cannot handle signal %s here", signum)


def _url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/"
