"""The pipeline benchmark's workloads: the generator (every process it reports on was started first, also
past the 200 live processes per device at which it begins to end the oldest) and the recorded telemetry."""

from __future__ import annotations

import gzip
import hashlib
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from shared_data import shared_datasets

from agents.sysmon.loader import load_events
from bench._pipeline_data import _ANCHORS, AGENT_LINGER_MS, check_sample, recorded_records, records


def test_every_process_starts_before_its_events_and_the_oldest_end_once_200_are_live() -> None:
    started: set[str] = set()
    ended: set[str] = set()
    late: list[str] = []
    for _, value in records(40_000, 50, 2, prefix="gen"):  # about 800 starts per device: far past 200
        for event in orjson.loads(value)["events"]:
            key, kind = event["process_key"], event["payload"]["kind"]
            if kind == "process_start":
                assert key not in started, key  # a key is started once
                started.add(key)
            elif key not in started:
                late.append(key)
            elif kind == "process_end":
                ended.add(key)
    assert late == []  # before the fix, every process started past the 200th had events but no start
    assert len(ended) > 400  # the generator did pass 200 live processes and ended the oldest
    assert len(started) - len(ended) <= 2 * (200 + len(_ANCHORS))  # live: 200 per device at most, and anchors


def _start_lines(own_lines: float) -> list[str]:
    made = records(20_000, 50, 4, own_lines=own_lines)
    events = [e for _, value in made for e in orjson.loads(value)["events"]]
    return [e["payload"]["command_line"] for e in events if e["payload"]["kind"] == "process_start"]


def test_own_command_lines_are_drawn_only_when_asked_for_and_are_each_their_own() -> None:
    """`--own-lines`: a share of the starts gets arguments of its own (a line no mask cache has seen);
    at 0 the records are the very bytes the benchmarks' digests were taken on."""
    digest = hashlib.sha256()
    for key, value in records(3_000, 50, 3):
        digest.update(key + value)
    # the records of commit 94f946b, before `own_lines`: the benchmarks' digests were taken on these
    assert digest.hexdigest() == "59e866ddab3d5d8471f45a2bfa842893fa95da044dac24b737dbcdfeb0d6404e"
    assert list(records(3_000, 50, 3)) == list(records(3_000, 50, 3, own_lines=0.0))
    fixed = set(_start_lines(0.0))
    assert len(fixed) <= len(_ANCHORS) + 8  # the anchors' and the eight images' lines
    lines = _start_lines(0.4)
    own = [line for line in lines if line not in fixed]
    assert 0.3 < len(own) / len(lines) < 0.5 and len(set(own)) == len(own)
    assert all("--instance-id=" in line and len(line) > 150 for line in own)
    assert list(records(2_000, 50, 2, own_lines=0.4)) == list(records(2_000, 50, 2, own_lines=0.4))  # seeded


def test_recorded_records_replay_each_recording_as_one_device_in_order_as_agents_write_it(
    tmp_path: Path,
) -> None:
    """`--workload recorded`: real telemetry, one device per recording, its events in recorded order,
    at most 50 to a record and at most an agent's linger of event time, devices taking turns; recordings
    that end drop out, and all start again as new devices when every one has ended. The records are the
    bytes an agent writes."""
    source = shared_datasets("otrf")
    small = sorted(source.rglob("*.gz"), key=lambda p: p.stat().st_size)[:2]
    for i, path in enumerate(small):
        (tmp_path / f"{i}-{path.name}").symlink_to(path)
    events_in = [sum(1 for _ in load_events(path)) for path in small]
    assert all(n > 0 for n in events_in)
    total = sum(events_in)
    made = list(recorded_records(total + 120, 50, tmp_path, prefix="t"))
    check_sample([value for _, value in made])
    by_device: dict[str, list[dict[str, object]]] = {}
    turns: list[str] = []
    for key, value in made:
        obj = orjson.loads(value)
        events = obj.get("events", [obj])
        assert {e["device_id"] for e in events} == {key.decode()}
        assert len(events) <= 50
        times = [datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp() * 1000 for e in events]
        assert max(times) - min(times) <= AGENT_LINGER_MS  # what an agent sends within one linger
        turns.append(key.decode())
        by_device.setdefault(key.decode(), []).extend(events)
    first_round = [d for d in by_device if d.startswith("t-0-")]
    assert sorted(first_round) == ["t-0-0", "t-0-1"]
    assert [len(by_device[d]) for d in first_round] == events_in  # each recording whole, once
    assert any(d.startswith("t-1-") for d in by_device)  # then again, as new devices
    assert sum(len(v) for v in by_device.values()) >= total + 120
    assert turns[:2] == ["t-0-0", "t-0-1"]  # devices take turns
    for events in by_device.values():
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # recorded order, nothing twice


def test_recorded_records_refuse_a_folder_without_recordings(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no recordings"):
        next(recorded_records(1_000, 50, tmp_path))
    (tmp_path / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(ValueError, match="hold no event"):
        next(recorded_records(1_000, 50, tmp_path))
