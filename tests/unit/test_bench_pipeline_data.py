"""The pipeline benchmark's generator: every process it reports on was started first, also past the 200
live processes per device at which it begins to end the oldest."""

from __future__ import annotations

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
