"""`deploy/topics.yaml` parsed into immutable topic specs, with errors that name the file and line.

The file is read from YAML *nodes* rather than plain data so every complaint can point at the line a
human must fix (a misspelt config key, a string where partitions should be a number, a duplicate
topic). Known Kafka topic configs are checked here, before any broker sees them. Pure: no I/O except
`load_topics_file`, which only reads the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import PipelineError

TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
CLEANUP_POLICIES = frozenset({"delete", "compact", "compact,delete"})
COMPRESSION_TYPES = frozenset({"producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"})
# Topic configs this file may set (values: integers unless listed above). min.insync.replicas is not
# here on purpose: it comes from the profile so that local and production differ in one place.
INT_CONFIGS = frozenset({
    "retention.ms", "retention.bytes", "segment.ms", "segment.bytes", "delete.retention.ms",
    "min.compaction.lag.ms", "max.compaction.lag.ms", "max.message.bytes", "file.delete.delay.ms",
    "flush.ms", "flush.messages", "local.retention.ms", "local.retention.bytes",
    "message.timestamp.before.max.ms", "message.timestamp.after.max.ms",
})
OTHER_CONFIGS = frozenset({"cleanup.policy", "compression.type", "min.cleanable.dirty.ratio",
                           "message.timestamp.type", "unclean.leader.election.enable"})
MIN_INSYNC = "min.insync.replicas"


class TopicSpecError(PipelineError):
    """topics.yaml is malformed; `str()` reads `path:line: problem`."""

    def __init__(self, problem: str, source: str, line: int | None) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}")
        self.problem = problem
        self.source = source
        self.line = line


@dataclass(frozen=True)
class Profile:
    replication_factor: int
    min_insync_replicas: int


@dataclass(frozen=True)
class TopicTemplate:
    """One entry of the file, before a profile and a name prefix are applied."""

    name: str
    partitions: int
    config: Mapping[str, str]
    key: str = ""
    value: str = ""
    line: int = 0
    co_partitioned_with: str = ""  # another topic whose partition count (after overrides) this one follows


@dataclass(frozen=True)
class TopicSpec:
    """A topic as it must exist on one cluster (config includes min.insync.replicas)."""

    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicsFile:
    profiles: Mapping[str, Profile]
    topics: tuple[TopicTemplate, ...]
    source: str = "topics.yaml"

    def resolve(self, profile: str, prefix: str = "",
                partitions: Mapping[str, int] | None = None) -> tuple[TopicSpec, ...]:
        """Specs for one cluster: the profile's replication, `prefix` before every name (tests use a
        unique prefix), and partition overrides keyed by the unprefixed topic name."""
        if profile not in self.profiles:
            raise TopicSpecError(f"unknown profile {profile!r} (have: {', '.join(self.profiles)})",
                                 self.source, None)
        chosen, overrides = self.profiles[profile], partitions or {}
        unknown = sorted(set(overrides) - {t.name for t in self.topics})
        if unknown:
            raise TopicSpecError(f"partition override for unknown topic(s): {', '.join(unknown)}",
                                 self.source, None)
        counts = {t.name: overrides.get(t.name, t.partitions) for t in self.topics}
        for t in self.topics:
            if t.co_partitioned_with:  # e.g. per-device state keyed and partitioned like the events
                counts[t.name] = counts[t.co_partitioned_with]
        return tuple(self._resolve_one(t, chosen, prefix, counts[t.name]) for t in self.topics)

    def _resolve_one(self, template: TopicTemplate, profile: Profile, prefix: str,
                     partitions: int) -> TopicSpec:
        name = prefix + template.name
        if not TOPIC_NAME.match(name):
            raise TopicSpecError(f"prefixed topic name {name!r} is not a valid Kafka topic name",
                                 self.source, template.line)
        if partitions < 1:
            raise TopicSpecError(f"{template.name}: partitions must be at least 1, not {partitions}",
                                 self.source, template.line)
        config = {**template.config, MIN_INSYNC: str(profile.min_insync_replicas)}
        return TopicSpec(name, partitions, profile.replication_factor, config)


def load_topics_file(path: Path) -> TopicsFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopicSpecError(f"cannot read: {exc.strerror}", str(path), None) from None
    return parse_topics_yaml(text, str(path))


def parse_topics_yaml(text: str, source: str = "topics.yaml") -> TopicsFile:
    """Parse and validate the whole file; the first problem found raises TopicSpecError."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        raise TopicSpecError(f"invalid YAML: {exc.problem}", source, line) from None
    if root is None:
        raise TopicSpecError("file is empty", source, None)
    return _Reader(source).file(root)


