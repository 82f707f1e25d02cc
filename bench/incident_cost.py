"""CPU per incident on the worker's path: explain, build, policy and the signed output records.

Why: on the pipeline benchmark's 240,000 events the model raises ~1,079 incidents, and the worker
spent ~700 us of CPU on each (explanations, the alert's snapshot and evidence, pydantic models,
Ed25519 signatures, JSON) — a fifth of its CPU per event. This replays the benchmark's records
(`bench._pipeline_data`) through one `Detector` in block mode, as `bench.pipeline` runs the worker,
turns each flush's decisions into the records the worker produces (`pipeline.outputs.decision_records`,
signed with a fixed Ed25519 key: signatures are deterministic) and times each part in place, so
caches are as cold as in the worker. It prints CPU us per incident for each part and SHA-256
digests of the decisions (as `bench.core_replay` hashes them) and of every output record's topic,
key and value bytes: a change that makes this cheaper must leave both digests unchanged.

    .venv/bin/python -m bench.incident_cost [--events 240000] [--mode block|audit] [--repeat 3]

Each repeat is a fresh replay; the per-part figures are medians over the repeats.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._pipeline_data import records
from bench.core_replay import timed_parts
from pipeline import detect, outputs
from pipeline.outputs import OutputTopics
from pipeline.policy import Policy, PolicyConfig
from pipeline.scoring import Scorer, load_model
from pipeline.worker_runtime import tune_gc
from schemas.common import Mode
from schemas.fastcodec import decode_events
from schemas.signing import SigningKey

PARTS = (
    ("explain", Scorer, "explain"), ("build", detect.Detector, "_build"), ("policy", Policy, "decide"),
    ("incidents", detect.Detector, "_decide"), ("outputs", outputs, "decision_records"),
)  # fmt: skip
_TOPICS = OutputTopics("alerts", "verdicts", "commands", "dlq")


def replay(decoded: list[Any], mode: Mode, key: SigningKey) -> tuple[dict[str, float], int, str, str]:
    """One replay: CPU seconds per part, incidents, decisions digest, output records digest."""
    seconds: dict[str, float] = {}
    decisions, produced = hashlib.sha256(), hashlib.sha256()
    detector = detect.Detector(load_model(), Policy(PolicyConfig(default_mode=mode)))
    now = 1_700_000_000_000
    with timed_parts(PARTS, seconds):
        for events in [*decoded, ()]:
            now += 3 if events else 1_000
            out = detector.process(events, now) if events else detector.flush(now)
            for record in outputs.decision_records(out, _TOPICS, key):  # as the worker's `_emit`
                produced.update(b"%d:%s|%d:%s|" % (len(record.topic), record.topic.encode(), len(record.key),
                                                   record.key))  # fmt: skip
                produced.update(record.value or b"")
            for decision in out:
                decisions.update(decision.model_dump_json().encode())
    return seconds, detector.stats.incidents, decisions.hexdigest(), produced.hexdigest()


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--events", type=int, default=240_000)
    parser.add_argument("--mode", choices=[m.value for m in Mode], default="block")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    decoded = [decode_events(value) for _, value in records(args.events, 50, 200)]
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes(range(32))), "bench-fleet-1")
    tune_gc()  # as `ringfence worker` runs: the start-up heap frozen, its collection thresholds
    runs = [replay(decoded, Mode(args.mode), key) for _ in range(max(1, args.repeat))]
    incidents, decided, produced = runs[0][1:]
    if any(run[1:] != runs[0][1:] for run in runs):
        raise SystemExit("replays disagree: the path is not deterministic")
    per = {label: [run[0].get(label, 0.0) / max(incidents, 1) * 1e6 for run in runs] for label, _, _ in PARTS}
    print(f"{incidents} incidents ({args.mode} mode), CPU us per incident, median [min..max] of {len(runs)}:")
    for label, values in per.items():
        print(f"  {label:9s} {statistics.median(values):7.1f} [{min(values):.1f}..{max(values):.1f}]")
    total = [run[0].get("incidents", 0.0) + run[0].get("outputs", 0.0) for run in runs]
    total_us = [t / max(incidents, 1) * 1e6 for t in total]
    print(f"  {'total':9s} {statistics.median(total_us):7.1f} [{min(total_us):.1f}..{max(total_us):.1f}]"
          "  (incidents + outputs)")  # fmt: skip
    print(f"SHA-256 decisions {decided[:16]}..., output records {produced[:16]}...")


if __name__ == "__main__":
    main()
