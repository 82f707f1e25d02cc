"""`ringfence evaluate`: measure a model on the dev split and on the .evtx samples."""

from __future__ import annotations

import argparse
from pathlib import Path

from schemas.cli_support import CliError

DESCRIPTION = """\
Measure a model the way it is judged: per-tactic precision / recall / F1 and alerts per 1,000
benign trees on the held-out dev split (lab recordings from hosts never trained on, held-out
simulated trees, captured sessions), the confusion matrix (printed and saved as PNG), and
recording-level numbers through the hunt path: the share of attack recordings with process
creation that raise an alert, the share where an alert names the right tactic, and false alerts
per 1,000 benign trees (held-out lab recordings, the .evtx samples, and hand-written lone-command
probes: one technique per file as Security 4688 shows it, plus benign admin commands, from
pipeline/training/probes.py; the probes are hunted twice, the second time with each log going on 10
minutes after its commands, and a second set of attack probes, written later, is reported apart).
Rebuilds only the dev sources (a few minutes).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="measure the model on the dev split and the .evtx samples",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="model directory (default: pipeline/model)"
    )
    parser.add_argument("--otrf", type=Path, default=None, help="OTRF recordings folder")
    parser.add_argument("--evtx", type=Path, default=None, help="folder of .evtx samples")
    parser.add_argument(
        "--png", type=Path, default=None, help="confusion matrix PNG (default: <model-dir>/confusion_dev.png)"
    )
    parser.add_argument("--seed", type=int, default=7, help="simulation seed of the dev trees (default 7)")
    parser.add_argument("--no-recordings", action="store_true", help="skip the recording-level hunt")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.errors import ModelError
    from pipeline.scoring import MODEL_DIR, is_provisional, load_model
    from pipeline.training.dataset import DEFAULT_OTRF, DataConfig, build_dataset
    from pipeline.training.evaluate import (
        render_confusion,
        render_recordings,
        render_tree_report,
        save_confusion_png,
    )
    from pipeline.training.run import DEFAULT_EVTX, RunConfig, hunt_reports, tree_reports
    from pipeline.training.simulate import SimConfig
    from pipeline.training.split import DEV

    directory = args.model_dir or MODEL_DIR
    try:
        model = load_model(directory)
    except ModelError as exc:
        raise CliError(f"cannot load the model: {exc}") from None
    if is_provisional(model):
        raise CliError(f"no trained model in {directory} (run `ringfence train`)")
    data_config = DataConfig(
        otrf_root=args.otrf or DEFAULT_OTRF, sim=SimConfig(seed=args.seed), only_split=DEV
    )
    config = RunConfig(
        out=directory, data=data_config, evtx_dir=args.evtx or DEFAULT_EVTX, recordings=not args.no_recordings
    )
    print(f"# Evaluation of {model.version}\n")
    reports = tree_reports(model, build_dataset(data_config))
    for title, report in reports.items():
        print(render_tree_report(report, title))
        print(render_confusion(report))
    for title, hunt in hunt_reports(model, config).items():
        print(render_recordings(hunt, title))
    if reports:
        png = args.png or directory / "confusion_dev.png"
        first = next(iter(reports.values()))
        if save_confusion_png(first, str(png), f"{model.version}: dev trees"):
            print(f"confusion matrix saved to {png}")
        else:
            print("matplotlib is not installed: confusion matrix PNG not written (pip install matplotlib)")
    return 0
