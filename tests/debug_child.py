"""Run a C-extension test file once more in a child interpreter under the debug allocator.

`PYTHONMALLOC=debug -X dev` turns a use-after-free, a double free or a buffer overrun in an extension
into a crash of the child, which the calling test then reports with the child's output (a crash in
the main test process would lose the whole run's report)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def passes_under_debug_allocator(test_file: str, child_flag: str) -> None:
    """Run `test_file` with pytest in a child whose environment sets `child_flag=1` (the file skips
    this very test there); fail with the child's output unless it passes."""
    env = {**os.environ, "PYTHONMALLOC": "debug", child_flag: "1"}
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test_file],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    report = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"child exited {done.returncode}:\n{report}"
