"""Reconcile a cluster's topics with `deploy/topics.yaml`: a pure plan, then a thin aiokafka admin shell.

`plan_topics(specs, observed)` compares what the file says with what the cluster reports and returns
the changes to make; it never talks to Kafka, so the whole decision logic is unit-tested. The
`TopicsAdmin` shell only observes (list, describe topics and configs) and executes a plan.

Config drift is judged on the topic's *dynamic* configs (those set on the topic, not inherited from
the broker): a managed key with another value, a managed key missing, or an override the file does not
mention. Kafka's AlterConfigs replaces a topic's whole dynamic set, so a config change always sends
the file's full set for that topic, which also removes unmanaged overrides. Partitions can only grow;
replication changes need a reassignment, so both are reported as problems rather than fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError
from pipeline.topics_spec import TopicSpec

log = logging.getLogger(__name__)

_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source of a topic-level override


class TopicsAdminError(PipelineError):
    """The cluster refused an admin request; names the topic and Kafka's error."""

    def __init__(self, message: str, topic: str | None = None) -> None:
        super().__init__(f"{topic}: {message}" if topic else message)
        self.topic = topic


# ---------------------------------------------------------------- pure planning


@dataclass(frozen=True)
class ObservedTopic:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]  # dynamic (topic-level) configs only


@dataclass(frozen=True)
class ConfigDiff:
    key: str
    current: str | None  # None: not set on the topic
    wanted: str | None  # None: an override the file does not manage, to be removed

    def describe(self) -> str:
        if self.wanted is None:
            return f"{self.key}: remove unmanaged override {self.current}"
        return f"{self.key}: {self.current if self.current is not None else '(default)'} -> {self.wanted}"


@dataclass(frozen=True)
class CreateTopic:
    spec: TopicSpec

    def describe(self) -> str:
        configs = ", ".join(f"{k}={v}" for k, v in sorted(self.spec.config.items()))
        return (f"create {self.spec.name} partitions={self.spec.partitions} "
                f"replication={self.spec.replication_factor} {configs}")


@dataclass(frozen=True)
class SetConfigs:
    spec: TopicSpec
    diffs: tuple[ConfigDiff, ...]

    def describe(self) -> str:
        return f"alter {self.spec.name}: " + "; ".join(d.describe() for d in self.diffs)


@dataclass(frozen=True)
class AddPartitions:
    topic: str
    current: int
    wanted: int

    def describe(self) -> str:
        return f"partitions {self.topic}: {self.current} -> {self.wanted}"


Action = CreateTopic | SetConfigs | AddPartitions


@dataclass(frozen=True)
class Problem:
    """Something `apply` cannot fix; `drift=False` marks a harmless difference (a note)."""

    topic: str
    message: str
    drift: bool = True

    def describe(self) -> str:
        return f"{'cannot fix' if self.drift else 'note'}: {self.topic}: {self.message}"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    problems: tuple[Problem, ...] = ()

    @property
    def has_drift(self) -> bool:
        return bool(self.actions) or any(p.drift for p in self.problems)

    def lines(self) -> list[str]:
        return [a.describe() for a in self.actions] + [p.describe() for p in self.problems]


def _normal(key: str, value: str) -> str:
    """Kafka may list cleanup policies in another order; compare them as sets."""
    if key == "cleanup.policy":
        return ",".join(sorted(part.strip() for part in value.split(",")))
    return value.strip()


def config_diffs(wanted: Mapping[str, str], current: Mapping[str, str]) -> tuple[ConfigDiff, ...]:
    """Differences between the file's configs and the topic's dynamic configs, sorted by key."""
    diffs = [ConfigDiff(k, current.get(k), v) for k, v in wanted.items()
             if k not in current or _normal(k, current[k]) != _normal(k, v)]
    diffs += [ConfigDiff(k, v, None) for k, v in current.items() if k not in wanted]
    return tuple(sorted(diffs, key=lambda d: d.key))


def plan_topic(spec: TopicSpec, seen: ObservedTopic | None) -> tuple[list[Action], list[Problem]]:
    if seen is None:
        return [CreateTopic(spec)], []
    actions: list[Action] = []
    problems: list[Problem] = []
    if seen.partitions < spec.partitions:
        actions.append(AddPartitions(spec.name, seen.partitions, spec.partitions))
    elif seen.partitions > spec.partitions:
        problems.append(Problem(spec.name, f"has {seen.partitions} partitions, file says {spec.partitions} "
                                           "(partitions cannot shrink; more is fine)", drift=False))
    if seen.replication_factor != spec.replication_factor:
        problems.append(Problem(spec.name, f"replication factor {seen.replication_factor}, file says "
                                           f"{spec.replication_factor} (needs a partition reassignment)"))
    diffs = config_diffs(spec.config, seen.config)
    if diffs:
        actions.append(SetConfigs(spec, diffs))
    return actions, problems


