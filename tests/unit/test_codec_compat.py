"""The compatibility rules of schemas/README.md, one test each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas import codec
from schemas.alerts import Alert, ProcessTreeSnapshot, Tactic, TreeNode, detection_name
from schemas.commands import Command, CommandAction, new_command
from schemas.common import Mode
from schemas.errors import UnknownKind, UnsupportedVersion, ValidationFailed
from schemas.events import Platform
from schemas.verdicts import Verdict

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _event(seq: int, version: str = "1.0", **extra: Any) -> dict[str, Any]:
    payload = {"kind": "file_write", "path": "/tmp/x", "bytes_written": 10}
    return {
        "schema_version": version,
        "event_id": f"e{seq}",
        "device_id": "d1",
        "seq": seq,
        "ts": "2024-05-01T10:00:00Z",
        "platform": "linux",
        "process_key": "pk",
        "payload": payload,
        **extra,
    }


def _batch(version: str = "1.0", events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    events = events if events is not None else [_event(seq) for seq in range(4)]
    return {
        "schema_version": version,
        "device_id": "d1",
        "first_seq": 0,
        "last_seq": len(events) - 1,
        "events": events,
    }


def test_unknown_kind_is_an_error_naming_the_payload() -> None:
    record = _batch()
    record["events"][2]["payload"] = {"kind": "kernel_module_load", "path": "/x.ko"}
    with pytest.raises(UnknownKind) as caught:
        codec.decode_batch(orjson.dumps(record))
    assert (caught.value.field_path, caught.value.event_id) == ("events.2.payload", "e2")


def test_unknown_kind_is_an_error_even_from_a_newer_minor_version() -> None:
    record = _batch("1.7", [_event(0, "1.7")])
    record["events"][0]["payload"] = {"kind": "kernel_module_load"}
    with pytest.raises(UnknownKind):
        codec.decode_batch(orjson.dumps(record))


def test_missing_required_field_names_its_full_path() -> None:
    record = _batch()
    record["events"][3]["payload"] = {"kind": "process_start", "command_line": "sh"}
    with pytest.raises(ValidationFailed) as caught:
        codec.decode_batch(orjson.dumps(record))
    assert caught.value.field_path == "events.3.payload.image"
    assert caught.value.issues[0].type == "missing"


def test_missing_kind_names_the_payload() -> None:
    record = _batch()
    del record["events"][1]["payload"]["kind"]
    with pytest.raises(ValidationFailed) as caught:
        codec.decode_batch(orjson.dumps(record))
    assert caught.value.field_path == "events.1.payload"


def test_newer_minor_with_extra_fields_everywhere_is_accepted_and_extras_ignored() -> None:
    events = [_event(seq, "1.7", new_envelope_field={"x": 1}) for seq in range(4)]
    events[1]["payload"]["entropy"] = 7.9
    record = {**_batch("1.7", events), "compression_hint": "zstd"}
    decoded = codec.decode_batch(orjson.dumps(record))
    plain = codec.decode_batch(orjson.dumps(_batch("1.7", [_event(seq, "1.7") for seq in range(4)])))
    assert decoded == plain
    assert "entropy" not in codec.encode_batch(decoded).decode()


def test_event_of_a_newer_minor_inside_a_current_batch_keeps_its_extras_ignored() -> None:
    record = _batch(events=[_event(0), _event(1, "1.3", added=True)])
    assert len(codec.decode_batch(orjson.dumps(record)).events) == 2


@pytest.mark.parametrize("version", ["1.0", "1.00"])
def test_current_version_with_unknown_fields_is_rejected_with_the_path(version: str) -> None:
    record = _batch(version)
    record["events"][2]["payload"]["entropy"] = 7.9
    with pytest.raises(ValidationFailed) as caught:
        codec.decode_batch(orjson.dumps(record))
    assert caught.value.field_path == "events.2.payload.entropy"
    assert caught.value.issues[0].type == "extra_forbidden"


def test_newer_minor_does_not_excuse_other_errors() -> None:
    record = _batch("1.9", [_event(0, "1.9", extra=1)])
    record["events"][0]["seq"] = -5
    with pytest.raises(ValidationFailed) as caught:
        codec.decode_batch(orjson.dumps(record))
    assert caught.value.field_path == "events.0.seq"


@pytest.mark.parametrize("version", ["2.0", "0.9", "10.1"])
def test_other_major_versions_are_unsupported(version: str) -> None:
    with pytest.raises(UnsupportedVersion) as caught:
        codec.decode_batch(orjson.dumps(_batch(version)))
    assert caught.value.version == version


def test_an_event_of_another_major_inside_a_batch_is_unsupported() -> None:
    record = _batch(events=[_event(0), _event(1, "2.0")])
    with pytest.raises(UnsupportedVersion) as caught:
        codec.decode_batch(orjson.dumps(record))
    assert caught.value.field_path == "events.1.schema_version"


@pytest.mark.parametrize("version", ["1", "v1.0", "", "1.0.0"])
def test_malformed_versions_are_validation_errors(version: str) -> None:
    with pytest.raises(ValidationFailed):
        codec.decode_batch(orjson.dumps(_batch(version)))


def _alert_dict() -> dict[str, Any]:
    alert = Alert(
        alert_id="a1",
        device_id="d1",
        platform=Platform.LINUX,
        detection_name=detection_name(Platform.LINUX, Tactic.EXECUTION, "A"),
        tactic=Tactic.EXECUTION,
        score=0.97,
        model_version="m1",
        feature_version="f1",
        process_tree=ProcessTreeSnapshot(root_process_key="pk", nodes=(TreeNode(process_key="pk"),)),
        mode=Mode.AUDIT,
        first_seen=NOW,
        last_seen=NOW,
        created_at=NOW,
    )
    return orjson.loads(codec.encode(alert))


def test_other_contracts_follow_the_same_rule_for_nested_extras() -> None:
    record = {**_alert_dict(), "schema_version": "1.2"}
    record["process_tree"]["nodes"][0]["integrity"] = "high"
    assert codec.decode(Alert, orjson.dumps(record)).alert_id == "a1"
    record["schema_version"] = "1.0"
    with pytest.raises(ValidationFailed) as caught:
        codec.decode(Alert, orjson.dumps(record))
    assert caught.value.field_path == "process_tree.nodes.0.integrity"


@pytest.mark.parametrize("model", [Command, Verdict])
def test_signed_contracts_never_ignore_unknown_fields_even_from_a_newer_minor(model: type[Any]) -> None:
    if model is Command:
        record = new_command(
            device_id="d1", action=CommandAction.KILL_PROCESS_TREE, now=NOW, process_key="pk"
        )
    else:
        record = Verdict(artifact_id="a" * 64, disposition="malicious", source="ml", issued_at=NOW)
    data = {**orjson.loads(codec.encode(record)), "schema_version": "1.5", "only_if_parent": "explorer.exe"}
    with pytest.raises(ValidationFailed) as caught:
        codec.decode(model, orjson.dumps(data))
    assert caught.value.field_path == "only_if_parent"


def test_the_error_class_follows_the_most_telling_issue_not_the_first() -> None:
    record = {"events": [{"payload": {"kind": "teleport"}}]}  # device, seqs, ids... all missing too
    with pytest.raises(UnknownKind) as caught:
        codec.decode_batch(orjson.dumps(record))
    assert caught.value.field_path == "events.0.payload"
    assert len(caught.value.issues) > 5


def test_a_current_event_inside_a_newer_batch_may_not_add_fields() -> None:
    record = _batch("1.7", [_event(0, "1.0", added=True)])
    with pytest.raises(ValidationFailed) as caught:
        codec.decode_batch(orjson.dumps(record))
    assert caught.value.field_path == "events.0.added"
