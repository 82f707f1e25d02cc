"""`bench.core_instructions`: instruction counts that repeat, and clear refusals without its tools."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import core_instructions

ROOT = Path(__file__).resolve().parents[2]


def test_the_same_code_counts_the_same_instructions_twice() -> None:
    """The point of the tool: this tree against itself gives the same count per region, to within 0.1 % (a
    change it is used to show is 1-5 %; runs differ by a few instructions in a million, as objects'
    addresses and so a few hash probes do). valgrind is on every machine this project runs on (the
    environment's notes)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.core_instructions", "--events", "300", "--against", str(ROOT)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.findall(r"decode\s+([\d,]+)\s+detector\s+([\d,]+)\s+decisions (\d+)", done.stdout)
    assert len(found) == 2, done.stdout
    (decode, detector, decisions), (decode2, detector2, decisions2) = (
        tuple(int(n.replace(",", "")) for n in row) for row in found
    )
    assert decisions == decisions2, done.stdout  # the same replay both times
    assert abs(decode - decode2) <= decode / 1000, done.stdout
    assert abs(detector - detector2) <= detector / 1000, done.stdout
    assert 500 < decode < 100_000 and 1_000 < detector < 1_000_000  # per event: a real replay was counted
    assert "ratio     decode 1.000  detector 1.000" in done.stdout


def test_without_valgrind_it_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_instructions.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "argv", ["core_instructions", "--events", "300"])
    with pytest.raises(SystemExit, match="needs valgrind"):
        core_instructions.main()


def test_records_go_to_the_child_byte_for_byte(tmp_path: Path) -> None:
    values = [b"", b"{}", bytes(range(256)) * 3, "é".encode()]
    core_instructions._write(values, tmp_path / "r.bin")
    assert core_instructions._read(tmp_path / "r.bin") == values
