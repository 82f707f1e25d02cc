"""Capture real benign Linux process trees with the live agent while ordinary work runs.

Run as `python -m pipeline.training.capture --out pipeline/model/data/linux_work.jsonl.gz`.
The collector is the agent's own `agents.linux.LinuxLiveSource` (netlink connector, or its /proc
fallback); this module only starts it, runs a few everyday workloads in a temporary folder (pip
install into a fresh venv, `make` of a tiny C project, pytest of a tiny test suite, git init /
commit / clone / push of a local repository, and an admin poking around with ps/df/ss/tar), then
keeps the events of those workloads' process subtrees and writes them as BehaviorEvent JSON Lines.

Only the workloads' own subtrees are kept: the machine is shared, and whatever else runs on it
(other people's test suites, possibly simulating attacks) must not be recorded as benign.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agents.linux.source import LinuxLiveConfig, LinuxLiveSource, ProcessMode
from schemas.events import BehaviorEvent, ProcessStart

log = logging.getLogger(__name__)
MAX_EVENTS = 20_000
_C_MAIN = '#include <stdio.h>\nint add(int, int);\nint main(void) { printf("%d\\n", add(2, 3)); return 0; }\n'
_C_LIB = "int add(int a, int b) { return a + b; }\n"
_MAKEFILE = (
    "all: app\napp: main.o lib.o\n\tcc -o app main.o lib.o\n"
    "%.o: %.c\n\tcc -O2 -Wall -c $< -o $@\nclean:\n\trm -f *.o app\n"
)
_TESTS = (
    "import subprocess\n\ndef test_add():\n    assert 1 + 1 == 2\n\n"
    "def test_echo():\n    assert subprocess.run(['echo', 'ok'], capture_output=True).returncode == 0\n"
)


def workloads(work: Path, python: str) -> list[tuple[str, list[str], Path]]:
    """(name, argv, cwd) of the ordinary work to record, run in order."""
    (work / "cproj").mkdir()
    (work / "cproj" / "main.c").write_text(_C_MAIN)
    (work / "cproj" / "lib.c").write_text(_C_LIB)
    (work / "cproj" / "Makefile").write_text(_MAKEFILE)
    (work / "tests").mkdir()
    (work / "tests" / "test_small.py").write_text(_TESTS)
    git = "git -c user.email=dev@example.invalid -c user.name=dev"
    return [
        ("venv", [python, "-m", "venv", str(work / "venv")], work),
        (
            "pip",
            [
                str(work / "venv" / "bin" / "pip"),
                "install",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "six",
            ],
            work,
        ),
        ("make", ["make", "-C", str(work / "cproj")], work),
        ("make-clean", ["make", "-C", str(work / "cproj"), "clean"], work),
        ("pytest", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(work / "tests")], work),
        (
            "git",
            [
                "sh",
                "-c",
                f"git init -q repo && cd repo && echo hello > README && {git} add README && "
                f"{git} commit -qm init && cd .. && git clone -q repo clone && cd clone && "
                "echo more >> README && "
                f"{git} commit -qam more && git push -q origin HEAD:side && git log --oneline | head -3",
            ],
            work,
        ),
        (
            "admin",
            [
                "sh",
                "-c",
                "ps aux | head -5; df -h | head -3; uname -a; id; cat /etc/os-release | head -2; "
                "ls -la /tmp | head -5; ss -tln | head -5; tar czf backup.tgz cproj tests; ls -la",
            ],
            work,
        ),
    ]


async def capture(out: Path, device_id: str, process_mode: ProcessMode) -> int:
    """Record the workloads; return the number of events written."""
    work = Path(tempfile.mkdtemp(prefix="rf-capture-"))
    source = LinuxLiveSource(
        LinuxLiveConfig(device_id=device_id, watch_paths=(str(work),), process_mode=process_mode)
    )
    events: list[BehaviorEvent] = []
    task = asyncio.create_task(_collect(source, events))
    try:
        await asyncio.wait_for(source.ready.wait(), timeout=30)
        log.info("live source ready (process collector: %s)", source.process_mode)
        pids = [
            pid
            for name, argv, cwd in workloads(work, sys.executable)
            if (pid := await _run(name, argv, cwd)) is not None
        ]
        await asyncio.sleep(2.0)  # let exits and late file events arrive
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        shutil.rmtree(work, ignore_errors=True)
    kept = subtrees(events, set(pids))[:MAX_EVENTS]
    with gzip.open(out, "wt", encoding="utf-8") as handle:
        for event in kept:
            handle.write(event.model_dump_json() + "\n")
    log.info("kept %d of %d events from %d workload processes -> %s", len(kept), len(events), len(pids), out)
    return len(kept)


async def _collect(source: LinuxLiveSource, sink: list[BehaviorEvent]) -> None:
    async for event in source.events():
        sink.append(event)


async def _run(name: str, argv: Sequence[str], cwd: Path) -> int | None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError as exc:
        log.warning("workload %s could not start: %s", name, exc)
        return None
    try:
        code = await asyncio.wait_for(proc.wait(), timeout=300)
    except TimeoutError:
        proc.kill()
        code = await proc.wait()
    log.info("workload %s (pid %d) exited %d", name, proc.pid, code)
    return proc.pid


def subtrees(events: Sequence[BehaviorEvent], root_pids: set[int]) -> list[BehaviorEvent]:
    """Events of the processes started with one of `root_pids` and of all their descendants."""
    parent: dict[str, str | None] = {}
    roots: set[str] = set()
    for event in events:
        if isinstance(event.payload, ProcessStart):
            parent[event.process_key] = event.parent_process_key
            if event.payload.pid in root_pids:
                roots.add(event.process_key)
    keep: dict[str, bool] = {}

    def inside(key: str | None, depth: int = 0) -> bool:
        if key is None or depth > 64:
            return False
        if key not in keep:
            keep[key] = key in roots or inside(parent.get(key), depth + 1)
        return keep[key]

    return [e for e in events if inside(e.process_key)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pipeline.training.capture`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="BehaviorEvent JSON Lines (.jsonl.gz) to write"
    )
    parser.add_argument("--device-id", default="capture-linux-1", help="device id stamped on the events")
    parser.add_argument("--process-mode", choices=("auto", "netlink", "poll"), default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    modes: dict[str, ProcessMode] = {"auto": "auto", "netlink": "netlink", "poll": "poll"}
    count = asyncio.run(capture(args.out, args.device_id, modes[args.process_mode]))
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
