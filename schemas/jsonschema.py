"""JSON Schema of every contract, for integrators who validate without Python.

`ringfence schemas export` writes these to `schemas/json/`; a unit test fails when the committed
files differ from what the models generate, so the published schemas never drift from the code.
Schemas describe what we *accept* (validation mode); `$id` names the topic's major version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from schemas.actions import ActionResult
from schemas.alerts import Alert
from schemas.commands import Command
from schemas.common import Contract
from schemas.deadletter import DeadLetter
from schemas.devices import DeviceRecord, Heartbeat
from schemas.events import BehaviorEvent, EventBatch
from schemas.verdicts import Verdict

CONTRACTS: dict[str, type[Contract]] = {
    "behavior_event": BehaviorEvent,
    "event_batch": EventBatch,
    "alert": Alert,
    "verdict": Verdict,
    "command": Command,
    "action_result": ActionResult,
    "heartbeat": Heartbeat,
    "device_record": DeviceRecord,
    "dead_letter": DeadLetter,
}
"""File stem -> model, one file per contract."""

DEFAULT_DIR = Path(__file__).parent / "json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_of(name: str) -> dict[str, Any]:
    """The JSON Schema of one contract, with `$schema` and `$id`."""
    schema = CONTRACTS[name].model_json_schema(mode="validation")
    return {"$schema": _DIALECT, "$id": f"urn:ringfence:schema:v1:{name}", **schema}


def rendered() -> dict[str, bytes]:
    """File name -> exact bytes, deterministic (sorted keys, two-space indent, final newline)."""
    option = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return {f"{name}.json": orjson.dumps(schema_of(name), option=option) + b"\n" for name in CONTRACTS}


def stale_files(directory: Path = DEFAULT_DIR) -> list[str]:
    """Names of files in `directory` that are missing or differ from what the models generate."""
    stale = []
    for name, content in rendered().items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != content:
            stale.append(name)
    return stale


def export(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema file into `directory` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in rendered().items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written
