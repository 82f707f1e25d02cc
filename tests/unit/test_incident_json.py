"""An alert is written once: the bytes it was validated from are the bytes its own dump gives.

`pipeline.incident` validates an alert from JSON values and keeps the JSON it wrote for
`pipeline.outputs` (`WRITTEN`), which sends those bytes instead of dumping the model again. These
tests hold the two equal on hostile text, upper-case hashes, evidence decoded by the fast decoder
(as msgspec Structs) or held as models, any time zone, and hold that the registry gives bytes only
for the very object they were written for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemas_strategies import events, texts
from test_incident_alert import HOSTILE
from test_policy import NOW, SHA, incident, view

from pipeline.incident import WRITTEN, Written
from pipeline.outputs import OutputTopics, decision_records
from pipeline.policy import Policy, PolicyConfig
from schemas.alerts import Alert
from schemas.codec import encode, encode_batch
from schemas.commands import Command
from schemas.common import Mode
from schemas.events import BehaviorEvent, EventBatch, FileWrite, ProcessStart
from schemas.fastcodec import FastEvent, decode_events
from schemas.signing import NonceLedger, SigningKey
from schemas.verdicts import Verdict

TOPICS = OutputTopics("alerts", "verdicts", "commands", "dlq")
KEY = SigningKey.generate("test-key")


def _alert(mode: str = "block", **overrides: Any) -> tuple[Alert, list[Any]]:
    decisions = Policy(PolicyConfig(default_mode=Mode(mode))).decide(incident(**overrides), NOW)
    alert = decisions[0]
    assert isinstance(alert, Alert)
    return alert, decisions


def _written_equals_dump(alert: Alert, decisions: list[Any]) -> None:
    """What the outputs send for the alert is its own dump, byte for byte."""
    (record, *_) = decision_records(decisions, TOPICS, KEY)
    assert record.topic == "alerts" and record.value == encode(alert)
    assert Alert.model_validate_json(record.value) == alert


def _event(ts: datetime, **payload: Any) -> BehaviorEvent:
    body = payload or {"image": HOSTILE, "command_line": HOSTILE, "sha256": SHA}
    kind = FileWrite if "path" in body else ProcessStart
    return BehaviorEvent(event_id="e-1", device_id="dev-1", seq=7, ts=ts, platform="windows",
                         process_key="p", image=HOSTILE, payload=kind(**body))  # fmt: skip


def _decoded(event: BehaviorEvent) -> Any:
    (one,) = decode_events(encode_batch(EventBatch.of([event])))
    return one


def test_the_alert_sent_is_the_bytes_it_was_validated_from_in_both_modes() -> None:
    for mode in ("block", "audit"):
        alert, decisions = _alert(mode)
        _written_equals_dump(alert, decisions)


def test_hostile_text_and_upper_case_hashes_are_written_as_the_contract_dumps_them() -> None:
    ps = view("p", r"C:\Users\ann\x.exe", "w", ("AB" * 32), command_line=HOSTILE * 20, user=HOSTILE)
    alert, decisions = _alert(scored=ps, nodes=(incident().root, ps))
    assert alert.artifact_sha256 == "ab" * 32 and alert.process_tree.nodes[1].sha256 == "ab" * 32
    _written_equals_dump(alert, decisions)


def test_decoded_evidence_in_any_time_zone_is_written_as_its_model_dumps() -> None:
    times = [
        datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),  # no fraction: written without one
        datetime(2024, 5, 1, 12, 0, 0, 5000, tzinfo=UTC),
        datetime(2024, 5, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
        datetime(2024, 5, 1, 6, 30, 0, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ]
    models = [_event(ts) for ts in times] + [_event(times[1], path=HOSTILE, sha256="CD" * 32)]
    decoded = [_decoded(m) for m in models]
    assert any(isinstance(e, FastEvent) for e in decoded)
    alert, decisions = _alert(evidence=(*decoded, models[0]))
    assert alert.process_tree.evidence == (*models, models[0])
    _written_equals_dump(alert, decisions)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(st.just("dev-1")), min_size=1, max_size=4), texts, texts)
def test_any_evidence_and_any_process_text_are_written_as_the_dump(
    evidence: list[BehaviorEvent], command_line: str, user: str
) -> None:
    decoded = tuple(_decoded(e) for e in evidence)
    ps = view("p", r"C:\Users\ann\x.exe", "w", SHA, command_line=command_line, user=user or None)
    alert, decisions = _alert(scored=ps, nodes=(incident().root, ps), evidence=decoded)
    assert alert.process_tree.evidence == tuple(evidence)
    _written_equals_dump(alert, decisions)


def test_an_alert_not_written_here_is_dumped_and_bytes_are_given_once_per_object() -> None:
    alert, _ = _alert()
    copy = Alert.model_validate_json(encode(alert))
    assert copy == alert and copy is not alert
    (record,) = decision_records([copy], TOPICS, KEY)  # not held: dumped
    assert record.value == encode(alert)
    held = WRITTEN.take(alert)
    assert held == encode(alert) and WRITTEN.take(alert) is None  # taken once


def test_the_registry_is_bounded_and_gives_bytes_only_to_the_object_they_belong_to() -> None:
    written: Written[bytes] = Written(limit=2)
    first, second, third = object(), object(), object()
    written.keep(first, b"1")
    written.keep(second, b"2")
    written.keep(third, b"3")  # the oldest goes
    assert written.take(first) is None
    assert written.take(object()) is None
    assert written.take(second) == b"2" and written.take(third) == b"3"


def test_the_registry_lets_the_older_half_go_at_its_limit_and_keeps_the_newer() -> None:
    written: Written[int] = Written(limit=4)
    models = [object() for _ in range(11)]
    for i, model in enumerate(models):
        written.keep(model, i)
    # at 4 held the older two go: 0-3, then 2-5, then 4-7, then 6-9, then 8-10 held
    assert [written.take(model) for model in models] == [None] * 8 + [8, 9, 10]


def test_commands_and_verdicts_are_signed_from_the_values_they_were_validated_from() -> None:
    from pipeline.incident import VALUES
    from schemas.signing import Keyring, check_command, check_verdict, signed_json

    for ttl in (None, 3_600_000):
        decisions = Policy(PolicyConfig(default_mode=Mode.BLOCK, verdict_ttl_ms=ttl)).decide(
            incident(root=view("w", r"C:\Users\ann\W.exe", sha256="EF" * 32)), NOW
        )
        signed = [d for d in decisions if not isinstance(d, Alert)]
        assert [type(d).__name__ for d in signed] == ["Command", "Command", "Verdict"]
        records = decision_records(decisions, TOPICS, KEY)[1:]
        for record, model in zip(records, signed, strict=True):
            assert record.value == signed_json(model, KEY)  # as if it had been dumped
            assert VALUES.take(model) is None  # taken by the outputs
        keyring, now = Keyring.of([KEY.trusted()]), datetime.fromtimestamp(NOW / 1000, UTC)
        for record in records:
            assert record.value is not None
            if record.topic == "commands":
                check_command(Command.model_validate_json(record.value), keyring=keyring, device_id="dev-1",
                              now=now, seen_nonces=NonceLedger())  # fmt: skip
            else:
                check_verdict(Verdict.model_validate_json(record.value), keyring=keyring, now=now)


def test_held_values_equal_the_dump_of_the_command_or_verdict_they_made() -> None:
    from pipeline.incident import VALUES

    decisions = Policy(PolicyConfig(default_mode=Mode.BLOCK)).decide(
        incident(root=view("w", r"C:\Users\ann\W.exe", sha256="EF" * 32, pid=None, command_line=HOSTILE)), NOW
    )
    for decision in decisions[1:]:
        assert VALUES.take(decision) == decision.model_dump(mode="json")
