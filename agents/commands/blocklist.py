"""`ringfence-agent blocklist`: show the fleet blocklist as this device holds it (read-only).

Reads the agent's saved list (`<state_dir>/blocklist.db`, the same file a running agent uses, opened
read-only), so it answers even when the broker or the agent is down: what would be blocked now.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from agents.blocklist import BlockEntry, Blocklist

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "blocklist", help="show the local copy of the fleet blocklist (what this device blocks)",
        description="Show the artifacts this device blocks, from the agent's saved blocklist "
        "(<state dir>/blocklist.db; RINGFENCE_AGENT_STATE_DIR, default /var/lib/ringfence/state), "
        "with the verdict behind each, the blocklist version (verdict-topic records consumed) and when "
        "it last caught up with the topic. Read-only: safe while the agent runs.",
    )
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the agent's state folder (default: from RINGFENCE_AGENT_STATE_DIR)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    parser.add_argument("--all", action="store_true",
                        help="also list entries whose verdict has expired (they no longer block)")
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from agents.blocklist import BLOCKLIST_FILE, Blocklist
    from agents.enforcement_errors import StateError
    from agents.settings import AgentSettings

    try:
        settings = AgentSettings()
    except ValidationError as exc:
        raise CliError(f"invalid settings: {exc.errors(include_url=False)[0]}") from None
    path = (args.state_dir or Path(settings.state_dir)) / BLOCKLIST_FILE
    if not path.is_file():
        raise CliError(f"no blocklist at {path} (has the agent run with enforcement enabled?)", 1)
    try:
        blocklist = Blocklist(path, settings.verdicts_topic, read_only=True)
    except StateError as exc:
        raise CliError(str(exc), 1) from None
    now = datetime.now(UTC)
    entries = [entry for entry in blocklist if args.all or entry.active(now)]
    print(_as_json(blocklist, entries, now) if args.json else _as_table(blocklist, entries, now))
    return 0


def _as_table(blocklist: Blocklist, entries: list[BlockEntry], now: datetime) -> str:
    caught_up = blocklist.last_caught_up_at.isoformat() if blocklist.last_caught_up_at else "never"
    lines = [f"blocklist {blocklist.path}: {blocklist.active_count(now)} blocked, version "
             f"{blocklist.version}, topic {blocklist.topic}, last caught up {caught_up}"]
    if entries:
        lines.append(f"{'SHA256':<64}  {'SINCE':<20}  {'EXPIRES':<30}  {'SOURCE':<8}  DETECTION / REASON")
    for entry in entries:
        verdict = entry.verdict
        expires = _short(verdict.expires_at) if verdict.expires_at else "-"
        if not entry.active(now):
            expires += " (expired)"
        what = verdict.detection_name or verdict.reason or "-"
        lines.append(f"{entry.artifact_id}  {_short(verdict.issued_at):<20}  {expires:<30}  "
                     f"{verdict.source:<8}  {what}")
    return "\n".join(lines)


def _as_json(blocklist: Blocklist, entries: list[BlockEntry], now: datetime) -> str:
    return json.dumps({
        "path": str(blocklist.path), "topic": blocklist.topic, "version": blocklist.version,
        "blocked": blocklist.active_count(now),
        "last_caught_up_at": blocklist.last_caught_up_at.isoformat() if blocklist.last_caught_up_at else None,
        "entries": [{
            "artifact_id": entry.artifact_id, "active": entry.active(now),
            "partition": entry.partition, "offset": entry.offset, "applied_at": entry.applied_at.isoformat(),
            "verdict": entry.verdict.model_dump(mode="json"),
        } for entry in entries],
    }, indent=2)


def _short(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
