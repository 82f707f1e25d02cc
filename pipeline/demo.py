"""`ringfence demo`: the feedback loop told as it happens, on this machine, inside one temporary folder.

Set-up: an isolated topic set (unique prefix, deleted at the end), fleet keys, one enrolled live
device (this machine: `ringfence-agent run` with the live Linux source, in the chosen mode) and N
simulated devices (`pipeline.demo_fleet`), and a `ringfence worker`. Then the attack of
`pipeline.demo_kit` runs and the story is printed from what the system itself reports: alerts
from the alerts topic, kills and quarantines from the actions topic, verdict arrivals from the
simulated devices' followers, and the folder's files. In block mode the same binary is then
started again and a simulated device's enforcer refuses it. Everything the demo started is
stopped in `finally` (also on Ctrl-C and on failure); the folder is removed unless kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agents.enforcement_plugin import load_keyring
from agents.settings import default_device_id
from pipeline.demo_fleet import SimFleet, enroll_fleet, tail
from pipeline.demo_kit import (
    AGENT_READY,
    ATTACK_TACTICS,
    SOURCE_READY,
    WORKER_READY,
    AttackKit,
    DemoError,
    FleetTopics,
    Supervisor,
    agent_env,
    apply_topics,
    delete_topics,
    prepare_attack,
    worker_env,
)
from pipeline.enroll import KeysFolder
from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.alerts import Alert
from schemas.common import Mode
from schemas.topics import ACTIONS, ALERTS, KafkaSettings

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    mode: Mode = Mode.BLOCK
    simulated: int = 20
    files: int = 40
    delay_s: float = 0.5  # between two encrypted files
    timeout_s: float = 90.0  # for the attack phase
    keep: bool = False  # keep the folder (logs, files) and the topics


@dataclass
class DemoResult:
    """What happened; `ok` when the story went as the mode says it should."""

    mode: Mode
    root: Path
    files: int = 0
    encrypted: int = 0
    locker_exit: int | None = None
    alerts: list[Alert] = field(default_factory=list)
    actions: list[ActionResult] = field(default_factory=list)
    fanout_ms: list[float] = field(default_factory=list)
    refused: ActionResult | None = None  # the simulated device's block_execution report
    relaunch_exit: int | None = None  # < 0: the re-launched binary was killed (by whichever agent)
    attack_started: float = 0.0
    right_call: bool = False  # the first alert on the attack binary's tree names a step the attack takes
    ok: bool = False


class Demo:
    """One run: set up, attack, show, clean up."""

    def __init__(self, kafka: KafkaSettings, options: DemoOptions, say: Say) -> None:
        self.kafka, self.options, self.say = kafka, options, say
        self.root = Path(tempfile.mkdtemp(prefix="ringfence-demo-"))
        self.topics = FleetTopics.unique("demo")
        self.supervisor = Supervisor(self.root / "logs")
        self.result = DemoResult(options.mode, self.root)
        self.live = f"live-{default_device_id()}"[:64]
        self.kit: AttackKit | None = None
        self.fleet: SimFleet | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.interrupted = False

    def t(self) -> str:
        start = self.result.attack_started
        return f"[{time.monotonic() - start:5.1f}s]" if start else "[  set-up]"

    # -- set-up -------------------------------------------------------------------------------------

    async def setup(self) -> None:
        opts, say, bootstrap = self.options, self.say, self.kafka.bootstrap_servers
        say(f"{self.t()} folder {self.root}  (everything the demo writes stays here)")
        await apply_topics(self.kafka, self.topics)
        say(f"{self.t()} topics created with prefix {self.topics.prefix} on {bootstrap}")
        keys = KeysFolder(self.root / "keys")
        key = keys.init(datetime.now(UTC))
        say(f"{self.t()} fleet signing key {key.key_id} (keys init)")
        sims = [f"sim-{i:02d}" for i in range(1, opts.simulated + 1)]
        devices = [(self.live, "demo-live", opts.mode), *((s, "demo-fleet", Mode.BLOCK) for s in sims)]
        bundles = await enroll_fleet(self.kafka, self.topics, keys, self.root / "devices", devices)
        say(f"{self.t()} enrolled {self.live} ({opts.mode}) and {len(sims)} simulated devices (block)")
        self.kit = prepare_attack(self.root / "attack", files=opts.files)
        self.supervisor.python("worker", "pipeline.cli", "worker",
                               env=worker_env(self.topics, keys.path, bootstrap))
        env = agent_env(self.topics, bundles[self.live], self.root / "agent", bootstrap, watch=self.kit.work)
        self.supervisor.python("agent", "agents.cli", "run", env=env)
        self.fleet = SimFleet(self.kafka, self.topics, load_keyring(keys.keyring_path), self.root / "sims",
                              sims, group="demo-fleet")
        await asyncio.gather(self.supervisor.wait_for("worker", WORKER_READY, 90),
                             self.supervisor.wait_for("agent", AGENT_READY, 60),
                             self.supervisor.wait_for("agent", SOURCE_READY, 60), self.fleet.start())
        mode = "netlink" if "connector (netlink)" in self.supervisor.log("agent") else "/proc polling"
        say(f"{self.t()} pipeline worker up; live agent up on this machine ({mode}, mode {opts.mode}); "
            f"{len(sims)} simulated devices following the verdict topic")
        self._tasks = [asyncio.create_task(tail(self.kafka, self.topics.name(ALERTS), Alert, self._alert)),
                       asyncio.create_task(tail(self.kafka, self.topics.name(ACTIONS), ActionResult,
                                                self._action))]

    # -- the attack ---------------------------------------------------------------------------------

    async def attack(self) -> None:
        kit, opts, say = self._kit(), self.options, self.say
        self.result.files = len(kit.victims)
        proc = self.supervisor.start("attack", kit.argv(opts.delay_s), env={}, cwd=kit.root)
        self.result.attack_started = time.monotonic()
        say(f"{self.t()} ATTACK: {kit.locker.name} (pid {proc.pid}, sha256 {kit.sha256[:16]}…) plants a cron "
            f"entry, then encrypts {len(kit.victims)} files, one every {opts.delay_s:g} s")
        deadline = time.monotonic() + opts.timeout_s
        shown = 0
        while proc.poll() is None and time.monotonic() < deadline:
            shown = self._progress(shown)
            await asyncio.sleep(0.1)
        self._progress(shown)
        self.result.locker_exit = proc.poll()
        self.result.encrypted = kit.encrypted()
        await self._after_exit(proc)

    def _progress(self, shown: int) -> int:
        done, total = self._kit().encrypted(), self.result.files
        if done > shown and (done <= 5 or done % 10 == 0 or done == total):
            self.say(f"{self.t()}   encrypted {done}/{total} files")
            return done
        return shown

    async def _after_exit(self, proc: subprocess.Popen[bytes]) -> None:
        code, say = proc.poll(), self.say
        if code is None:
            say(f"{self.t()} the attack is still running after {self.options.timeout_s:g} s: stopping it")
            self.supervisor.stop("attack", 1)
        elif code < 0:
            say(f"{self.t()} {self._kit().locker.name} is gone (signal {-code}) after encrypting "
                f"{self.result.encrypted} of {self.result.files} files")
        else:
            say(f"{self.t()} {self._kit().locker.name} finished: {self.result.encrypted} of "
                f"{self.result.files} files encrypted")
        await self._settle()

    async def _settle(self) -> None:
        """Give the alert (audit) or the fan-out (block) a bounded time to complete."""
        fleet, sha = self._fleet(), self._kit().sha256
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            killed = any(a.action is ActionKind.KILL_PROCESS_TREE for a in self.result.actions)
            if self.options.mode is Mode.BLOCK and killed and len(fleet.reached(sha)) == len(fleet.devices):
                break
            if self.options.mode is Mode.AUDIT and self.result.alerts and time.monotonic() > deadline - 15:
                break
            await asyncio.sleep(0.1)
        self.result.fanout_ms = fleet.reached(sha)
        if self.result.fanout_ms:
            ms = sorted(self.result.fanout_ms)
            self.say(f"{self.t()} verdict reached {len(ms)}/{len(fleet.devices)} simulated devices: "
                     f"p50 {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms after it was published")

    async def relaunch(self) -> None:
        """Start the same binary again and let a simulated device's agent deal with it."""
        kit, fleet, say = self._kit(), self._fleet(), self.say
        if self.options.mode is Mode.AUDIT:
            say(f"{self.t()} audit mode: no verdict was published, so no device refuses {kit.locker.name}")
            return
        device = fleet.devices[min(6, len(fleet.devices) - 1)]
        listed = device.blocklist.blocking(kit.sha256, datetime.now(UTC))
        why = f"listed, {listed.verdict.detection_name}" if listed is not None else "NOT listed"
        say(f"{self.t()} re-launch of {kit.sample.name} on {device.device_id} (on its blocklist: {why})")
        # Popen returns once exec succeeded: the device's enforcer sees the start at once (this
        # machine's own agent, which also has the verdict, races it from its netlink event).
        proc = self.supervisor.start("relaunch", [str(kit.sample), "-c", "sleep 30; :"], env={})
        self.result.refused = await fleet.refuse_start(device, proc.pid, kit.sample, kit.sha256)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(3)
        refused = self.result.refused
        if refused is not None and refused.outcome is Outcome.SUCCEEDED:
            say(f"{self.t()}   refused: {device.device_id} killed it at start ({refused.reason})")
        else:
            say(f"{self.t()}   this machine's agent stopped it first; {device.device_id} found it gone "
                f"({refused.reason if refused else 'no report'})")
        self.result.relaunch_exit = proc.poll()
        self.supervisor.stop("relaunch", 1)

    # -- what the system reports --------------------------------------------------------------------

    def _alert(self, alert: Alert) -> None:
        if alert.device_id != self.live:
            return
        self.result.alerts.append(alert)
        self.say(f"{self.t()} ALERT {alert.detection_name}: tactic {alert.tactic}, score {alert.score:.2f}, "
                 f"techniques {' '.join(alert.techniques) or '-'}; mode {alert.mode}")
        audited = sorted({a.action.value for a in alert.actions if a.audited})
        if audited:
            self.say(f"{self.t()}   audit: nothing done; block mode would have done {', '.join(audited)}")

    def _action(self, result: ActionResult) -> None:
        if result.device_id != self.live or result.action is ActionKind.APPLY_VERDICT:
            return
        self.result.actions.append(result)
        latency = f" {result.latency_ms:.0f} ms after it was ordered" if result.latency_ms is not None else ""
        self.say(f"{self.t()} this machine: {result.action} {result.outcome}{latency} — {result.reason[:90]}")

    # -- the end ------------------------------------------------------------------------------------

    async def fleet_view(self) -> None:
        from pipeline.commands.devices import read_fleet, render_table
        from schemas.topics import DEVICES, VERDICTS

        await self._fleet().heartbeats()
        await asyncio.sleep(1)
        view, head = await read_fleet(self.kafka, self.topics.name(DEVICES), self.topics.name(VERDICTS), 15)
        self.say("\n`ringfence devices list` for this fleet:")
        self.say(render_table(view.rows(), head, datetime.now(UTC)))

    def judge(self) -> None:
        r = self.result
        on_locker = [a for a in r.alerts if _root_image(a) == str(self._kit().locker)]
        r.right_call = bool(on_locker) and on_locker[0].tactic in ATTACK_TACTICS
        killed = r.locker_exit is not None and r.locker_exit < 0
        if self.options.mode is Mode.BLOCK:
            everyone = len(r.fanout_ms) == len(self._fleet().devices)
            refused = r.refused is not None and r.refused.action is ActionKind.BLOCK_EXECUTION
            refused = refused and (r.relaunch_exit is not None and r.relaunch_exit < 0)
            r.ok = r.right_call and killed and r.encrypted < r.files and everyone and refused
        else:
            r.ok = r.right_call and not killed and not r.fanout_ms

    async def cleanup(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.fleet is not None:
            await self.fleet.stop()
        self.supervisor.stop_all(10)
        if not self.options.keep:
            await delete_topics(self.kafka, self.topics)
            if self.result.ok or self.interrupted:  # a failed run keeps its logs for a look
                shutil.rmtree(self.root, ignore_errors=True)

    def _kit(self) -> AttackKit:
        if self.kit is None:
            raise DemoError("the attack kit is not prepared")
        return self.kit

    def _fleet(self) -> SimFleet:
        if self.fleet is None:
            raise DemoError("the simulated fleet is not running")
        return self.fleet


def _root_image(alert: Alert) -> str | None:
    """Image of the alert tree's root (the process the kill and, if blockable, the verdict act on)."""
    tree = alert.process_tree
    return next((n.image for n in tree.nodes if n.process_key == tree.root_process_key), None)


async def run_demo(kafka: KafkaSettings, options: DemoOptions, say: Say) -> DemoResult:
    """The whole demo; cleans up whatever happens."""
    demo = Demo(kafka, options, say)
    try:
        await demo.setup()
        await demo.attack()
        await demo.relaunch()
        await demo.fleet_view()
        demo.judge()
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task, then raises KeyboardInterrupt
        demo.interrupted = True
        say(f"\n{demo.t()} interrupted: stopping everything the demo started")
        raise
    finally:
        await asyncio.shield(demo.cleanup())
    return demo.result
