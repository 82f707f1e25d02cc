"""`ringfence demo [--mode audit|block]`: the feedback loop end to end on this machine (pipeline/demo.py)."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from typing import TYPE_CHECKING

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from pipeline.demo import DemoResult

DESCRIPTION = """\
Runs the whole loop on this machine against RINGFENCE_KAFKA_BOOTSTRAP (`make demo` starts a local
broker when none is set): a pipeline worker, the live Linux agent of this machine (in --mode) and
simulated devices, then a safe ransomware-like attack inside a temporary folder: a private copy of
bash with a unique sha256 plants a cron entry in a crontab path inside the folder, encrypts the
files it created there one by one (openssl enc + shred), then copies a fake shadow file and drops a
ransom note. The demo prints the alert, the kill on this machine (block mode) with the number of
files encrypted before it, the verdict reaching every simulated device, and a simulated device
refusing the same binary; then a summary. The worker scores with the trained model; the run exits 0
only when the first alert on the attack binary's tree names one of the attack's steps (Impact,
Persistence, CredentialAccess) and, in block mode, that binary is killed, blocked fleet-wide and
refused on re-launch. Everything it started is stopped (also on Ctrl-C).

Needs Linux (root for the kernel's process-events connector; otherwise the agent polls /proc and
may miss short-lived processes), bash, openssl and shred. In block mode the live agent enforces on
the whole machine: run the demo on a machine where that is acceptable.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="the end-to-end demo: attack, alert, kill, fleet-wide block",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("audit", "block"), default="block",
                        help="mode of this machine's agent (default block; audit: alert only)")
    parser.add_argument("--devices", type=int, default=20, help="simulated devices (default 20)")
    parser.add_argument("--files", type=int, default=40,
                        help="victim files the attack creates (default 40)")
    parser.add_argument("--delay-s", type=float, default=0.5, help="pause between two encrypted files")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and the topics")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from pipeline.demo import DemoOptions, run_demo
    from pipeline.errors import PipelineError
    from schemas.common import Mode
    from schemas.topics import KafkaSettings

    if platform.system() != "Linux":
        raise CliError("the demo's live agent needs Linux")
    if not 1 <= args.devices <= 500 or not 1 <= args.files <= 1000 or args.delay_s < 0:
        raise CliError("--devices must be 1..500, --files 1..1000, --delay-s >= 0")
    if not args.verbose:  # the services' INFO lines are in the demo folder's logs
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("aiokafka").setLevel(logging.ERROR)  # leader elections of fresh topics
    kafka = KafkaSettings()
    if os.geteuid() != 0:
        _say("note: not root: the agent polls /proc and may miss short-lived processes of the attack")
    options = DemoOptions(mode=Mode(args.mode), simulated=args.devices, files=args.files,
                          delay_s=args.delay_s, keep=args.keep)
    _say(f"ringfence demo — mode {args.mode}, Kafka {kafka.bootstrap_servers}\n")
    try:
        result = asyncio.run(run_demo(kafka, options, _say))
    except PipelineError as exc:
        raise CliError(f"demo failed: {exc} (its folder is kept, see logs/ in it)", exit_code=1) from None
    _summary(result, args.keep)
    return 0 if result.ok else 1


def _say(line: str) -> None:
    print(line, flush=True)


def _summary(r: DemoResult, keep: bool) -> None:
    alert = r.alerts[0] if r.alerts else None
    kills = [a for a in r.actions if a.action == "kill_process_tree"]
    lines = [f"\nSummary (mode {r.mode})"]
    lines.append(f"  detection    {alert.detection_name} (tactic {alert.tactic}, score {alert.score:.2f})"
                 if alert else "  detection    NO ALERT from this machine")
    for extra in r.alerts[1:]:
        lines.append(f"               {extra.detection_name} (tactic {extra.tactic})")
    call = ("yes: the first alert on rf-locker's tree names a step it takes" if r.right_call
            else "NO: no alert on rf-locker's tree, or its first names none of the attack's steps")
    lines.append(f"  right call   {call}")
    if r.locker_exit is not None and r.locker_exit < 0:
        took = (f" (kill done {kills[0].latency_ms:.0f} ms after the command)"
                if kills and kills[0].latency_ms is not None else "")
        lines.append(f"  containment  rf-locker killed on this machine after {r.encrypted} of {r.files} "
                     f"files were encrypted{took}")
    else:
        lines.append(f"  containment  none: the attack ran to its end ({r.encrypted} of {r.files} files)")
    if r.fanout_ms:
        ms = sorted(r.fanout_ms)
        lines.append(f"  fan-out      verdict applied by {len(ms)} simulated devices, max {ms[-1]:.0f} ms "
                     "after publication")
    else:
        lines.append("  fan-out      no verdict (audit mode publishes alerts only)")
    if r.refused is not None:
        refused, killed = r.refused, r.relaunch_exit is not None and r.relaunch_exit < 0
        who = (f"{refused.device_id} killed it at start" if refused.outcome == "succeeded"
               else f"stopped at start by this machine's agent before {refused.device_id}")
        lines.append(f"  re-launch    {'refused: ' + who if killed else 'NOT refused: it kept running'}")
    where = f"kept in {r.root}" if keep or not r.ok else "removed"
    lines.append(f"  footprint    everything was written under {r.root} ({where})")
    verdict = "as expected" if r.ok else "NOT as expected (see the logs in the folder)"
    lines.append(f"  result       {verdict}")
    print("\n".join(lines), file=sys.stdout, flush=True)