def plan_topics(specs: Iterable[TopicSpec], observed: Mapping[str, ObservedTopic]) -> Plan:
    """Everything needed to make `observed` match `specs`; topics not in `specs` are left alone."""
    actions: list[Action] = []
    problems: list[Problem] = []
    for spec in specs:
        more_actions, more_problems = plan_topic(spec, observed.get(spec.name))
        actions += more_actions
        problems += more_problems
    return Plan(tuple(actions), tuple(problems))


def choose_profile(requested: str, broker_count: int, profiles: Mapping[str, int]) -> str:
    """`auto` -> `local` when the cluster has fewer brokers than production's replication factor.

    `profiles` maps profile name to its replication factor."""
    if requested != "auto":
        return requested
    production = profiles.get("production")
    if production is None or broker_count < production:
        return "local"
    return "production"


# ---------------------------------------------------------------- Kafka admin shell


def _check_errors(topic_errors: Iterable[Sequence[Any]], what: str) -> None:
    """Raise on the first non-zero error code in a (topic, error_code, error_message) list."""
    for topic, code, message in topic_errors:
        if code != 0:
            raise TopicsAdminError(f"{what} failed: {message or f'error code {code}'}", topic)


class TopicsAdmin:
    """Observe and change topics through an already started `AIOKafkaAdminClient`."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin

    async def broker_count(self) -> int:
        cluster = await self.admin.describe_cluster()
        return len(cluster["brokers"])

    async def observe(self, names: Iterable[str]) -> dict[str, ObservedTopic]:
        """Partitions, replication and dynamic configs of those of `names` that exist."""
        existing = sorted(set(names) & set(await self.admin.list_topics()))
        if not existing:
            return {}
        described = {t["topic"]: t for t in await self.admin.describe_topics(existing)}
        configs = await self._dynamic_configs(existing)
        return {name: _observed(described[name], configs.get(name, {})) for name in existing}

    async def _dynamic_configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        responses = await self.admin.describe_configs(resources)
        result: dict[str, dict[str, str]] = {}
        for response in responses:
            for code, message, _type, name, entries in response.resources:
                if code != 0:
                    raise TopicsAdminError(f"describe configs failed: {message}", name)
                result[name] = {e[0]: e[1] for e in entries if e[3] == _DYNAMIC_TOPIC_CONFIG}
        return result

    async def execute(self, plan: Plan) -> None:
        """Create topics, then add partitions, then replace drifted config sets."""
        from aiokafka.admin import NewPartitions, NewTopic
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        creates = [a.spec for a in plan.actions if isinstance(a, CreateTopic)]
        if creates:
            new_topics = [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.config))
                          for s in creates]
            response = await self.admin.create_topics(new_topics)
            _check_errors(response.topic_errors, "create")
        grows = {a.topic: NewPartitions(a.wanted) for a in plan.actions if isinstance(a, AddPartitions)}
        if grows:
            _check_errors((await self.admin.create_partitions(grows)).topic_errors, "add partitions")
        alters = [a.spec for a in plan.actions if isinstance(a, SetConfigs)]
        if alters:
            responses = await self.admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name, configs=dict(s.config)) for s in alters])
            for response in responses:
                _check_errors(((r[3], r[0], r[1]) for r in response.resources), "alter configs")
        log.info("topics: applied %d change(s)", len(plan.actions))


def _observed(described: Mapping[str, Any], config: Mapping[str, str]) -> ObservedTopic:
    if described.get("error_code", 0) != 0:
        raise TopicsAdminError(f"describe failed with error code {described['error_code']}",
                               described.get("topic"))
    partitions = described["partitions"]
    replication = len(partitions[0]["replicas"]) if partitions else 0
    return ObservedTopic(described["topic"], len(partitions), replication, dict(config))


async def reconcile(topics: TopicsAdmin, specs: Sequence[TopicSpec], apply: bool,
                    settle_timeout_s: float = 15.0) -> Plan:
    """Plan against the cluster and, if `apply`, execute and wait until the cluster reports no drift.

    Returns the plan that was (or would be) executed. Metadata propagates asynchronously, so after
    applying we re-observe, bounded by `settle_timeout_s`, and fail if the changes did not stick."""
    import asyncio
    import time

    plan = plan_topics(specs, await topics.observe(s.name for s in specs))
    if not apply or not plan.actions:
        return plan
    await topics.execute(plan)
    deadline = time.monotonic() + settle_timeout_s
    while True:
        after = plan_topics(specs, await topics.observe(s.name for s in specs))
        if not after.actions:
            return plan
        if time.monotonic() >= deadline:
            raise TopicsAdminError("changes did not take effect: " + "; ".join(after.lines()))
        await asyncio.sleep(0.5)
