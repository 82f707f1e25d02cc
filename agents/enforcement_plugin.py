"""The enforcement plugin of `ringfence-agent run`: blocklist, followers, enforcer and reporter together.

What runs beside the sources and the publisher (see `agents.commands.run.PLUGIN_BUILDERS`):
- the verdict follower (fleet blocklist, no group), the command follower (this device's commands)
  and the mode follower (signed audit/block switches of its group or of itself, policy topic),
- the enforcer (kills and quarantines per mode), fed by `observe()` for every collected event,
- the action reporter (ActionResults to the actions topic, kept in `actions.db` in the state dir
  until the broker acknowledges them).
The local blocklist and the last signed mode are opened *before* anything touches the network, so
a device that restarts while the broker is unreachable blocks from its saved list, in its saved
mode, at once.

Keys: until enrollment distributes them, the fleet's public key comes from `public_key_path`
(a PEM file, or a folder of `*.pem` files to trust several keys during a rotation).
Everything is injectable (consumer and producer factories, keyring, clock, reporter), so tests and
the fan-out benchmark can build many of these in one process.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agents.action_outbox import ACTIONS_FILE
from agents.action_reporter import KafkaActionReporter, Reporter
from agents.blocklist import BLOCKLIST_FILE, Blocklist, Clock, utc_now
from agents.command_follower import COMMANDS_FILE, CommandFollower, CommandHandler, CommandStore
from agents.enforcement_errors import KeyringError
from agents.enforcer import Enforcer
from agents.linux.hashing import HashCache
from agents.mode_follower import MODE_FILE, ModeFollower, ModeHandler, ModeStore
from agents.publisher import ProducerFactory, kafka_producer_factory
from agents.quarantine import Quarantine
from agents.verdict_follower import (
    AppliedVerdict,
    ConsumerFactory,
    VerdictFollower,
    VerdictHandler,
    kafka_consumer_factory,
)
from schemas.common import Mode
from schemas.errors import KeyMaterialError
from schemas.identity import load_keyring_file
from schemas.keyfiles import load_public_key
from schemas.signing import Keyring

if TYPE_CHECKING:
    from agents.commands.run import AgentContext
    from agents.settings import AgentSettings
    from schemas.events import BehaviorEvent
    from schemas.topics import KafkaSettings

__all__ = ["EnforcementPlugin", "build_plugin", "load_keyring"]

log = logging.getLogger(__name__)


def load_keyring(path: Path) -> Keyring:
    """The fleet keys an agent trusts: a keyring.json (enrollment; keys carry their rotation
    `not_after`), one PEM file, or every `*.pem` in a folder."""
    if path.suffix == ".json":
        try:
            return load_keyring_file(path).keyring()
        except KeyMaterialError as exc:
            raise KeyringError(str(exc)) from None
    files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
    if not files:
        raise KeyringError(f"{path}: no *.pem public key in this folder")
    try:
        return Keyring.of(load_public_key(file) for file in files)
    except KeyMaterialError as exc:
        raise KeyringError(str(exc)) from None


def build_plugin(settings: AgentSettings, kafka: KafkaSettings) -> EnforcementPlugin | None:
    """The `PLUGIN_BUILDERS` entry: None (collect only) when enforcement is off or has no key."""
    from schemas.cli_support import CliError

    if not settings.enforce:
        log.info("enforcement is off (RINGFENCE_AGENT_ENFORCE=false): collecting only")
        return None
    if settings.public_key_path is None:
        log.warning("enforcement disabled: no fleet public key (set RINGFENCE_AGENT_PUBLIC_KEY_PATH)")
        return None
    try:
        keyring = load_keyring(settings.public_key_path)
    except KeyringError as exc:
        raise CliError(f"cannot enforce: {exc}") from None
    return EnforcementPlugin(settings, kafka, keyring=keyring)


@dataclass(frozen=True, slots=True)
class _Factories:
    consumer: ConsumerFactory
    producer: ProducerFactory


class EnforcementPlugin:
    """An `AgentPlugin`: `observe` events, `run` the followers, enforcer and reporter."""

    name = "enforcer"

    def __init__(self, settings: AgentSettings, kafka: KafkaSettings, *, keyring: Keyring,
                 consumer_factory: ConsumerFactory | None = None,
                 producer_factory: ProducerFactory | None = None, reporter: Reporter | None = None,
                 clock: Clock = utc_now, hashes: HashCache | None = None) -> None:
        self.settings = settings
        factories = _Factories(consumer_factory or kafka_consumer_factory(kafka),
                               producer_factory or kafka_producer_factory(kafka))
        self._own_reporter: KafkaActionReporter | None = None
        state = Path(settings.state_dir)
        if reporter is None:  # results wait on disk for the broker's ack (survive crash and reboot)
            reporter = self._own_reporter = KafkaActionReporter(
                factories.producer, settings.actions_topic, path=state / ACTIONS_FILE,
                sync=settings.spool_sync)
        self.reporter = reporter
        self.blocklist = Blocklist(state / BLOCKLIST_FILE, settings.verdicts_topic, sync=settings.spool_sync)
        self.store = CommandStore(state / COMMANDS_FILE, sync=settings.spool_sync)
        self.mode_store = ModeStore(state / MODE_FILE, sync=settings.spool_sync)
        mode_handler = ModeHandler(device_id=settings.device_id, group=settings.group,
                                   default=Mode(settings.mode), keyring=keyring, store=self.mode_store,
                                   reporter=self.reporter, clock=clock,
                                   enrolled=Mode(settings.mode_override) if settings.mode_override else None)
        self.enforcer = Enforcer(  # in the mode saved from the last signed switch, before any network
            device_id=settings.device_id, mode=mode_handler.current().mode, blocklist=self.blocklist,
            reporter=self.reporter, quarantine=Quarantine(Path(settings.quarantine_dir)),
            hashes=hashes or HashCache(max_bytes=settings.hash_max_bytes), clock=clock,
        )
        self.verdicts = VerdictFollower(
            VerdictHandler(device_id=settings.device_id, group=settings.group, blocklist=self.blocklist,
                           keyring=keyring, reporter=self.reporter, clock=clock,
                           on_applied=[self.enforcer.on_verdict_applied, self._applied]),
            factories.consumer, settings.verdicts_topic, clock=clock,
        )
        self.commands = CommandFollower(
            CommandHandler(device_id=settings.device_id, keyring=keyring, store=self.store,
                           reporter=self.reporter, executor=self.enforcer.execute, clock=clock),
            factories.consumer, settings.commands_topic,
        )
        mode_handler.on_switch = self._mode_switched
        self.modes = ModeFollower(mode_handler, factories.consumer, settings.policy_topic)
        self._context: AgentContext | None = None
        self._clock = clock
        log.info("enforcement: mode=%s (from %s), %d artifacts on the saved blocklist (version %d), keys %s",
                 self.enforcer.mode, mode_handler.current().source, len(self.blocklist),
                 self.blocklist.version, sorted(keyring.keys))

    def set_keyring(self, keyring: Keyring) -> None:
        """Trust a new set of fleet keys from now on (key rotation)."""
        self.verdicts.handler.keyring = keyring
        self.commands.handler.keyring = keyring
        self.modes.handler.keyring = keyring

    def observe(self, event: BehaviorEvent) -> None:
        self.enforcer.observe(event)

    async def run(self, context: AgentContext) -> None:
        """Run until cancelled, keeping the heartbeat's blocklist and mode fields current."""
        self._context = context
        self._applied(None)
        await self.serve()

    async def serve(self) -> None:
        """Run followers, enforcer and reporter until cancelled; then flush reports and save state."""
        self.enforcer.sweep_saved_blocklist(self._clock())  # blocked while we were down: still blocked
        tasks = [asyncio.create_task(self.verdicts.run(), name="enforcer:verdicts"),
                 asyncio.create_task(self.commands.run(), name="enforcer:commands"),
                 asyncio.create_task(self.modes.run(), name="enforcer:modes"),
                 asyncio.create_task(self.enforcer.run(), name="enforcer:actions")]
        if self._own_reporter is not None:
            tasks.append(asyncio.create_task(self._own_reporter.run(), name="enforcer:reporter"))
        try:
            await asyncio.gather(*tasks)
        finally:
            await self._shutdown(tasks)

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        reporter_task = tasks[-1] if self._own_reporter is not None else None
        for task in tasks:
            if task is not reporter_task:
                task.cancel()
        if self._own_reporter is not None and reporter_task is not None:
            with suppress(asyncio.CancelledError):
                await asyncio.shield(self._own_reporter.flush(2.0))
            reporter_task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self.blocklist.close()
        self.store.close()
        self.mode_store.close()
        if self._own_reporter is not None:
            self._own_reporter.close()

    def _mode_switched(self, mode: Mode, since: datetime) -> None:
        self.enforcer.set_mode(mode, since)
        self._applied(None)

    def _applied(self, _applied: AppliedVerdict | None) -> None:
        if self._context is not None:
            self._context.mode = self.enforcer.mode.value
            self._context.blocklist_version = self.blocklist.version
            self._context.blocklist_size = self.blocklist.active_count(self._clock())
