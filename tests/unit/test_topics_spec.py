"""deploy/topics.yaml: the shipped file matches the DESIGN contract; malformed files name the bad line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.topics_spec import TopicSpecError, load_topics_file, parse_topics_yaml
from schemas import topics

REPO = Path(__file__).resolve().parents[2]
DAY_MS = 24 * 3600 * 1000

MINIMAL = """\
version: 1
profiles:
  production: {replication_factor: 3, min_insync_replicas: 2}
  local: {replication_factor: 1, min_insync_replicas: 1}
topics:
  - name: a.v1
    partitions: 4
    config:
      cleanup.policy: delete
      retention.ms: 1000
  - name: b.v1
    partitions: 2
    config:
      cleanup.policy: compact
"""


def test_shipped_file_covers_every_contract_topic() -> None:
    names = [t.name for t in load_topics_file(REPO / "deploy" / "topics.yaml").topics]
    assert set(topics.ALL_TOPICS) <= set(names)
    assert all(re.fullmatch(r"ringfence\.[a-z0-9.-]+\.v[0-9]+", name) for name in names), names


def test_shipped_file_matches_design_policies() -> None:
    by_name = {t.name: t for t in load_topics_file(REPO / "deploy" / "topics.yaml").topics}
    retention_days = {topics.EVENTS: 7, topics.EVENTS_DLQ: 30, topics.ALERTS: 90, topics.COMMANDS: 14,
                      topics.ACTIONS: 30}
    for name, days in retention_days.items():
        assert by_name[name].config["cleanup.policy"] == "delete"
        assert by_name[name].config["retention.ms"] == str(days * DAY_MS), name
    for name in (topics.VERDICTS, topics.DEVICES):
        assert by_name[name].config["cleanup.policy"] == "compact"
        assert "retention.ms" not in by_name[name].config
    assert by_name[topics.EVENTS].partitions == 12
    # every topic is stored zstd-compressed; worker-state's values are zstd frames the worker made itself
    assert by_name[topics.WORKER_STATE].config["compression.type"] == "producer"
    others = [t for t in by_name.values() if t.name != topics.WORKER_STATE]
    assert all(t.config["compression.type"] == "zstd" for t in others)


def test_worker_state_follows_the_events_partition_count() -> None:
    spec = load_topics_file(REPO / "deploy" / "topics.yaml")
    resolved = {s.name: s.partitions for s in spec.resolve("local", partitions={topics.EVENTS: 20})}
    assert resolved[topics.WORKER_STATE] == resolved[topics.EVENTS] == 20


def test_production_and_local_profiles_differ_only_in_replication() -> None:
    spec = load_topics_file(REPO / "deploy" / "topics.yaml")
    production = {s.name: s for s in spec.resolve("production")}
    local = {s.name: s for s in spec.resolve("local")}
    replication = {(s.replication_factor, s.config["min.insync.replicas"]) for s in production.values()}
    assert replication == {(3, "2")}
    assert {(s.replication_factor, s.config["min.insync.replicas"]) for s in local.values()} == {(1, "1")}
    for name, spec_p in production.items():
        assert spec_p.partitions == local[name].partitions
        assert {k: v for k, v in spec_p.config.items() if k != "min.insync.replicas"} == {
            k: v for k, v in local[name].config.items() if k != "min.insync.replicas"}


def test_resolve_applies_prefix_and_partition_override() -> None:
    specs = parse_topics_yaml(MINIMAL).resolve("local", prefix="t-42.", partitions={"a.v1": 9})
    assert [(s.name, s.partitions) for s in specs] == [("t-42.a.v1", 9), ("t-42.b.v1", 2)]
    assert specs[0].config == {"cleanup.policy": "delete", "retention.ms": "1000", "min.insync.replicas": "1"}


@pytest.mark.parametrize(("call", "match"), [
    (lambda f: f.resolve("staging"), "unknown profile 'staging'"),
    (lambda f: f.resolve("local", partitions={"nope.v1": 3}), "unknown topic.*nope.v1"),
    (lambda f: f.resolve("local", partitions={"a.v1": 0}), "at least 1"),
    (lambda f: f.resolve("local", prefix="bad prefix/"), "not a valid Kafka topic name"),
])
def test_resolve_rejects_bad_requests(call: object, match: str) -> None:
    with pytest.raises(TopicSpecError, match=match):
        call(parse_topics_yaml(MINIMAL))  # type: ignore[operator]


def _broken(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


@pytest.mark.parametrize(("text", "line", "message"), [
    (_broken("    partitions: 4", "    partitions: four"), 7, "partitions must be an integer, not 'four'"),
    (_broken("    partitions: 4", "    partitions: 0"), 7, "partitions must be at least 1"),
    (_broken("      retention.ms: 1000", "      retention.msx: 1000"), 10, "unsupported topic config"),
    (_broken("      retention.ms: 1000", "      min.insync.replicas: 2"), 10, "set it in the profile"),
    (_broken("      cleanup.policy: compact", "      cleanup.policy: compacted"), 14,
     "cleanup.policy must be one of"),
    (_broken("  - name: b.v1", "  - name: a.v1"), 11, "duplicate topic 'a.v1' (first on line 6)"),
    (_broken("    partitions: 2", "    partitions: 2\n    partitions: 3"), 13, "duplicate key 'partitions'"),
    (_broken("    partitions: 2\n", ""), 11, "a topic is missing partitions"),
    (_broken("    partitions: 2", "    partitions: 2\n    owner: me"), 13, "unknown key 'owner'"),
    (_broken("  - name: b.v1", "  - name: b v1"), 11, "not a valid Kafka topic name"),
    (_broken("min_insync_replicas: 2}", "min_insync_replicas: 4}"), 3, "exceeds replication_factor 3"),
    (_broken("version: 1", "version: 2"), 1, "unsupported version 2"),
    (_broken("      retention.ms: 1000", "      retention.ms: [1000]"), 10, "must be a single value"),
    (_broken("      retention.ms: 1000", "     retention.ms: 1000"), 10, "invalid YAML"),
    (_broken("    config:\n      cleanup.policy: compact\n", "    config: compact\n"), 13,
     "config of b.v1 must be a mapping"),
])
def test_malformed_file_names_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(TopicSpecError) as caught:
        parse_topics_yaml(text, "deploy/topics.yaml")
    assert caught.value.line == line
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"deploy/topics.yaml:{line}: ")


def test_empty_and_unreadable_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(TopicSpecError, match="file is empty"):
        parse_topics_yaml("")
    with pytest.raises(TopicSpecError, match="cannot read"):
        load_topics_file(tmp_path / "absent.yaml")
    with pytest.raises(TopicSpecError, match="topics must be a non-empty list"):
        parse_topics_yaml(MINIMAL.split("topics:")[0] + "topics: []\n")


CO_PARTITIONED = MINIMAL + """\
  - name: state.v1
    partitions: 4
    co_partitioned_with: a.v1
    config:
      cleanup.policy: compact
