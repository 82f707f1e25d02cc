"""The drift plan: what `topics apply` would do and what `topics check` reports, without a broker."""

from __future__ import annotations

from pipeline.topics_admin import (
    AddPartitions,
    ConfigDiff,
    CreateTopic,
    ObservedTopic,
    SetConfigs,
    choose_profile,
    config_diffs,
    plan_topics,
)
from pipeline.topics_spec import TopicSpec

CONFIG = {"cleanup.policy": "delete", "retention.ms": "1000", "min.insync.replicas": "1"}
SPEC = TopicSpec("t.v1", 6, 1, CONFIG)


def _seen(partitions: int = 6, replication: int = 1, **config: str) -> ObservedTopic:
    merged = {k.replace("_", "."): v for k, v in config.items()}
    return ObservedTopic("t.v1", partitions, replication, {**CONFIG, **merged})


def test_missing_topic_is_created() -> None:
    plan = plan_topics([SPEC], {})
    assert plan.actions == (CreateTopic(SPEC),)
    assert plan.has_drift
    assert plan.lines()[0].startswith("create t.v1 partitions=6 replication=1 cleanup.policy=delete")


def test_matching_topic_needs_nothing() -> None:
    plan = plan_topics([SPEC], {"t.v1": _seen()})
    assert plan.actions == ()
    assert not plan.has_drift
    assert plan.lines() == []


def test_changed_value_and_unmanaged_override_are_drift() -> None:
    seen = _seen(retention_ms="5", segment_ms="100")
    plan = plan_topics([SPEC], {"t.v1": seen})
    assert plan.actions == (SetConfigs(SPEC, (
        ConfigDiff("retention.ms", "5", "1000"), ConfigDiff("segment.ms", "100", None))),)
    assert plan.lines() == ["alter t.v1: retention.ms: 5 -> 1000; segment.ms: remove unmanaged override 100"]


def test_config_missing_on_topic_is_drift() -> None:
    seen = ObservedTopic("t.v1", 6, 1, {"cleanup.policy": "delete"})
    diffs = config_diffs(SPEC.config, seen.config)
    assert [d.describe() for d in diffs] == [
        "min.insync.replicas: (default) -> 1", "retention.ms: (default) -> 1000"]


def test_cleanup_policy_order_is_not_drift() -> None:
    assert config_diffs({"cleanup.policy": "compact,delete"}, {"cleanup.policy": "delete, compact"}) == ()
    assert config_diffs({"cleanup.policy": "compact"}, {"cleanup.policy": "compact,delete"}) != ()


def test_fewer_partitions_grow_more_are_a_note() -> None:
    grow = plan_topics([SPEC], {"t.v1": _seen(partitions=3)})
    assert grow.actions == (AddPartitions("t.v1", 3, 6),)
    more = plan_topics([SPEC], {"t.v1": _seen(partitions=8)})
    assert more.actions == ()
    assert not more.has_drift
    assert more.lines() == [
        "note: t.v1: has 8 partitions, file says 6 (partitions cannot shrink; more is fine)"]


def test_replication_mismatch_is_unfixable_drift() -> None:
    plan = plan_topics([SPEC], {"t.v1": _seen(replication=3)})
    assert plan.actions == ()
    assert plan.has_drift
    assert plan.lines() == [
        "cannot fix: t.v1: replication factor 3, file says 1 (needs a partition reassignment)"]


def test_topics_outside_the_spec_are_left_alone() -> None:
    other = ObservedTopic("someone.elses", 1, 1, {"retention.ms": "1"})
    assert plan_topics([SPEC], {"t.v1": _seen(), "someone.elses": other}).actions == ()


def test_auto_profile_follows_broker_count() -> None:
    profiles = {"production": 3, "local": 1}
    assert choose_profile("auto", 1, profiles) == "local"
    assert choose_profile("auto", 3, profiles) == "production"
    assert choose_profile("production", 1, profiles) == "production"
    assert choose_profile("auto", 5, {"local": 1}) == "local"
