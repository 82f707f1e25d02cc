"""A worker process, assembled: key, model, live policy, followers, state topic, clients, signals.

Why not a faust App as the process shell: the worker needs the *whole* devices and policy topics on
every worker whatever events partitions it owns, i.e. faust's GlobalTable, and with two workers
faust-streaming 0.15.3's GlobalTable held only the keys written through its own worker (18 and 12
of 30: `scripts/faust_globaltable_check.py`; faust-streaming/faust#283 is the open report). A
partitioned faust Table cannot serve a lookup keyed differently from the events. faust would also add a second
consumer group with its own leader topic and a consumer thread. What remains of a shell is small
and plain here: `TopicFollower`s for the two compacted topics, SIGTERM/SIGINT handlers, a policy
file watcher and a periodic stats line. The numbers behind this choice are in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from pipeline.detect import Detector, DetectorConfig
from pipeline.enroll import EnrollmentError, KeysFolder
from pipeline.errors import PipelineError, PolicyError
from pipeline.kafka_io import (
    TopicFollower,
    make_events_consumer,
    make_producer,
    make_state_producer,
    prepare_state_topic,
    read_compacted,
)
from pipeline.live_policy import DeviceDirectory, LivePolicy, load_policy_document
from pipeline.model.provisional import ProvisionalRules
from pipeline.policy import Policy
from pipeline.scoring import Model, load_model
from pipeline.settings import WorkerSettings
from pipeline.telemetry import TelemetrySettings
from pipeline.worker import BatchWorker
from pipeline.worker_telemetry import Apply, WorkerObserver
from schemas.errors import KeyMaterialError
from schemas.signing import Keyring, SigningKey

__all__ = ["WorkerStartError", "build_detector", "load_signing_key", "run_worker", "tune_gc"]

log = logging.getLogger(__name__)
STATS_EVERY_S = 30.0
# Measured with the benchmark's workload (150k events, 200 devices): CPython's default thresholds
# ran 429 collections (5.5 % of the time) and full collections of the growing forests paused the
# loop up to 203 ms, a p99 latency of its own. Freezing the start-up heap (pydantic schemas, numpy,
# the model) and collecting the young generation every 20,000 allocations instead of 700 left
# 8 collections, none full, the longest 18 ms. Forest nodes refer to each other by key, not by
# reference, so they are freed by reference counting and cyclic garbage stays rare.
# Session D (latency): a pause grows with the objects a collection scans, and 20,000 young objects
# cost 10-21 ms of CPU (25-53 ms wall on the loaded VM, each one a probe's p99). Young collections
# every 1,000 allocations and the middle one every 5 paused at most ~2 ms for the same total GC
# CPU (~1.5 % of 150k events); full collections wait for 10,000 middle ones (50M allocations, as
# rare as before: 100 x 50 x 20,000 = 100M).
GC_THRESHOLDS = (1_000, 5, 10_000)


class WorkerStartError(PipelineError):
    """The worker cannot start: no signing key, a bad policy file, an unreachable cluster..."""


def load_signing_key(settings: WorkerSettings) -> SigningKey:
    """The fleet's active signing key; a missing one says how to create it."""
    folder = KeysFolder(settings.keys_dir)
    if not folder.signing_key_path.exists():
        raise WorkerStartError(
            f"no fleet signing key at {folder.signing_key_path}: run `ringfence keys init` "
            "(or point RINGFENCE_KEYS_DIR at the keys folder)"
        )
    try:
        return folder.signing_key()
    except EnrollmentError as exc:
        raise WorkerStartError(str(exc)) from None


def fleet_keyring(settings: WorkerSettings, key: SigningKey) -> Keyring:
    """The keys a mode switch on the policy topic must be signed with: the folder's keyring.json
    (what agents trust, rotated keys included) or, without one, the active key alone."""
    folder = KeysFolder(settings.keys_dir)
    if not folder.keyring_path.exists():
        return Keyring.of([key.trusted()])
    try:
        return folder.keyring_file().keyring()
    except (EnrollmentError, KeyMaterialError) as exc:
        raise WorkerStartError(str(exc)) from None


def live_policy(settings: WorkerSettings, keyring: Keyring | None = None) -> LivePolicy:
    """The policy sources, with the file loaded (WorkerStartError on a bad file).

    `keyring`: group and device mode switches must carry a valid fleet signature, as the agents
    require (an unsigned switch would put the worker and the group's agents in different modes).
    """
    live = LivePolicy(
        DeviceDirectory(),
        command_ttl_ms=settings.command_ttl_s * 1000,
        verdict_ttl_ms=None if settings.verdict_ttl_s is None else settings.verdict_ttl_s * 1000,
        keyring=keyring,
    )
    if settings.policy_path is not None:
        try:
            live.set_document(load_policy_document(settings.policy_path))
        except PolicyError as exc:
            raise WorkerStartError(str(exc)) from None
    return live


