"""`ringfence hunt PATH...`: run the detection path offline over recorded files."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from pipeline.hunt import FileSummary, Found
    from pipeline.scoring import Model

DESCRIPTION = """\
Run exactly the stream's detection path (trees, windows, features, the model, the policy in audit
mode) over recorded files and print what it would have alerted on — "what would this model have
blocked?" before switching a device group from audit to block. Events are scored in file order, in
passes of at most 256 events and one second of event time, as promptly as the stream scores them.

Input: .evtx files, Sysmon JSON Lines (flat records with EventID, Image... at the top level as
winlogbeat-style shippers write them; winlogbeat documents, nested or with dotted keys such as
winlog.event_data.Image; evtx-dump style System/EventData fields; Splunk exports with EventCode,
source XmlWinEventLog:<channel> and _time; nxlog's, dated by the local EventTime when nothing else
dates them), BehaviorEvent JSON Lines (what agents publish), gzip or not; files or folders (searched
recursively). A record that names no channel is read as Sysmon or Security by its own fields, and
one that names no host as the device "unnamed-host". Each file is hunted on its own. Malformed files
and lines are reported in the per-file summary (stderr) and skipped; they never stop the hunt.

Output (stdout): a table by default; --json prints one JSON object per alert
({"path": <input file>, "alert": <Alert record>}); --ocsf prints OCSF Detection Findings with the
input path under "unmapped". Progress and the per-file summaries go to stderr.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "hunt",
        help="run the detection model offline over .evtx / JSON Lines files",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders to hunt")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_const",
        dest="fmt",
        const="json",
        help="JSON Lines: each Alert with the path of its input file",
    )
    output.add_argument(
        "--ocsf", action="store_const", dest="fmt", const="ocsf", help="JSON Lines of OCSF Detection Findings"
    )
    parser.add_argument(
        "--min-score", type=float, default=0.0, help="only alerts scoring at least this (0..1)"
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="model directory (default: the committed pipeline/model)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=_run, fmt="table")


def _run(args: argparse.Namespace) -> int:
    from pipeline.hunt import FileSummary, hunt_file

    if not 0.0 <= args.min_score <= 1.0:
        raise CliError("--min-score must be between 0 and 1")
    missing = [str(p) for p in args.paths if not p.exists()]
    if len(missing) == len(args.paths):
        raise CliError(f"no such file or folder: {', '.join(missing)}")
    if not getattr(args, "verbose", False):  # each alert is printed on stdout: its log line would repeat it
        logging.getLogger("pipeline.detect").setLevel(logging.WARNING)
    model = _model(args.model_dir)
    files = _files(args.paths, missing)
    progress = None if args.quiet else _progress
    if args.fmt == "table":
        print(_HEADER)
    summaries: list[FileSummary] = [FileSummary(p, error="no such file or folder") for p in missing]
    for summary in summaries:
        print(summary.line(), file=sys.stderr)
    for path in files:
        summary = FileSummary(str(path))
        summaries.append(summary)
        for found in hunt_file(path, model, summary, min_score=args.min_score, progress=progress):
            print(_format(found, args.fmt), flush=True)
        print(summary.line(), file=sys.stderr)
    _totals(summaries)
    return 0


def _model(directory: Path | None) -> Model:
    from pipeline.errors import ModelError
    from pipeline.scoring import MODEL_DIR, load_model

    try:
        return load_model(directory or MODEL_DIR)
    except ModelError as exc:
        raise CliError(f"cannot load the model: {exc}") from None


def _files(paths: list[Path], missing: list[str]) -> list[Path]:
    from pipeline.hunt import expand

    return expand([p for p in paths if str(p) not in missing])


def _progress(line: str) -> None:
    print(f"... {line}", file=sys.stderr, flush=True)


_HEADER = f"{'FILE':<28}  {'FIRST SEEN':<19}  {'HOST':<16}  {'SCORE':<5}  {'DETECTION':<60}  ROOT PROCESS"


def _format(found: Found, fmt: str) -> str:
    import orjson

    from pipeline.soc.terminal import safe
    from schemas.ocsf import alert_to_ocsf

    alert = found.alert
    if fmt == "json":
        return orjson.dumps({"path": found.path, "alert": alert.model_dump(mode="json")}).decode()
    if fmt == "ocsf":
        finding = alert_to_ocsf(alert)
        finding.setdefault("unmapped", {})["input_path"] = found.path
        return orjson.dumps(finding).decode()
    root = next(
        (n for n in alert.process_tree.nodes if n.process_key == alert.process_tree.root_process_key),
        alert.process_tree.nodes[0],
    )
    what = f"{root.image or '?'} {root.command_line or ''}".strip()
    cells = (
        Path(found.path).name[-28:],
        alert.first_seen.strftime("%Y-%m-%d %H:%M:%S"),
        (alert.hostname or alert.device_id)[:16],
        f"{alert.score:.2f}",
        alert.detection_name,
    )
    return safe(
        "  ".join(f"{c:<{w}}" for c, w in zip(cells, (28, 19, 16, 5, 60), strict=True)) + "  " + what[:120]
    )


def _totals(summaries: list[FileSummary]) -> None:
    alerts = sum(sum(s.alerts.values()) for s in summaries)
    bad = sum(1 for s in summaries if s.error)
    print(
        f"hunted {len(summaries)} file(s): {sum(s.events_read for s in summaries)} records read, "
        f"{sum(s.trees for s in summaries)} trees, {alerts} alert(s)"
        + (f", {bad} file(s) skipped" if bad else ""),
        file=sys.stderr,
    )
