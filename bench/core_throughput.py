"""Throughput of the pure detection core (tree + windows + features + batched score + policy).

Events are built up front (decoding is measured by the contracts benchmark), then fed to
`Detector.process` in batches as the stream would, with the wall clock as `now_ms`. Prints
events/s for the tree alone and for the full core, and rows per predict call.

    .venv/bin/python bench/core_throughput.py [--events 200000] [--devices 50] [--batch 500] [--xgb]

`--xgb` scores with a stand-in XGBoost booster of a realistic size (150 rounds x 13 classes,
depth 6, trained on random rows at start-up) instead of the provisional rules, to show what the
predict call costs; its scores are meaningless.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from pipeline.detect import Detector, DetectorConfig
from pipeline.eventkit import EventKit
from pipeline.features import FEATURE_NAMES, FEATURE_VERSION, N_FEATURES
from pipeline.model.provisional import ProvisionalRules
from pipeline.scoring import CLASSES, Model, load_model
from pipeline.tree import DeviceForest
from schemas.events import BehaviorEvent

ANCHORS = [
    (r"C:\Windows\System32\svchost.exe", "svchost.exe -k netsvcs -p -s Schedule"),
    (r"C:\Windows\explorer.exe", "C:\\Windows\\Explorer.EXE"),
    (r"C:\Windows\System32\services.exe", ""),
]
WIN_IMAGES = [
    (r"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE", "OUTLOOK.EXE /recycle"),
    (
        r"C:\Program Files\Microsoft VS Code\Code.exe",
        "Code.exe --type=utility --utility-sub-type=node.mojom.NodeService",
    ),
    (r"C:\Users\u\AppData\Local\Microsoft\Teams\current\Teams.exe", "Teams.exe --type=renderer"),
    (r"C:\Program Files\Google\Chrome\Application\chrome.exe", "chrome.exe --type=renderer --lang=en-US"),
    (r"C:\Program Files\App\updater.exe", "updater.exe /silent /check"),
    (r"C:\Windows\System32\conhost.exe", "conhost.exe 0xffffffff -ForceV1"),
    (r"C:\Windows\System32\cmd.exe", "cmd.exe /c dir C:\\Users"),
    (
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
        "powershell -NoProfile -File C:\\scripts\\a.ps1",
    ),
    (r"C:\Program Files\Google\Chrome\Application\chrome.exe", "chrome.exe --type=renderer --lang=en-US"),
    (r"C:\Windows\System32\svchost.exe", "svchost.exe -k netsvcs -p -s Schedule"),
    (r"C:\Program Files\App\updater.exe", "updater.exe /silent /check"),
    (r"C:\Windows\System32\conhost.exe", "conhost.exe 0xffffffff -ForceV1"),
    (r"C:\Windows\System32\whoami.exe", "whoami /all"),
]


def build_events(
    n_events: int, n_devices: int, starts: float, skew: float, seed: int = 7
) -> list[BehaviorEvent]:
    """A mixed stream: process starts, then file, registry, network, dns, loads and access events.

    A third of the behaviour comes from anchors (svchost, explorer, services); the rest from live
    processes, the recently started ones hottest (`skew` 1 = uniform, higher = more concentrated).
    70 % of processes start under an anchor, 30 % under a recent process (trees a few levels deep).
    """
    rng = random.Random(seed)
    kits = [EventKit(f"dev-{d}", step_ms=5) for d in range(n_devices)]
    anchors = [[f"{d}-anchor-{a}" for a in range(len(ANCHORS))] for d in range(n_devices)]
    events: list[BehaviorEvent] = []
    for d, kit in enumerate(kits):
        events += [kit.start(key, image, cmd) for key, (image, cmd) in zip(anchors[d], ANCHORS, strict=True)]
    live: list[list[str]] = [[] for _ in kits]
    for i in range(n_events):
        d = rng.randrange(n_devices)
        kit, procs = kits[d], live[d]
        roll = rng.random()
        if roll < starts or not procs:
            key = f"{d}-{i}"
            image, cmd = rng.choice(WIN_IMAGES)
            parent = rng.choice(procs[-20:]) if procs and rng.random() < 0.3 else rng.choice(anchors[d])
            events.append(kit.start(key, image, cmd, parent=parent))
            procs.append(key)
            if len(procs) > 200:
                events.append(kit.end(procs.pop(0)))
            continue
        if roll < 0.33:
            key = rng.choice(anchors[d])
        else:
            key = procs[-1 - int(len(procs) * rng.random() ** skew)]
        events.append(_behaviour(kit, key, rng.random(), rng, i))
    return events


def _behaviour(kit: EventKit, key: str, roll: float, rng: random.Random, i: int) -> BehaviorEvent:
    if roll < 0.45:
        return kit.write(key, rf"C:\Users\u\AppData\Local\Temp\f{i % 997}.tmp")
    if roll < 0.60:
        return kit.reg(key, r"HKLM\Software\Vendor\Settings", f"v{i % 13}")
    if roll < 0.72:
        return kit.connect(key, f"10.0.{i % 7}.{i % 251}", rng.choice([443, 80, 8443, 5555]))
    if roll < 0.82:
        return kit.dns(key, f"host{i % 101}.example.com")
    if roll < 0.95:
        return kit.load(key, r"C:\Windows\System32\winhttp.dll", signed=True)
    return kit.access(key, r"C:\Windows\System32\svchost.exe", 0x1000)


def random_booster(rounds: int = 150) -> Model:
    """A meaningless booster of realistic size, loaded through the real model loader."""
    import json
    import tempfile
    from pathlib import Path

    import numpy as np
    import xgboost

    rng = np.random.default_rng(0)
    x = (rng.random((4000, N_FEATURES)) < 0.05).astype(np.float32)
    y = rng.integers(0, len(CLASSES), 4000)
    params = {"objective": "multi:softprob", "num_class": len(CLASSES), "max_depth": 6, "nthread": 1}
    booster = xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=rounds)
    directory = Path(tempfile.mkdtemp(prefix="ringfence-bench-"))
    booster.save_model(str(directory / "model.ubj"))
    meta = {
        "version": "bench-random-1",
        "feature_version": FEATURE_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "classes": list(CLASSES),
        "thresholds": {"malicious": 1.01},
    }  # never flags: measures predict only
    (directory / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    return load_model(directory)


def timed(label: str, n: int, run: Callable[[], object]) -> float:
    """Run once, print events/s by wall clock and by this process's CPU time (robust to a busy host)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<40} {n / wall:>10,.0f} events/s wall  {n / cpu:>10,.0f} events/s cpu  ({cpu:.2f} s cpu)")
    return n / cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--starts", type=float, default=0.04, help="share of events that start a process")
    parser.add_argument("--skew", type=float, default=3.0, help="1 = uniform over live processes")
    parser.add_argument("--xgb", action="store_true", help="score with a realistic-size XGBoost booster")
    args = parser.parse_args()
    events = build_events(args.events, args.devices, args.starts, args.skew)
    n = len(events)

    def tree_only() -> None:
        forests: dict[str, DeviceForest] = {}
        for event in events:
            forest = forests.get(event.device_id)
            if forest is None:
                forest = forests[event.device_id] = DeviceForest(event.device_id, "windows")
            forest.apply(event)

    model = random_booster() if args.xgb else ProvisionalRules()
    detector = Detector(model, config=DetectorConfig(max_rows=512, max_delay_ms=50))

    def full_core() -> None:
        for lo in range(0, n, args.batch):
            detector.process(events[lo : lo + args.batch], time.time_ns() // 1_000_000)
        detector.flush(time.time_ns() // 1_000_000)

    print(
        f"{n:,} events, {args.devices} devices, batches of {args.batch}, "
        f"starts {args.starts}, skew {args.skew}"
    )
    timed("tree only (DeviceForest.apply)", n, tree_only)
    timed("full core (Detector.process + flush)", n, full_core)
    stats = detector.scorer.stats
    print(
        f"model {model.version}: predict calls {stats.predict_calls}, rows {stats.rows_scored} "
        f"({stats.rows_scored / max(stats.predict_calls, 1):.0f} rows/call), "
        f"decisions {detector.stats.decisions}"
    )


if __name__ == "__main__":
    main()
