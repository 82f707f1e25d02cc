"""`bench.core_replay --stages`' row shapes: they count the rows the detector really scored and leave the
detector as it was (its features, its decisions, its own `row_contexts`)."""

from __future__ import annotations

from bench._pipeline_data import records
from bench.core_replay import replay, replay_inline, row_shapes
from pipeline import detect


def test_row_shapes_count_every_scored_row_and_change_nothing_the_replay_digests() -> None:
    values = [value for _, value in records(6_000, 50, 20)]
    plain = replay(values, "fast")
    shape: dict[str, int] = {}
    own = detect.row_contexts
    with row_shapes(shape):
        tapped = replay(values, "fast")
    assert detect.row_contexts is own
    assert shape["rows"] == tapped["rows"] == plain["rows"] > 0
    assert 0 < shape["leaves"] <= shape["rows"]
    assert shape["descendants"] > 0  # the generator starts processes under processes it started
    assert (tapped["features_sha256"], tapped["decisions_sha256"]) == (
        plain["features_sha256"],
        plain["decisions_sha256"],
    )


def test_the_worker_order_replay_decides_the_same_whether_flushes_wait_decode_or_take_ahead() -> None:
    """`--overlap`'s three modes replay the same records in the worker's order: each flush at once, its
    predict overlapped with decoding the next records, or with taking them into the trees (what the
    worker does). The flushes fall in the same places, so the features and decisions are the same, and
    the take mode really took records ahead."""
    values = [value for _, value in records(12_000, 50, 40)]
    runs = {mode: replay_inline(values, mode) for mode in ("synchronous", "decode", "take")}
    digests = {mode: (r["features_sha256"], r["decisions_sha256"], r["flushes"]) for mode, r in runs.items()}
    assert len(set(digests.values())) == 1 and runs["take"]["decisions"] > 0
    assert runs["synchronous"]["overlap"] == (0, 0, 0)
    assert runs["take"]["events"] == runs["synchronous"]["events"] == 12_000
    assert runs["take"]["taken"] > 0
    assert runs["decode"]["taken"] == runs["synchronous"]["taken"] == 0