def tune_gc() -> tuple[int, int, int]:
    """Freeze what is alive now and collect less often (see GC_THRESHOLDS); returns the old thresholds."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return previous


def build_detector(settings: WorkerSettings, live: LivePolicy) -> Detector:
    """The pure detection path with the settings' window and micro-batch knobs."""
    model: Model
    if settings.provisional_model:
        model = ProvisionalRules()
    else:
        model = load_model(settings.model_dir) if settings.model_dir is not None else load_model()
    config = DetectorConfig(
        window_ms=settings.window_ms, max_rows=settings.micro_batch_rows, max_delay_ms=settings.micro_batch_ms
    )
    return Detector(model, Policy(live.config()), config)


async def run_worker(
    settings: WorkerSettings, key: SigningKey, *, install_signals: bool = True,
    telemetry: TelemetrySettings | None = None,
) -> BatchWorker:
    """Run until SIGTERM/SIGINT (clean stop, last commit point) or a failure (raised).

    `telemetry`: the exporters of traces and metrics (`pipeline.worker_telemetry`); None: none.
    """
    log.info("worker starting: %s", settings.describe())  # the one line with every setting (no secret)
    live = live_policy(settings, fleet_keyring(settings, key))
    detector = build_detector(settings, live)
    await prepare_state_topic(settings.kafka, settings.events_topic, settings.state_topic,
                              max_message_bytes=settings.max_state_bytes)
    observer = WorkerObserver.open(telemetry)
    followers = _followers(settings, live, detector, observer.heartbeats)
    producer = make_producer(settings.kafka, max_request_bytes=settings.max_state_bytes + (64 << 10))
    state_producer = make_state_producer(settings.kafka,
                                         max_request_bytes=settings.max_state_bytes + (64 << 10))
    consumer = make_events_consumer(settings.kafka, group_id=settings.group_id,
                                    session_timeout_ms=settings.session_timeout_ms,
                                    heartbeat_interval_ms=settings.heartbeat_interval_ms)

    async def restore(partitions: set[int]) -> dict[int, dict[bytes, bytes | None]]:
        return await read_compacted(settings.kafka, settings.state_topic, partitions,
                                    settings.restore_timeout_s)

    worker = BatchWorker(settings, detector, key, consumer=consumer, producer=producer, restore=restore,
                         state_producer=state_producer)
    observer.watch(worker.stats, detector)
    tasks: list[asyncio.Task[None]] = []
    try:
        for follower in followers:
            await follower.start(settings.restore_timeout_s)
        await producer.start()
        await state_producer.start()
        await consumer.start()
        if install_signals:
            _install_signals(worker)
        tune_gc()
        tasks = [asyncio.create_task(_watch_policy_file(settings, live, detector)),
                 asyncio.create_task(_log_stats(worker)),
                 asyncio.create_task(observer.run(consumer, settings.events_topic, settings.kafka,
                                                  settings.group_id))]
        log.info("worker running: waiting for events partitions of %s", settings.events_topic)
        await worker.run()
    finally:
        await _shutdown(tasks, consumer, (producer, state_producer), followers)
        observer.close()
    return worker


def _followers(settings: WorkerSettings, live: LivePolicy, detector: Detector,
               tap: Callable[[Apply], Apply]) -> list[TopicFollower]:
    def on_policy(key: bytes | None, value: bytes | None) -> None:
        if live.apply_update(key, value):
            detector.policy.config = live.config()
            log.info("policy updated from %s (key %r)", settings.policy_topic, key)

    return [TopicFollower(settings.kafka, settings.devices_topic, tap(live.directory.apply)),
            TopicFollower(settings.kafka, settings.policy_topic, on_policy)]


def _install_signals(worker: BatchWorker) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop_on, worker, signum)


def _stop_on(worker: BatchWorker, signum: int) -> None:
    name = signal.Signals(signum).name
    log.info("received %s: finishing the current batch, saving state and offsets", name)
    worker.request_stop()


async def _shutdown(tasks: list[asyncio.Task[None]], consumer: Any, producers: tuple[Any, ...],
                    followers: list[TopicFollower]) -> None:
    """Stop everything; a failure to stop one client is logged and must not hide why we stopped."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for name, stop in (("consumer", consumer.stop), *(("producer", p.stop) for p in producers),
                       *((f.topic, f.stop) for f in followers)):
        try:
            await stop()
        except (KafkaError, OSError) as exc:
            log.warning("stopping %s: %s", name, exc)


async def _watch_policy_file(settings: WorkerSettings, live: LivePolicy, detector: Detector) -> None:
    path = settings.policy_path
    if path is None:
        return
    seen = _mtime(path)
    while True:
        await asyncio.sleep(settings.policy_reload_s)
        current = _mtime(path)
        if current == seen:
            continue
        seen = current
        try:
            live.set_document(load_policy_document(path))
            detector.policy.config = live.config()
        except PolicyError as exc:
            log.error("policy file changed but is invalid, keeping the previous policy: %s", exc)
            continue
        log.info("policy reloaded from %s", path)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


async def _log_stats(worker: BatchWorker) -> None:
    while True:
        await asyncio.sleep(STATS_EVERY_S)
        log.info("worker stats: partitions %s, %s", sorted(worker.owned), worker.stats)
