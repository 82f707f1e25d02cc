"""The console's HTTP side with a fake publisher: pages, escaping, live stream, auth, actions and audit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_soc_samples import NOW, SHA_M, alert

from pipeline.soc.auth import Analysts
from pipeline.soc.console import ConsoleDeps, build_app, host_name
from pipeline.soc.console_state import AlertBoard, Fleet
from pipeline.soc.settings import ConsoleSettings, ConsoleTopics
from schemas.audit import AuditAction, AuditOutcome, AuditRecord
from schemas.codec import decode
from schemas.commands import Command, CommandAction
from schemas.common import Mode
from schemas.policy_updates import ExclusionChange, GroupModeChange, PolicyUpdate
from schemas.signing import (
    Keyring,
    NonceLedger,
    SigningKey,
    check_command,
    check_policy_update,
    check_verdict,
)
from schemas.verdicts import Disposition, Verdict

TOKEN = "alice:correct-horse-battery-staple"
AUTH = {"Authorization": "Bearer correct-horse-battery-staple"}
TOPICS = ConsoleTopics.with_prefix("t.")


@dataclass
class FakeKafka:
    sent: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    fail_topics: set[str] = field(default_factory=set)

    async def __call__(self, topic: str, key: str, value: bytes | None) -> tuple[int, int]:
        if topic in self.fail_topics:
            raise TimeoutError("broker down")
        self.sent.append((topic, key, value))
        return 0, len(self.sent)

    def audits(self) -> list[AuditRecord]:
        return [decode(AuditRecord, v) for t, _, v in self.sent if t == TOPICS.audit and v is not None]

    def records(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.sent if t == topic and v is not None]


@dataclass
class Console:
    client: TestClient[Any, Any]
    kafka: FakeKafka
    deps: ConsoleDeps


def _deps(kafka: FakeKafka, key: SigningKey | None) -> ConsoleDeps:
    board = AlertBoard(100)
    board.add(alert())
    return ConsoleDeps(ConsoleSettings(), TOPICS, Analysts.from_lines([TOKEN], "test"), key, board, Fleet(),
                       kafka, lambda: NOW)


@pytest.fixture
async def make_console() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(key: SigningKey | None = None) -> Console:
        kafka = FakeKafka()
        deps = _deps(kafka, key)
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(deps)))
        await client.start_server()
        clients.append(client)
        return Console(client, kafka, deps)

    yield make
    for client in clients:
        await client.close()


async def test_alert_page_draws_the_tree_and_the_hostile_command_line_inert(make_console: Any) -> None:
    console = await make_console()
    response = await console.client.get("/alerts/al-1")
    page = await response.text()
    assert response.status == 200
    assert "<script>alert(" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\\x1b[2J" in page
    assert page.count('<g class="node') == 4 and '<g class="node scored" data-process-key="{M}">' in page
    assert "process_access C:\\Windows\\System32\\lsass.exe access 0x1010" in page
    assert "lsass_access" in page and "+2.310" in page
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


async def test_alert_list_and_unknown_alert(make_console: Any) -> None:
    console = await make_console()
    listing = await (await console.client.get("/")).text()
    assert 'data-alert-id="al-1"' in listing and 'href="/alerts/al-1"' in listing
    missing = await console.client.get("/alerts/nope")
    assert missing.status == 404


async def test_live_stream_replays_recent_alerts_then_pushes_new_ones(make_console: Any) -> None:
    console = await make_console()
    response = await console.client.get("/events")
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    assert first.startswith(b"event: alert\ndata: {") and b'"alert_id":"al-1"' in first
    console.deps.board.add(alert("al-2", score=0.99))
    second = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    assert b'"alert_id":"al-2"' in second and b'"url":"/alerts/al-2"' in second
    assert second.count(b"\n") == 3  # a newline inside an alert can never start a forged SSE field
    response.close()


async def test_actions_without_a_valid_token_are_refused_and_audited(make_console: Any) -> None:
    console = await make_console(SigningKey.generate())
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": "Basic eDp5"}):
        response = await console.client.post(f"/api/verdicts/{SHA_M}/lift", json={}, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert console.kafka.records(TOPICS.verdicts) == []
    audits = console.kafka.audits()
    assert [(a.actor, a.outcome) for a in audits] == [("anonymous", AuditOutcome.DENIED)] * 3
    assert audits[0].action is AuditAction.LIFT_VERDICT and audits[0].target == SHA_M


async def test_lift_publishes_a_signed_lifted_verdict_and_an_audit_record(make_console: Any) -> None:
    key = SigningKey.generate()
    console = await make_console(key)
    response = await console.client.post(f"/api/verdicts/{SHA_M.upper()}/lift", headers=AUTH,
                                         json={"reason": "vendor tool", "alert_id": "al-1"})
    assert response.status == 200, await response.text()
    [(_, record_key, value)] = [s for s in console.kafka.sent if s[0] == TOPICS.verdicts]
    verdict = decode(Verdict, value or b"")
    check_verdict(verdict, keyring=Keyring.of([key.trusted()]), now=NOW)
    assert (record_key, verdict.disposition, verdict.artifact_id) == (SHA_M, Disposition.LIFTED, SHA_M)
    assert "alice via console: vendor tool" == verdict.reason
    [audit] = console.kafka.audits()
    assert (audit.actor, audit.outcome, audit.published_topic, audit.published_key, audit.ts) == (
        "alice", AuditOutcome.ACCEPTED, TOPICS.verdicts, SHA_M, NOW)


async def test_restore_publishes_a_signed_command_the_device_accepts(make_console: Any) -> None:
    key = SigningKey.generate()
    console = await make_console(key)
    body = {"device_id": "dev-1", "sha256": SHA_M, "path": "C:\\Users\\bob\\m.exe", "alert_id": "al-1"}
    response = await console.client.post("/api/commands/restore", headers=AUTH, json=body)
    assert response.status == 200
    [value] = console.kafka.records(TOPICS.commands)
    command = decode(Command, value)
    check_command(command, keyring=Keyring.of([key.trusted()]), device_id="dev-1", now=NOW,
                  seen_nonces=NonceLedger())
    assert command.action is CommandAction.RESTORE_FILE and command.path == body["path"]
    assert command.expires_at - command.issued_at == timedelta(hours=24)


async def test_lift_and_restore_need_the_signing_key(make_console: Any) -> None:
    console = await make_console(None)
    response = await console.client.post(f"/api/verdicts/{SHA_M}/lift", headers=AUTH, json={})
    assert response.status == 503 and "signing key" in (await response.json())["message"]
    assert [a.outcome for a in console.kafka.audits()] == [AuditOutcome.FAILED]
    page = await (await console.client.get("/alerts/al-1")).text()
    assert "Lift verdict" not in page and "No signing key configured" in page
    switch = await console.client.post("/api/groups/finance/mode", headers=AUTH, json={"mode": "block"})
    assert switch.status == 503 and "signing key" in (await switch.json())["message"]
    assert console.kafka.records(TOPICS.policy) == []  # an unsigned switch nobody would apply


async def test_group_mode_switch_is_a_signed_policy_update(make_console: Any) -> None:
    key = SigningKey.generate()
    console = await make_console(key)
    response = await console.client.post("/api/groups/finance/mode", headers=AUTH, json={"mode": "block"})
    assert response.status == 200
    [value] = console.kafka.records(TOPICS.policy)
    update = decode(PolicyUpdate, value)
    assert update.change == GroupModeChange(group="finance", mode=Mode.BLOCK)
    check_policy_update(update, keyring=Keyring.of([key.trusted()]), now=NOW)  # as agents check
    assert (update.actor, update.key) == ("alice", "group_mode:finance")
    bad = await console.client.post("/api/groups/no%20spaces/mode", headers=AUTH, json={"mode": "block"})
    worse = await console.client.post("/api/groups/finance/mode", headers=AUTH, json={"mode": "off"})
    assert (bad.status, worse.status) == (400, 400)
    assert [a.outcome for a in console.kafka.audits()][-2:] == [AuditOutcome.REJECTED] * 2


async def test_false_positive_creates_a_scoped_expiring_exclusion(make_console: Any) -> None:
    console = await make_console()
    response = await console.client.post("/api/alerts/al-1/false-positive", headers=AUTH,
                                         json={"match": "hash", "scope": "device", "expires_hours": 48})
    assert response.status == 200
    change = decode(PolicyUpdate, console.kafka.records(TOPICS.policy)[0]).change
    assert isinstance(change, ExclusionChange)
    assert (change.pattern, change.scope, change.alert_id) == (SHA_M, "device:dev-1", "al-1")
    assert change.expires_at == NOW + timedelta(hours=48)
    no_group = await console.client.post("/api/alerts/al-1/false-positive", headers=AUTH,
                                         json={"scope": "group"})
    too_long = await console.client.post("/api/alerts/al-1/false-positive", headers=AUTH,
                                         json={"expires_hours": 24 * 365})
    unknown = await console.client.post("/api/alerts/zzz/false-positive", headers=AUTH, json={})
    assert [r.status for r in (no_group, too_long, unknown)] == [400, 400, 400]
    assert "in no group" in (await no_group.json())["message"]


async def test_a_broker_failure_is_reported_and_audited_not_raised(make_console: Any) -> None:
    console = await make_console(SigningKey.generate())
    console.kafka.fail_topics.add(TOPICS.policy)
    response = await console.client.post("/api/groups/finance/mode", headers=AUTH, json={"mode": "audit"})
    assert response.status == 502
    [audit] = console.kafka.audits()
    assert audit.outcome is AuditOutcome.FAILED and "broker down" in audit.reason


async def test_requests_that_are_not_json_objects_are_rejected(make_console: Any) -> None:
    console = await make_console()
    form = await console.client.post("/api/groups/finance/mode", headers=AUTH, data={"mode": "block"})
    array = await console.client.post("/api/groups/finance/mode", headers=AUTH, json=["block"])
    extra = await console.client.post("/api/groups/finance/mode", headers=AUTH,
                                      json={"mode": "block", "group": "other"})
    assert [r.status for r in (form, array, extra)] == [400, 400, 400]
    assert console.kafka.records(TOPICS.policy) == []


async def test_foreign_host_headers_are_refused(make_console: Any) -> None:
    console = await make_console()
    rebound = await console.client.get("/", headers={"Host": "attacker.example:8080"})
    assert rebound.status == 421
    assert (await console.client.get("/", headers={"Host": "localhost:8080"})).status == 200
    assert host_name("[::1]:8080") == "::1" and host_name("LocalHost") == "localhost"


async def test_whoami_names_the_actor_of_the_token(make_console: Any) -> None:
    console = await make_console()
    assert (await (await console.client.get("/api/whoami", headers=AUTH)).json()) == {"actor": "alice"}
    assert (await console.client.get("/api/whoami")).status == 401


async def test_mode_switches_are_signed_for_the_agents_and_a_device_override_needs_the_key(
    make_console: Any,
) -> None:
    from schemas.policy_updates import DeviceModeChange

    unsigned = await make_console(None)
    response = await unsigned.client.post("/api/devices/ws-1/mode", headers=AUTH, json={"mode": "audit"})
    assert response.status == 503 and unsigned.kafka.records(TOPICS.policy) == []

    key = SigningKey.generate()
    console = await make_console(key)
    keyring = Keyring.of([key.trusted()])
    group = await console.client.post("/api/groups/finance/mode", headers=AUTH, json={"mode": "block"})
    device = await console.client.post("/api/devices/ws-1/mode", headers=AUTH, json={"mode": "audit"})
    cleared = await console.client.post("/api/devices/ws-1/mode", headers=AUTH, json={"mode": None})
    bad = await console.client.post("/api/devices/no%20spaces/mode", headers=AUTH, json={"mode": "block"})
    assert [r.status for r in (group, device, cleared, bad)] == [200, 200, 200, 400]
    updates = [decode(PolicyUpdate, value) for value in console.kafka.records(TOPICS.policy)]
    for update in updates:  # what an agent checks before it switches (agents.mode_follower)
        check_policy_update(update, keyring=keyring, now=NOW)
    assert [u.change for u in updates] == [GroupModeChange(group="finance", mode=Mode.BLOCK),
                                           DeviceModeChange(device_id="ws-1", mode=Mode.AUDIT),
                                           DeviceModeChange(device_id="ws-1", mode=None)]
    assert [u.key for u in updates][1:] == ["device_mode:ws-1"] * 2
    audits = [a for a in console.kafka.audits() if a.action is AuditAction.SET_DEVICE_MODE]
    assert [(a.outcome, a.target) for a in audits] == [
        (AuditOutcome.ACCEPTED, "device:ws-1=audit"), (AuditOutcome.ACCEPTED, "device:ws-1=group"),
        (AuditOutcome.REJECTED, "device:no spaces")]
