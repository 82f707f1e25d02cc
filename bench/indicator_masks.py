"""CPU per command line of the indicator masks a process start pays when no cache has its line.

Why: `bench.core_replay`'s generator starts processes with eight fixed command lines, so every mask
there is a cache hit. A fleet's lines carry their own arguments (ids, temporary names, URLs, whole
scripts): the OTRF recordings' process starts carry 39 % as many distinct lines as there are starts,
and each line not in the caches costs `indicator_mask` and, for a line without indicators, `lone_mask`
-- a regular-expression search per indicator whose prefilter passes, through each pattern's linear
form for texts of `LINEAR_FROM` characters or more. This times, in one process and round after round,
the reference (one indicator at a time, `indicators._mask_of`) and what the stream runs
(`indicators._Matcher`: the prefilters at once, then each passing pattern alternative by alternative,
a long text's linear forms part by part), on every
distinct command line of ../shared/datasets/otrf (events 1 and 4688), uncached. Before timing,
every line's two masks are checked equal.

    .venv/bin/python -m bench.indicator_masks [--rounds 5] [--datasets ../shared/datasets/otrf]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.indicators import _INDEXED, _LONE_INDEXED, LINEAR_FROM, _lone_mask, _lone_text, _mask, _mask_of

ROOT = Path(__file__).resolve().parents[1]


def command_lines(folder: Path) -> list[str]:
    """Every distinct non-empty command line of the process starts (Sysmon 1, Security 4688)."""
    lines: set[str] = set()
    for path in sorted(folder.rglob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for raw in handle:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                line = event.get("CommandLine") if str(event.get("EventID")) in ("1", "4688") else None
                if isinstance(line, str) and line:
                    lines.add(line)
    return sorted(lines)


def _reference(text: str) -> tuple[int, int]:
    return _mask_of(text, _INDEXED), _mask_of(_lone_text(text), _LONE_INDEXED)


def _matcher(text: str) -> tuple[int, int]:
    return _mask(text), _lone_mask(text)


def _seconds(masks: Callable[[str], tuple[int, int]], lines: list[str]) -> float:
    started = time.process_time()
    for line in lines:
        masks(line)
    return time.process_time() - started


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets" / "otrf")
    args = parser.parse_args()
    if not args.datasets.is_dir():
        raise SystemExit(f"no recordings at {args.datasets} (give --datasets)")
    lines = command_lines(args.datasets)
    if not lines:
        raise SystemExit(f"no process-start command lines under {args.datasets}")
    wrong = [line for line in lines if _reference(line) != _matcher(line)]
    if wrong:
        raise SystemExit(f"{len(wrong)} lines get other masks than the reference, e.g. {wrong[0][:120]!r}")
    long = [x for x in lines if len(x) >= LINEAR_FROM]
    groups = {"all": lines, f"< {LINEAR_FROM} chars": [x for x in lines if len(x) < LINEAR_FROM],
              f">= {LINEAR_FROM} chars": long}  # fmt: skip
    print(f"{len(lines):,} distinct command lines ({len(long)} of {LINEAR_FROM}+ characters); both masks "
          f"of each, uncached, CPU us per line, median [min..max] of {args.rounds} "
          "alternated rounds; every line's masks equal the reference's")  # fmt: skip
    for title, chosen in groups.items():
        if not chosen:
            continue
        reference, matcher = [], []
        for _ in range(max(1, args.rounds)):
            reference.append(_seconds(_reference, chosen) / len(chosen) * 1e6)
            matcher.append(_seconds(_matcher, chosen) / len(chosen) * 1e6)
        ratio = statistics.median(r / m for r, m in zip(reference, matcher, strict=True))
        print(f"  {title:>15s} ({len(chosen):5,} lines): reference {statistics.median(reference):7.1f} "
              f"[{min(reference):.1f}..{max(reference):.1f}], matcher {statistics.median(matcher):7.1f} "
              f"[{min(matcher):.1f}..{max(matcher):.1f}]: {ratio:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
