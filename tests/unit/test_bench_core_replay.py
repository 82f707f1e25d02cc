"""`bench.core_replay --stages`' row shapes: they count the rows the detector really scored and leave the
detector as it was (its features, its decisions, its own `row_contexts`)."""

from __future__ import annotations

from bench._pipeline_data import records
from bench.core_replay import replay, row_shapes
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
