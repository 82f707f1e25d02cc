"""Incident roots: a flagged system tool run by an unflagged, blockable binary is that binary's incident.

The live Linux demo showed why: the model may score `shred` (a child of the ransomware) before its
launcher, and an alert rooted at `/usr/bin/shred` kills an exited process and blocks nothing.
"""

from __future__ import annotations

import numpy as np

from pipeline.detect import Detector
from pipeline.eventkit import EventKit
from pipeline.features import FEATURE_NAMES
from pipeline.model.provisional import ProvisionalRules
from pipeline.policy import Policy, PolicyConfig
from pipeline.scoring import CLASSES, Matrix
from schemas.alerts import Alert
from schemas.common import Mode, Platform
from schemas.verdicts import Verdict

LOCKER_SHA = "ab" * 32
_WIPE = FEATURE_NAMES.index("self_file_wipe")


class WipeOnly(ProvisionalRules):
    """Impact for rows whose own command line wipes files, benign for everything else."""

    def predict_proba(self, matrix: Matrix) -> Matrix:
        out = np.zeros((len(matrix), len(CLASSES)), dtype=np.float32)
        wipe = matrix[:, _WIPE] > 0
        out[wipe, CLASSES.index("Impact")] = 0.99
        out[wipe, 0] = 0.01
        out[~wipe, 0] = 1.0
        return out


def _alerts(launcher: str, sha256: str | None) -> tuple[list[Alert], list[Verdict]]:
    kit = EventKit(platform=Platform.LINUX)
    events = [
        kit.start("sh", "/bin/bash", "-bash", uid=1000),
        kit.start("l", launcher, f"{launcher} run.sh", parent="sh", uid=1000, sha256=sha256),
        kit.start("w", "/usr/bin/shred", "shred -u /home/bob/report.docx", parent="l", uid=1000),
    ]
    detector = Detector(WipeOnly(), policy=Policy(PolicyConfig(default_mode=Mode.BLOCK)))
    decisions = detector.process(events, kit.now_ms) + detector.flush(kit.now_ms + 1000)
    return ([d for d in decisions if isinstance(d, Alert)], [d for d in decisions if isinstance(d, Verdict)])


def test_a_flagged_system_tool_is_rooted_at_the_unknown_binary_that_ran_it() -> None:
    alerts, verdicts = _alerts("/home/bob/.cache/kworker", LOCKER_SHA)
    assert [a.process_tree.nodes[0].image for a in alerts] == ["/home/bob/.cache/kworker"]
    assert [v.artifact_id for v in verdicts] == [LOCKER_SHA]  # the binary, not shred, is blocked


def test_a_system_parent_or_one_without_a_hash_is_not_taken_as_the_root() -> None:
    for launcher, sha in (("/usr/bin/python3", LOCKER_SHA), ("/home/bob/.cache/kworker", None)):
        alerts, verdicts = _alerts(launcher, sha)
        assert [a.process_tree.nodes[0].image for a in alerts] == ["/usr/bin/shred"], launcher
        assert verdicts == []
