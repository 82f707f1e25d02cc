"""Console state from records, analyst tokens, and policy updates folded into the policy document."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_soc_samples import NOW, alert

from pipeline.policy import ExclusionKind, PolicyConfig
from pipeline.soc.auth import Analysts, load_token_file
from pipeline.soc.console_state import SUBSCRIBER_QUEUE, AlertBoard, Fleet, apply
from pipeline.soc.errors import ConsoleConfigError
from pipeline.soc.kafka_io import Record
from pipeline.soc.settings import ConsoleTopics
from schemas.codec import encode
from schemas.common import Mode, Platform
from schemas.devices import DeviceRecord
from schemas.policy_updates import ExclusionChange, ExclusionMatch, GroupModeChange, PolicyUpdate, fold

TOPICS = ConsoleTopics.with_prefix("")


def _device(device_id: str, group: str | None, mode: Mode = Mode.AUDIT) -> DeviceRecord:
    return DeviceRecord(device_id=device_id, hostname=device_id, platform=Platform.LINUX, group=group,
                        effective_mode=mode, agent_version="1", enrolled_at=NOW, last_seen=NOW)


def _record(topic: str, value: bytes | None, key: bytes = b"k") -> Record:
    return Record(topic, 0, 0, key, value, 0)


def _update(change: GroupModeChange | ExclusionChange) -> PolicyUpdate:
    return PolicyUpdate(update_id="u1", change=change, actor="alice", issued_at=NOW)


def test_board_keeps_the_newest_alerts_within_its_bound_and_replaces_redeliveries() -> None:
    board = AlertBoard(max_alerts=2)
    for alert_id in ("a", "b", "a", "c"):
        board.add(alert(alert_id))
    assert [a.alert_id for a in board.recent()] == ["c", "a"]
    assert board.get("b") is None


async def test_a_subscriber_that_stops_reading_is_dropped_with_a_stop_marker() -> None:
    board = AlertBoard(max_alerts=10)
    slow, quick = board.subscribe(), board.subscribe()
    for index in range(SUBSCRIBER_QUEUE + 1):
        board.add(alert(f"a{index}"))
        while not quick.empty():
            quick.get_nowait()
    assert slow.qsize() == SUBSCRIBER_QUEUE
    assert board.subscribed(quick) and not board.subscribed(slow)
    drained = [slow.get_nowait() for _ in range(slow.qsize())]
    assert drained[-1] is None  # told to stop; its stream ends instead of growing without bound
    board.close()
    assert quick.get_nowait() is None


def test_records_route_to_alerts_devices_and_group_modes() -> None:
    board, fleet = AlertBoard(10), Fleet()
    apply(_record(TOPICS.alerts, encode(alert())), TOPICS, board, fleet)
    apply(_record(TOPICS.alerts, b"junk"), TOPICS, board, fleet)
    apply(_record(TOPICS.devices, encode(_device("d1", "finance", Mode.BLOCK))), TOPICS, board, fleet)
    apply(_record(TOPICS.devices, encode(_device("d2", "finance"))), TOPICS, board, fleet)
    apply(_record(TOPICS.devices, encode(_device("d3", None))), TOPICS, board, fleet)
    apply(_record(TOPICS.devices, None, key=b"d3"), TOPICS, board, fleet)  # unenrolled
    apply(_record(TOPICS.policy, encode(_update(GroupModeChange(group="lab", mode=Mode.BLOCK)))),
          TOPICS, board, fleet)
    assert len(board) == 1 and board.invalid == 1
    assert sorted(fleet.devices) == ["d1", "d2"] and fleet.group_of("d1") == "finance"
    finance, lab = fleet.groups()
    assert (finance.name, finance.devices, finance.policy_mode, finance.device_modes) == (
        "finance", 2, None, (Mode.AUDIT, Mode.BLOCK))
    assert (lab.name, lab.devices, lab.policy_mode) == ("lab", 0, Mode.BLOCK)
    apply(_record(TOPICS.policy, None, key=b"group_mode:lab"), TOPICS, board, fleet)  # withdrawn
    assert [g.name for g in fleet.groups()] == ["finance"]


def test_tokens_parse_with_actor_names_and_compare_exactly() -> None:
    lines = ["# analysts", "", "alice:aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"]
    analysts = Analysts.from_lines(lines, "t")
    assert analysts.authenticate("Bearer aaaaaaaaaaaaaaaaaaaa") == "alice"
    assert analysts.authenticate("bearer  bbbbbbbbbbbbbbbbbbbb ") == "analyst"
    assert analysts.authenticate("Bearer aaaaaaaaaaaaaaaaaaa") is None  # one character short
    assert analysts.authenticate("aaaaaaaaaaaaaaaaaaaa") is None and analysts.authenticate(None) is None
    with pytest.raises(ConsoleConfigError, match="at least 16"):
        Analysts.from_lines(["bob:short"], "t")
    with pytest.raises(ConsoleConfigError, match="t line 1: analyst name"):
        Analysts.from_lines(["bad name:cccccccccccccccccccc"], "t")


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("carol:cccccccccccccccccccc\n")
    path.chmod(0o644)
    with pytest.raises(ConsoleConfigError, match="chmod 600"):
        load_token_file(path)
    path.chmod(0o600)
    assert load_token_file(path).authenticate("Bearer cccccccccccccccccccc") == "carol"
    with pytest.raises(ConsoleConfigError, match="cannot read"):
        load_token_file(tmp_path / "absent")


def test_policy_updates_fold_into_a_document_the_policy_engine_reads() -> None:
    expiry = NOW + timedelta(days=1)
    exclusion = ExclusionChange(exclusion_id="fp-1", match=ExclusionMatch.HASH, pattern="ab" * 32,
                                scope="device:dev-1", expires_at=expiry, alert_id="al-1")
    document = {"default_mode": "audit", "group_modes": {"lab": "audit"},
                "exclusions": [{"id": "fp-1", "kind": "path", "pattern": "old"}]}
    document = fold(document, _update(GroupModeChange(group="lab", mode=Mode.BLOCK)))
    document = fold(document, _update(exclusion))
    config = PolicyConfig.from_dict(document)
    assert config.group_modes == {"lab": Mode.BLOCK}
    [parsed] = config.exclusions  # same id: replaced, not duplicated
    assert (parsed.kind, parsed.scope, parsed.expires_ms) == (
        ExclusionKind.HASH, "device:dev-1", int(expiry.timestamp() * 1000))
    assert _update(exclusion).key == "exclusion:fp-1"
