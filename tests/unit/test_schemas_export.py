"""The committed schemas/json/*.json match the models, and the CLI exports, checks and validates."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.cli import main
from schemas.jsonschema import CONTRACTS, DEFAULT_DIR, export, rendered, stale_files


def test_committed_json_schemas_are_current() -> None:
    stale = stale_files(DEFAULT_DIR)
    assert not stale, f"stale JSON Schemas {stale}: run `ringfence schemas export` and commit schemas/json"


def test_one_file_per_contract_and_nothing_else() -> None:
    assert {path.name for path in DEFAULT_DIR.glob("*.json")} == {f"{name}.json" for name in CONTRACTS}


def test_stale_detection_notices_an_edit(tmp_path: Path) -> None:
    export(tmp_path)
    assert stale_files(tmp_path) == []
    (tmp_path / "verdict.json").write_text("{}")
    (tmp_path / "alert.json").unlink()
    assert sorted(stale_files(tmp_path)) == ["alert.json", "verdict.json"]


def test_cli_export_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "export", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "event_batch.json").read_bytes() == rendered()["event_batch.json"]
    assert main(["schemas", "check", "--dir", str(tmp_path / "out")]) == 0
    (tmp_path / "out" / "command.json").write_text("{}")
    assert main(["schemas", "check", "--dir", str(tmp_path / "out")]) == 1
    assert "stale: command.json" in capsys.readouterr().out


def test_cli_validate_reports_the_typed_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = {
        "event_id": "e1",
        "device_id": "d1",
        "seq": 0,
        "ts": "2024-05-01T10:00:00Z",
        "platform": "linux",
        "process_key": "pk",
        "payload": {"kind": "teleport"},
    }
    path = tmp_path / "bad.json"
    path.write_bytes(orjson.dumps(record))
    assert main(["schemas", "validate", str(path)]) == 1
    assert "UnknownKind" in capsys.readouterr().out
    record["payload"] = {"kind": "dns_query", "query": "example.org"}
    path.write_bytes(orjson.dumps(record))
    assert main(["schemas", "validate", str(path)]) == 0
    assert "batch of 1 event(s) from d1" in capsys.readouterr().out


def test_cli_validate_rejects_an_unknown_contract_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schemas", "validate", "--contract", "nope", str(tmp_path / "x")]) == 2
    assert "unknown contract" in capsys.readouterr().err
