"""The checkpoint schedule: spaced by the state writes' CPU share, bounded, and at once when quiet."""

from __future__ import annotations

import pytest

from pipeline.checkpoints import MAX_STRETCH, STATE_CPU_SHARE, CommitSchedule, spaced_interval_ms


def test_cheap_checkpoints_keep_the_interval_and_costly_ones_stretch_it_up_to_the_bound() -> None:
    assert spaced_interval_ms(1_000, 1_000, state_cpu_s=0.001, rest_cpu_s=0.5) == 1_000
    twice = 2 * STATE_CPU_SHARE * 0.5  # state writes at twice the allowed share of the rest
    assert spaced_interval_ms(1_000, 1_000, state_cpu_s=twice, rest_cpu_s=0.5) == pytest.approx(2_000)
    assert spaced_interval_ms(1_000, 1_000, state_cpu_s=5.0, rest_cpu_s=0.01) == 1_000 * MAX_STRETCH


def test_the_schedule_waits_after_a_costly_commit_unless_nothing_is_fetched() -> None:
    cpu = [0.0]
    schedule = CommitSchedule(1_000, cpu_clock=lambda: cpu[0])
    schedule.start(0)
    schedule.fetched(900)
    assert not schedule.due(999) and schedule.due(1_000)
    cpu[0] = 1.0  # one CPU second, of which the state writes took 0.5: more than the share
    schedule.committed(1_000, state_cpu_s=0.5)
    schedule.fetched(1_900)
    assert not schedule.due(2_000)  # a busy worker: the next checkpoint is later than an interval
    assert schedule.due(1_000 + MAX_STRETCH * 1_000)
    assert schedule.due(2_400)  # nothing fetched for half an interval, an interval after the commit
