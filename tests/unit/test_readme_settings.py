"""The README's table of worker settings and `ringfence worker --help` state the defaults the worker has.

A newcomer tunes the worker from them (`RINGFENCE_MICRO_BATCH_ROWS`, `RINGFENCE_COMMIT_INTERVAL_MS`, ...);
a default changed in `pipeline/settings.py` and not there would send them the wrong way.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.commands.worker import DESCRIPTION
from pipeline.settings import WorkerSettings

README = Path(__file__).resolve().parents[2] / "README.md"
_NAME = re.compile(r"`(RINGFENCE)?(_[A-Z_]+)`")


def _numeric_defaults() -> dict[str, str]:
    """Setting field -> the default the README gives, for rows of plain whole numbers."""
    found: dict[str, str] = {}
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`RINGFENCE_"):
            continue
        names = [suffix.lstrip("_").lower() for _, suffix in _NAME.findall(cells[0])]
        values = [value.strip() for value in cells[1].split("/")]
        if len(names) != len(values) or any(name not in WorkerSettings.model_fields for name in names):
            continue
        found.update({name: value for name, value in zip(names, values, strict=True) if value.isdigit()})
    return found


def test_the_readme_gives_the_worker_settings_numeric_defaults() -> None:
    stated = _numeric_defaults()
    # the batching, window, commit and group knobs are all in the table
    knobs = {"poll_max_records", "micro_batch_rows", "micro_batch_ms", "window_ms", "commit_interval_ms",
             "session_timeout_ms", "heartbeat_interval_ms", "restore_timeout_s", "command_ttl_s"}
    assert knobs <= set(stated), knobs - set(stated)
    defaults = {name: WorkerSettings.model_fields[name].default for name in stated}
    assert {name: float(value) for name, value in stated.items()} == {
        name: float(default) for name, default in defaults.items()
    }


def test_the_worker_help_gives_the_batching_defaults() -> None:
    pairs = re.findall(r"RINGFENCE_([A-Z_]+)\s+\((?:default )?(\d+)\)", DESCRIPTION)
    stated = {name.lower(): int(value) for name, value in pairs}
    assert set(stated) == {"commit_interval_ms", "poll_max_records", "micro_batch_rows", "micro_batch_ms"}
    assert stated == {name: WorkerSettings.model_fields[name].default for name in stated}
