"""Training rows are the rows the detector scores: same selection, same features, same chunking."""

from __future__ import annotations

import numpy as np

from pipeline.detect import Detector
from pipeline.eventkit import EventKit
from pipeline.hunt import chunks
from pipeline.model.provisional import ProvisionalRules
from pipeline.scoring import Matrix
from pipeline.training.rows import replay_rows
from pipeline.training.simulate import SimConfig, simulate_attack, techniques
from pipeline.tree import ts_ms


class Recording(ProvisionalRules):
    """The provisional scorer, keeping every matrix the detector asks it to score."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Matrix] = []

    def predict_proba(self, matrix: Matrix) -> Matrix:
        self.seen.append(np.array(matrix, copy=True))
        return super().predict_proba(matrix)


def _scored_rows(events: tuple[object, ...], size: int) -> set[bytes]:
    model = Recording()
    detector = Detector(model)
    for chunk in chunks(events, size, None):  # type: ignore[arg-type]
        detector.ingest(chunk, ts_ms(chunk[-1]))
        detector.flush(ts_ms(chunk[-1]))
    return {row.tobytes() for matrix in model.seen for row in matrix}


def test_training_rows_are_rows_the_detector_scores_at_the_same_chunking() -> None:
    tech = next(t for t in techniques() if t.generate.__name__ == "linux_script_ransomware")
    tree = simulate_attack(tech, 2, SimConfig(seed=3, fragment_share=0.0))
    for size in (8, 256):
        block = replay_rows(tree.events, tree.node_labels, tree.tree_id, chunk_events=size)
        scored = _scored_rows(tree.events, size)
        assert len(block) > 0
        assert {row.tobytes() for row in block.matrix} <= scored
        assert "Impact" in block.labels


def test_small_chunks_show_the_stream_its_early_partial_views() -> None:
    tech = next(t for t in techniques() if t.generate.__name__ == "linux_script_ransomware")
    tree = simulate_attack(tech, 5, SimConfig(seed=3, fragment_share=0.0, noise_max=0))
    whole = replay_rows(tree.events, tree.node_labels, tree.tree_id, chunk_events=256)
    early = replay_rows(tree.events, tree.node_labels, tree.tree_id, chunk_events=8)
    assert len(early) > len(whole)  # the launcher is seen with few children, not only finished
    assert abs(float(early.weights.sum()) - len(set(early.keys))) < 1e-3  # one unit of weight per process
    hunted = replay_rows(tree.events, tree.node_labels, tree.tree_id,
                         chunk_span_ms=1_000, evict_before_rows=False)
    assert len(hunted) > len(whole)  # passes of a second at most, as `ringfence hunt` scores since session T


def test_training_replays_keep_the_committed_recipe_evicting_before_the_rows_are_taken() -> None:
    """The committed model's rows: a pass evicts what exited 10 minutes before its last event, before its
    rows are taken (`pipeline.training.rows`, module docstring); hunting's way keeps that process's row."""
    kit = EventKit("h")
    events = [kit.start("c", r"C:\Windows\System32\cmd.exe", "cmd.exe /c whoami /all"), kit.end("c")]
    kit.advance(11 * 60_000)
    events.append(kit.start("s", r"C:\Windows\System32\svchost.exe", "svchost.exe -k netsvcs"))  # no row
    recipe = replay_rows(events, {}, "r")
    hunted = replay_rows(events, {}, "r", chunk_span_ms=1_000, evict_before_rows=False)
    assert len(recipe) == 0
    assert set(hunted.keys) == {"h/c"}
