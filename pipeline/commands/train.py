"""`ringfence train`: rebuild the detection model deterministically from the training data."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.cli_support import CliError

DESCRIPTION = """\
Rebuild the XGBoost model (benign + 12 ATT&CK tactics) from labelled lab recordings, simulated
attack and benign trees and captured Linux sessions, then measure it on the dev split and write
next to it: model.ubj, model.json (version, feature list, classes, thresholds, data summary),
MODEL_CARD.md, DATA.md and confusion_dev.png. Deterministic for a given --seed (fixed threads).
Takes several minutes on two cores; --cache reuses the built dataset between runs (a cache built
by other code, settings or feature version is built again and replaced). By default a second booster,
model_lone.ubj, scores the rows that carry process creation alone and show a lone-command
indicator (pipeline/model/routed.py), and both boosters' thresholds are calibrated together, under
one false-alert budget; --one-view fits a single booster instead. --full-from DIR keeps DIR's full
booster and fits the second booster only (DIR may be --out itself: the committed model rebuilds from
its own folder; its card says so).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "train",
        help="rebuild the detection model and its model card",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of the simulation and of XGBoost (default 7)"
    )
    parser.add_argument("--out", type=Path, default=None, help="model directory (default: pipeline/model)")
    parser.add_argument(
        "--otrf",
        type=Path,
        default=None,
        help="OTRF recordings folder (default: ../shared/datasets/otrf when present)",
    )
    parser.add_argument(
        "--evtx", type=Path, default=None, help="folder of .evtx samples to hunt after training"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="dataset cache path (built once, then reused)"
    )
    parser.add_argument(
        "--attacks-per-technique",
        type=int,
        default=None,
        help="simulated attack trees per generator of the main simulation (default 60)",
    )
    parser.add_argument(
        "--benign-trees",
        type=int,
        default=None,
        help="simulated benign trees of the main simulation (default 12000)",
    )
    parser.add_argument(
        "--lone-attacks-per-technique",
        type=int,
        default=None,
        help="trees per generator of the lone-command simulations (win_lone2, win_lone3; default 100, "
        "times each generator's weight)",
    )
    parser.add_argument(
        "--lone-benign-trees",
        type=int,
        default=None,
        help="benign look-alike trees of the lone-command simulations (win_benign_lone2, "
        "win_benign_lone3; default 20000)",
    )
    parser.add_argument(
        "--threshold-multiple",
        type=int,
        default=None,
        help="simulated benign trees drawn for threshold calibration alone (never trained on, never dev), "
        "as a multiple of every benign workload's trees in the corpus (default 3; 0 draws none)",
    )
    parser.add_argument("--threads", type=int, default=2, help="XGBoost threads (part of determinism)")
    parser.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="boosters per view, fitted with seeds --seed, --seed + 1, ... and averaged into one (margins), "
        "at that many times the trees to store and score (default 1: the committed recipe)",
    )
    parser.add_argument(
        "--no-recordings", action="store_true", help="skip the recording-level hunt evaluation"
    )
    parser.add_argument(
        "--one-view",
        action="store_true",
        help="fit the full booster alone, without the second booster for process-only rows that show a "
        "lone-command indicator (model_lone.ubj, pipeline/model/routed.py); not the committed recipe",
    )
    parser.add_argument(
        "--full-from",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the full booster of the two-view model in DIR, bit for bit, and fit the lone-command "
        "view's booster only (both boosters' thresholds are calibrated together, as always): for a "
        "change to that view alone (its indicators, simulations or look-alikes); the committed model's "
        "card says which model it keeps",
    )
    parser.set_defaults(func=_run)


_SIM_COUNTS = (
    ("attacks_per_technique", "attacks_per_technique"),
    ("benign_trees", "benign_trees"),
    ("lone_attacks_per_technique", "lone_view_attacks_per_technique"),
    ("lone_benign_trees", "lone_view_benign_trees"),
    ("threshold_multiple", "threshold_multiple"),
)
"""(option's argparse name, `SimConfig` field) of every simulated-tree count the command sets."""


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pipeline.scoring import MODEL_DIR
    from pipeline.training.dataset import DEFAULT_OTRF, DataConfig
    from pipeline.training.run import DEFAULT_EVTX, RunConfig, run_train
    from pipeline.training.simulate import SimConfig
    from pipeline.training.train import TrainConfig

    if args.threads < 1:
        raise CliError("--threads must be at least 1")
    if args.ensemble < 1:
        raise CliError(f"--ensemble must be at least 1, not {args.ensemble}")
    sim = SimConfig(seed=args.seed)
    for flag, field in _SIM_COUNTS:
        value = getattr(args, flag)
        if value is None:
            continue
        if value < 0:
            raise CliError(f"--{flag.replace('_', '-')} must be 0 or more, not {value}")
        sim = replace(sim, **{field: value})
    otrf = args.otrf or DEFAULT_OTRF
    if args.otrf is not None and not otrf.is_dir():
        raise CliError(f"no OTRF folder at {otrf}")
    config = RunConfig(
        out=args.out or MODEL_DIR,
        data=DataConfig(otrf_root=otrf, sim=sim),
        train=TrainConfig(seed=args.seed, nthread=args.threads, ensemble=args.ensemble),
        evtx_dir=args.evtx or DEFAULT_EVTX,
        cache=args.cache,
        recordings=not args.no_recordings,
        two_view=not args.one_view,
        full_from=args.full_from,
    )
    try:
        results = run_train(config)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"model {results.version}: {results.artifact_bytes / 1e6:.2f} MB in {config.out}")
    for title, report in results.tree_reports.items():
        print(f"  {title}: {report.alerts_per_1000_benign:.2f} false alerts per 1,000 benign trees")
    for title, hunt in results.hunts.items():
        print(
            f"  {title}: detected {hunt.rate('detected'):.0%}, "
            f"right tactic {hunt.rate('right_tactic_any'):.0%}"
        )
    return 0