class _Reader:
    """Walks the node tree; every failure names the node's line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.constructor = SafeConstructor()

    def fail(self, node: Node, problem: str) -> TopicSpecError:
        return TopicSpecError(problem, self.source, node.start_mark.line + 1)

    def file(self, root: Node) -> TopicsFile:
        fields = self.mapping(root, "the file", required={"version", "profiles", "topics"})
        version = self.integer(fields["version"], "version", minimum=1)
        if version != 1:
            raise self.fail(fields["version"], f"unsupported version {version} (this ringfence reads 1)")
        profiles = {name: self.profile(node, name)
                    for name, node in self.mapping(fields["profiles"], "profiles").items()}
        if not profiles:
            raise self.fail(fields["profiles"], "profiles must name at least one profile")
        return TopicsFile(profiles, self.topics(fields["topics"]), self.source)

    def profile(self, node: Node, name: str) -> Profile:
        fields = self.mapping(node, f"profile {name!r}",
                              required={"replication_factor", "min_insync_replicas"})
        replication = self.integer(fields["replication_factor"], "replication_factor", minimum=1)
        min_isr = self.integer(fields["min_insync_replicas"], "min_insync_replicas", minimum=1)
        if min_isr > replication:
            raise self.fail(fields["min_insync_replicas"],
                            f"min_insync_replicas {min_isr} exceeds replication_factor {replication}")
        return Profile(replication, min_isr)

    def topics(self, node: Node) -> tuple[TopicTemplate, ...]:
        if not isinstance(node, SequenceNode) or not node.value:
            raise self.fail(node, "topics must be a non-empty list")
        seen: dict[str, int] = {}
        result = []
        for item in node.value:
            topic = self.topic(item)
            if topic.name in seen:
                raise self.fail(item, f"duplicate topic {topic.name!r} (first on line {seen[topic.name]})")
            seen[topic.name] = topic.line
            result.append(topic)
        self._check_co_partitioning({t.name: t for t in result})
        return tuple(result)

    def _check_co_partitioning(self, by_name: dict[str, TopicTemplate]) -> None:
        for topic in by_name.values():
            if topic.co_partitioned_with:
                problem = _co_partitioning_problem(topic, by_name.get(topic.co_partitioned_with))
                if problem:
                    raise TopicSpecError(f"{topic.name}: co_partitioned_with {topic.co_partitioned_with!r} "
                                         f"{problem}", self.source, topic.line)

    def topic(self, node: Node) -> TopicTemplate:
        fields = self.mapping(node, "a topic", required={"name", "partitions", "config"},
                              optional={"key", "value", "co_partitioned_with"})
        name = self.text(fields["name"], "name")
        if not TOPIC_NAME.match(name):
            raise self.fail(fields["name"], f"{name!r} is not a valid Kafka topic name")
        config = {key: self.config_value(key, value)
                  for key, value in self.mapping(fields["config"], f"config of {name}").items()}
        return TopicTemplate(
            name=name, partitions=self.integer(fields["partitions"], "partitions", minimum=1), config=config,
            key=self.text(fields["key"], "key") if "key" in fields else "",
            value=self.text(fields["value"], "value") if "value" in fields else "",
            line=node.start_mark.line + 1,
            co_partitioned_with=(self.text(fields["co_partitioned_with"], "co_partitioned_with")
                                 if "co_partitioned_with" in fields else ""),
        )

    def config_value(self, key: str, node: Node) -> str:
        if key in INT_CONFIGS:
            return str(self.integer(node, key, minimum=-1))
        if key not in OTHER_CONFIGS:
            hint = " (set it in the profile)" if key == MIN_INSYNC else ""
            raise self.fail(node, f"unknown or unsupported topic config {key!r}{hint}")
        text = self.scalar_text(node, key)
        allowed = {"cleanup.policy": CLEANUP_POLICIES, "compression.type": COMPRESSION_TYPES}.get(key)
        if allowed is not None and text not in allowed:
            raise self.fail(node, f"{key} must be one of {', '.join(sorted(allowed))}, not {text!r}")
        return text

    def mapping(self, node: Node, what: str, required: set[str] | None = None,
                optional: set[str] | None = None) -> dict[str, Node]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        fields: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = self.text(key_node, f"a key of {what}")
            if key in fields:
                raise self.fail(key_node, f"duplicate key {key!r} in {what}")
            fields[key] = value_node
        self._check_keys(node, fields, what, required, optional)
        return fields

    def _check_keys(self, node: Node, fields: dict[str, Node], what: str, required: set[str] | None,
                    optional: set[str] | None) -> None:
        if required is None:
            return
        missing = sorted(required - fields.keys())
        if missing:
            raise self.fail(node, f"{what} is missing {', '.join(missing)}")
        for key in fields.keys() - required - (optional or set()):
            raise self.fail(fields[key], f"unknown key {key!r} in {what}")

    def scalar(self, node: Node, what: str) -> object:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        return self.constructor.construct_object(node)

    def text(self, node: Node, what: str) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(node, f"{what} must be a non-empty string")
        return value

    def scalar_text(self, node: Node, what: str) -> str:
        value = self.scalar(node, what)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def integer(self, node: Node, what: str, minimum: int) -> int:
        value = self.scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(node, f"{what} must be an integer, not {value!r}")
        if value < minimum:
            raise self.fail(node, f"{what} must be at least {minimum}, not {value}")
        return value


def _co_partitioning_problem(topic: TopicTemplate, leader: TopicTemplate | None) -> str:
    """Why `topic` cannot follow `leader`'s partition count ("" if it can)."""
    if leader is None:
        return "names no topic of this file"
    if leader.co_partitioned_with:
        return "names a topic that is itself co-partitioned"
    if topic.partitions != leader.partitions:
        return f"but partitions {topic.partitions} != {leader.partitions}"
    return ""
