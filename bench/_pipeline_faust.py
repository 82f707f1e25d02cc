"""faust's per-event agent path over the events topic, for `bench_pipeline` (run as its own process).

    python -m bench._pipeline_faust BOOTSTRAP TOPIC RECORDS RESULT_FILE

A faust App whose agent iterates the topic record by record (`async for value in stream`), decodes
each value with `schemas.codec` and hands its events to the same `Detector` the worker uses: the
agent path as faust's examples write it. When RECORDS records were processed it writes
`{"events": N, "seconds": S}` (first record to last) to RESULT_FILE; the parent then stops it. faust's
data folder goes beside RESULT_FILE, in the parent's temporary folder (it stops this process with a
signal, so nothing here would get to remove a folder of its own: until session Z each run left one in
/tmp).
faust is untyped and this file is a benchmark harness, so it is kept out of mypy's packages.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def main(bootstrap: str, topic_name: str, records: int, result: Path) -> None:
    import faust

    from pipeline.detect import Detector
    from schemas.codec import decode_record

    app = faust.App(
        f"rf-bench-faust-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=str(result.parent / f"{result.stem}-data"),  # the parent's folder: removed with it
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
    )
    topic = app.topic(topic_name, value_type=bytes, value_serializer="raw")
    detector = Detector()
    seen = {"records": 0, "events": 0, "t0": 0.0}

    @app.agent(topic)
    async def detect(stream: Any) -> None:
        async for value in stream:
            if seen["records"] == 0:
                seen["t0"] = time.perf_counter()
            events = decode_record(value).events
            detector.process(events, time.time_ns() // 1_000_000)
            seen["records"] += 1
            seen["events"] += len(events)
            if seen["records"] == records:
                result.write_text(
                    json.dumps({"events": seen["events"], "seconds": time.perf_counter() - seen["t0"]})
                )

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