"""


def test_co_partitioned_topic_follows_the_override() -> None:
    specs = {s.name: s for s in parse_topics_yaml(CO_PARTITIONED).resolve("local", partitions={"a.v1": 24})}
    assert specs["a.v1"].partitions == specs["state.v1"].partitions == 24
    assert specs["b.v1"].partitions == 2


@pytest.mark.parametrize(("old", "new", "message"), [
    ("co_partitioned_with: a.v1", "co_partitioned_with: zz.v1", "names no topic of this file"),
    ("    partitions: 4\n    co_partitioned_with", "    partitions: 5\n    co_partitioned_with",
     "but partitions 5 != 4"),
])
def test_bad_co_partitioning_names_the_topic_line(old: str, new: str, message: str) -> None:
    with pytest.raises(TopicSpecError, match=message) as caught:
        parse_topics_yaml(CO_PARTITIONED.replace(old, new), "t.yaml")
    assert caught.value.line == 15


def test_boolean_and_float_values_become_kafka_strings() -> None:
    text = _broken("      retention.ms: 1000",
                   "      retention.ms: 1000\n      unclean.leader.election.enable: false\n"
                   "      min.cleanable.dirty.ratio: 0.1")
    config = parse_topics_yaml(text).topics[0].config
    assert config["unclean.leader.election.enable"] == "false"
    assert config["min.cleanable.dirty.ratio"] == "0.1"
