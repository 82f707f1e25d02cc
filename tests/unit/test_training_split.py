"""The split is by recording and host: no recording and no host ever appears on both sides."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.training.split import CALIB, DEV, TRAIN, hashed_split, lab_of, recording_splits

_HOSTS = ["ws5.corp.local", "WS5", "ws6", "dc1.corp.local", "srv9", "pedro01", "mkt01.lab", "mkt01"]


def _training_side(split: str) -> bool:
    return split in (TRAIN, CALIB)


def _check(hosts_by_recording: dict[str, list[str]]) -> None:
    splits = recording_splits(hosts_by_recording)
    assert set(splits) == set(hosts_by_recording)
    sides: dict[str, set[bool]] = {}
    for recording, hosts in hosts_by_recording.items():
        for host in hosts:
            sides.setdefault(host.split(".")[0].lower(), set()).add(_training_side(splits[recording]))
    assert all(len(s) == 1 for s in sides.values()), sides


def test_shared_hosts_put_recordings_in_one_lab_whatever_the_spelling() -> None:
    hosts = {"a": ["WS5.corp.local"], "b": ["ws5", "dc1"], "c": ["dc1.corp.local"], "d": ["pedro01"]}
    labs = lab_of(hosts)
    assert labs["a"] == labs["b"] == labs["c"] != labs["d"]
    splits = recording_splits(hosts)
    assert {splits["a"], splits["b"], splits["c"]} <= {TRAIN, CALIB}
    assert splits["d"] == DEV
    _check(hosts)


@given(
    st.dictionaries(
        st.text(alphabet="abcdefgh", min_size=1, max_size=6),
        st.lists(st.sampled_from(_HOSTS), min_size=1, max_size=3),
        min_size=1,
        max_size=25,
    )
)
def test_no_host_is_ever_on_both_sides(hosts: dict[str, list[str]]) -> None:
    _check(hosts)


def test_hashed_split_is_deterministic_and_roughly_70_15_15() -> None:
    ids = [f"sim:windows:T1003:lsass_dump:{i}" for i in range(4000)]
    first = [hashed_split(i) for i in ids]
    assert first == [hashed_split(i) for i in ids]
    shares = {name: first.count(name) / len(first) for name in (TRAIN, CALIB, DEV)}
    assert 0.65 < shares[TRAIN] < 0.75 and 0.12 < shares[CALIB] < 0.18 and 0.12 < shares[DEV] < 0.18
