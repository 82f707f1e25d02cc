"""Reporting and wiring without a broker: the action reporter keeps results through an outage and in
order, drops the oldest when its bound is hit; keys load from a file or a rotation folder; the
`run` plugin is off without a key and refuses a bad one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents import action_reporter
from agents.action_reporter import KafkaActionReporter, action_result
from agents.commands.run import PLUGIN_BUILDERS
from agents.enforcement_errors import KeyringError, StateError
from agents.enforcement_plugin import EnforcementPlugin, build_plugin, load_keyring
from agents.publisher import Producer
from agents.settings import AgentSettings
from schemas.actions import ActionKind, ActionResult, Outcome
from schemas.cli_support import CliError
from schemas.codec import decode
from schemas.keyfiles import save_public_key
from schemas.signing import SigningKey
from schemas.topics import KafkaSettings

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass
class FakeBroker:
    down: bool = False
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    def factory(self) -> Producer:
        return FakeProducer(self)


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def start(self) -> None:
        if self.broker.down:
            raise ConnectionError("broker unreachable")

    async def stop(self) -> None:
        return None

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        if self.broker.down:
            raise ConnectionError("broker unreachable")
        assert value is not None and key is not None
        self.broker.sent.append((topic, key, value))


def result(n: int, device: str = "dev-1") -> ActionResult:
    return action_result(device, ActionKind.KILL_PROCESS_TREE, Outcome.SUCCEEDED, now=NOW,
                         command_id=f"cmd-{n}")


def test_latency_is_measured_from_since() -> None:
    made = action_result("d", ActionKind.APPLY_VERDICT, Outcome.SUCCEEDED, now=NOW,
                         since=NOW - timedelta(milliseconds=250))
    assert made.latency_ms == pytest.approx(250.0)
    clock_skew = action_result("d", ActionKind.APPLY_VERDICT, Outcome.SUCCEEDED, now=NOW,
                               since=NOW + timedelta(seconds=1))
    assert clock_skew.latency_ms == 0.0  # issued "in the future" by a skewed clock: never negative
    assert action_result("d", ActionKind.APPLY_VERDICT, Outcome.REFUSED, now=NOW).latency_ms is None


async def test_results_survive_an_outage_and_arrive_in_order_keyed_by_device() -> None:
    broker = FakeBroker(down=True)
    reporter = KafkaActionReporter(broker.factory, "t.actions", backoff_initial_s=0.01, backoff_max_s=0.02)
    for n in range(3):
        reporter.report(result(n, device=f"dev-{n % 2}"))
    task = asyncio.create_task(reporter.run())
    try:
        await asyncio.sleep(0.05)
        assert broker.sent == [] and reporter.pending == 3
        broker.down = False
        assert await reporter.flush(2.0)
    finally:
        task.cancel()
    sent_ids = [decode(ActionResult, value).command_id for _, _, value in broker.sent]
    assert sent_ids == ["cmd-0", "cmd-1", "cmd-2"]
    assert [key for _, key, _ in broker.sent] == [b"dev-0", b"dev-1", b"dev-0"]
    assert {topic for topic, _, _ in broker.sent} == {"t.actions"}


async def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    broker = FakeBroker()
    reporter = KafkaActionReporter(broker.factory, "t.actions", max_pending=2)
    for n in range(3):
        reporter.report(result(n))
    assert reporter.dropped == 1
    task = asyncio.create_task(reporter.run())
    try:
        assert await reporter.flush(2.0)
    finally:
        task.cancel()
    assert [decode(ActionResult, value).command_id for _, _, value in broker.sent] == ["cmd-1", "cmd-2"]


def test_keyring_from_one_file_or_a_rotation_folder(tmp_path: Path) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    (tmp_path / "keys").mkdir()
    save_public_key(old, tmp_path / "keys" / "old.pem")
    save_public_key(new, tmp_path / "keys" / "new.pem")
    assert set(load_keyring(tmp_path / "keys" / "old.pem").keys) == {old.key_id}
    assert set(load_keyring(tmp_path / "keys").keys) == {old.key_id, new.key_id}


def test_keyring_errors_are_typed(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(KeyringError, match=r"no \*\.pem"):
        load_keyring(tmp_path / "empty")
    with pytest.raises(KeyringError, match="not a PEM public key"):
        load_keyring(tmp_path / "junk.pem")
    with pytest.raises(KeyringError, match="cannot read"):
        load_keyring(tmp_path / "missing.pem")


def settings(tmp_path: Path, **fields: Any) -> AgentSettings:
    return AgentSettings(device_id="dev-1", state_dir=tmp_path / "state", quarantine_dir=tmp_path / "q",
                         **fields)


def test_the_run_command_has_the_enforcer_plugin() -> None:
    assert len(PLUGIN_BUILDERS) == 1


def test_plugin_is_off_without_a_key_or_when_disabled(tmp_path: Path) -> None:
    assert build_plugin(settings(tmp_path), KafkaSettings()) is None
    key = SigningKey.generate()
    save_public_key(key, tmp_path / "fleet.pem")
    disabled = settings(tmp_path, public_key_path=tmp_path / "fleet.pem", enforce=False)
    assert build_plugin(disabled, KafkaSettings()) is None


def test_plugin_refuses_to_start_with_a_bad_key(tmp_path: Path) -> None:
    (tmp_path / "fleet.pem").write_text("garbage")
    with pytest.raises(CliError, match="cannot enforce"):
        build_plugin(settings(tmp_path, public_key_path=tmp_path / "fleet.pem"), KafkaSettings())


def test_plugin_opens_the_saved_blocklist_before_any_network(tmp_path: Path) -> None:
    key = SigningKey.generate()
    save_public_key(key, tmp_path / "fleet.pem")
    plugin = build_plugin(settings(tmp_path, public_key_path=tmp_path / "fleet.pem", mode="block"),
                          KafkaSettings(bootstrap="127.0.0.1:1"))
    assert isinstance(plugin, EnforcementPlugin)
    assert (tmp_path / "state" / "blocklist.db").is_file() and (tmp_path / "state" / "commands.db").is_file()
    assert plugin.enforcer.mode == "block" and set(plugin.verdicts.handler.keyring.keys) == {key.key_id}
    plugin.blocklist.close()
    plugin.store.close()


# -- durability: the outbox in the state dir --------------------------------------------------------


def verdict_applied(n: int) -> ActionResult:
    return action_result("dev-1", ActionKind.APPLY_VERDICT, Outcome.SUCCEEDED, now=NOW,
                         artifact_id=f"{n:064x}")


async def test_results_reported_during_an_outage_survive_a_crash_and_are_sent_once_after_restart(
    tmp_path: Path,
) -> None:
    broker = FakeBroker(down=True)
    first = KafkaActionReporter(broker.factory, "t.actions", path=tmp_path / "actions.db",
                                backoff_initial_s=0.01, backoff_max_s=0.02)
    reported = [result(n) for n in range(5)]
    for made in reported:
        first.report(made)
    task = asyncio.create_task(first.run())
    await asyncio.sleep(0.05)  # tries and fails while the broker is away
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # the agent dies here: no close(), no flush

    broker.down = False
    second = KafkaActionReporter(broker.factory, "t.actions", path=tmp_path / "actions.db")
    assert second.pending == 5
    task = asyncio.create_task(second.run())
    try:
        assert await second.flush(2.0)
    finally:
        task.cancel()
    sent = [decode(ActionResult, value) for _, _, value in broker.sent]
    assert [r.result_id for r in sent] == [r.result_id for r in reported]  # once each, in order
    second.close()
    third = KafkaActionReporter(broker.factory, "t.actions", path=tmp_path / "actions.db")
    assert third.pending == 0  # acknowledged results are gone: nothing is sent twice
    third.close()


class SlowAck(FakeProducer):
    """The record reaches the broker at once; its acknowledgement comes `ack_s` later (never if None)."""

    ack_s: float | None = 0.1

    async def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        await super().send_and_wait(topic, value, key)
        await asyncio.sleep(self.ack_s if self.ack_s is not None else 3600)


@pytest.mark.parametrize("ack_s", [0.1, None])
async def test_a_stop_while_a_result_awaits_its_ack_neither_loses_it_nor_sends_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ack_s: float | None
) -> None:
    monkeypatch.setattr(action_reporter, "STOP_GRACE_S", 0.5)
    monkeypatch.setattr(SlowAck, "ack_s", ack_s)
    broker = FakeBroker()
    first = KafkaActionReporter(lambda: SlowAck(broker), "t.actions", path=tmp_path / "actions.db")
    first.report(result(1))
    task = asyncio.create_task(first.run())
    for _ in range(100):  # until the record is on the broker, its ack still to come
        if broker.sent:
            break
        await asyncio.sleep(0.01)
    task.cancel()  # the agent stops cleanly (SIGTERM) right now
    await asyncio.gather(task, return_exceptions=True)
    first.close()
    again = KafkaActionReporter(broker.factory, "t.actions", path=tmp_path / "actions.db")
    # acknowledged within the grace period: forgotten, not sent again; never acknowledged: kept
    assert again.pending == (0 if ack_s is not None else 1) and len(broker.sent) == 1
    again.close()


async def test_a_report_is_on_disk_by_the_next_loop_turn_without_any_close(tmp_path: Path) -> None:
    reporter = KafkaActionReporter(FakeBroker(down=True).factory, "t.actions", path=tmp_path / "a.db")
    reporter.report(result(1))
    await asyncio.sleep(0)  # one event-loop turn: the grouped commit ran
    other = KafkaActionReporter(FakeBroker().factory, "t.actions", path=tmp_path / "a.db")  # a new process
    assert other.pending == 1
    [pending] = other.outbox.head()
    assert decode(ActionResult, pending.value).command_id == "cmd-1" and pending.key == b"dev-1"


def test_a_full_outbox_drops_blocklist_bookkeeping_before_any_kill_report(tmp_path: Path) -> None:
    reporter = KafkaActionReporter(FakeBroker().factory, "t.actions", path=tmp_path / "a.db", max_pending=3)
    reporter.report(result(0))
    reporter.report(verdict_applied(1))
    reporter.report(result(2))
    reporter.report(result(3))  # full: the apply_verdict report goes, though it is not the oldest
    reporter.report(result(4))  # no bookkeeping left: the oldest result goes
    kept = [decode(ActionResult, p.value).command_id for p in reporter.outbox.head()]
    assert kept == ["cmd-2", "cmd-3", "cmd-4"] and reporter.dropped == 2 and reporter.pending == 3


def test_an_unopenable_outbox_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "a.db").mkdir()  # a folder where the file should be
    with pytest.raises(StateError, match="cannot open the action outbox"):
        KafkaActionReporter(FakeBroker().factory, "t.actions", path=tmp_path / "a.db")


def test_the_plugin_keeps_its_action_results_in_the_state_dir(tmp_path: Path) -> None:
    key = SigningKey.generate()
    save_public_key(key, tmp_path / "fleet.pem")
    plugin = build_plugin(settings(tmp_path, public_key_path=tmp_path / "fleet.pem"),
                          KafkaSettings(bootstrap="127.0.0.1:1"))
    assert isinstance(plugin, EnforcementPlugin)
    plugin.reporter.report(result(7))
    plugin.blocklist.close()
    plugin.store.close()
    assert isinstance(plugin.reporter, KafkaActionReporter)
    plugin.reporter.close()
    again = KafkaActionReporter(FakeBroker().factory, "t.actions", path=tmp_path / "state" / "actions.db")
    assert again.pending == 1


async def test_a_result_that_cannot_be_written_is_still_sent_from_memory(tmp_path: Path) -> None:
    broker = FakeBroker()
    reporter = KafkaActionReporter(broker.factory, "t.actions", path=tmp_path / "a.db")
    reporter.outbox._db.execute("PRAGMA query_only=ON")  # writes fail from now on, as on a full disk
    reporter.report(result(1))
    assert reporter.outbox.unsaved == 1 and reporter.pending == 1
    task = asyncio.create_task(reporter.run())
    try:
        assert await reporter.flush(2.0)
    finally:
        task.cancel()
    assert [decode(ActionResult, value).command_id for _, _, value in broker.sent] == ["cmd-1"]
    reporter.close()
    reporter.report(result(2))  # after close (a late report during shutdown): logged, never raised
