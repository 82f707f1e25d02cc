"""The followers' shared state file: positions per stream survive a restart; a failed save is a StateError."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.command_follower import CommandStore
from agents.enforcement_errors import StateError
from agents.mode_follower import ModeStore


@pytest.mark.parametrize("store_type", [CommandStore, ModeStore])
def test_positions_are_kept_per_stream_across_a_reopen(
    tmp_path: Path, store_type: type[CommandStore] | type[ModeStore]
) -> None:
    path = tmp_path / "state.db"
    store = store_type(path)
    store.save_position("a", 0, 5)
    store.save_position("a", 1, 7)
    store.save_position("b", 0, 9)
    store.save_position("a", 0, 6)  # a later position replaces the earlier one
    store.close()
    reopened = store_type(path)
    assert reopened.positions("a") == {0: 6, 1: 7}
    assert reopened.positions("b") == {0: 9}
    assert reopened.positions("never-seen") == {}
    reopened.close()


def test_a_save_that_fails_names_the_file_and_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "commands.db"
    store = CommandStore(path)
    store._db.execute("DROP TABLE positions")  # a damaged file: the save cannot succeed
    with pytest.raises(StateError, match=r"commands\.db: cannot save command state"):
        store.save_position("t", 0, 1)
    store.close()
