"""The pipeline benchmark's generator: every process it reports on was started first, also past the 200
live processes per device at which it begins to end the oldest."""

from __future__ import annotations

import hashlib

import orjson

from bench._pipeline_data import _ANCHORS, records


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
