"""`ringfence topics apply|check`: make the cluster's topics match deploy/topics.yaml, or report drift."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from pipeline.topics_admin import Plan
    from pipeline.topics_spec import TopicsFile, TopicSpec
    from schemas.topics import KafkaSettings

DESCRIPTION = """\
Topics as data: deploy/topics.yaml holds the topic table of DESIGN.md (partitions, cleanup policy,
retention, compression; replication and min.insync.replicas per profile).

  apply   create missing topics, reset drifted configs (removing unmanaged overrides) and add
          partitions; prints every change, or "no changes". Safe to run again.
  check   print the drift and exit 1 if there is any (0 when the cluster matches).

The cluster is RINGFENCE_KAFKA_BOOTSTRAP (or --bootstrap), else the local broker 127.0.0.1:9092.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("topics", help="create/repair the ringfence topics, or report drift",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    for name, help_text in (("apply", "create missing topics and repair drift; idempotent"),
                            ("check", "report drift; exit 1 if the cluster differs from the file")):
        action = actions.add_parser(name, help=help_text, description=help_text)
        _add_options(action)
        action.set_defaults(func=_run, apply=name == "apply")


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path, default=None, help="topic spec (default: deploy/topics.yaml)")
    parser.add_argument("--profile", default="auto",
                        help="replication profile from the file: auto (default: local on a cluster smaller "
                             "than production's replication factor), local, production")
    parser.add_argument("--prefix", default="", help="prepend to every topic name (isolated test topic sets)")
    parser.add_argument("--events-partitions", type=int, default=None,
                        help="partitions of ringfence.events.v1 "
                             "(default: $RINGFENCE_EVENTS_PARTITIONS, else the file)")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: $RINGFENCE_KAFKA_BOOTSTRAP)")


def default_topics_file() -> Path:
    return Path(__file__).resolve().parents[2] / "deploy" / "topics.yaml"


def _events_partitions(args: argparse.Namespace) -> int | None:
    if args.events_partitions is not None:
        return int(args.events_partitions)
    raw = os.environ.get("RINGFENCE_EVENTS_PARTITIONS", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise CliError(f"RINGFENCE_EVENTS_PARTITIONS must be a positive integer, not {raw!r}")
    return int(raw)


def _settings(args: argparse.Namespace) -> KafkaSettings:
    from pydantic import ValidationError

    from schemas.topics import KafkaSettings

    try:
        settings = KafkaSettings()
    except ValidationError as exc:
        raise CliError(f"invalid RINGFENCE_KAFKA_* settings: {exc.errors()[0]['msg']}") from None
    return settings.model_copy(update={"bootstrap": args.bootstrap}) if args.bootstrap else settings


def _load(args: argparse.Namespace) -> TopicsFile:
    from pipeline.topics_spec import TopicSpecError, load_topics_file

    try:
        return load_topics_file(args.file or default_topics_file())
    except TopicSpecError as exc:
        raise CliError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError

    from pipeline.errors import PipelineError

    topics_file, settings = _load(args), _settings(args)
    try:
        plan, header = asyncio.run(_reconcile(args, topics_file, settings))
    except (KafkaError, OSError, TimeoutError) as exc:
        hint = "" if settings.is_external else " (start it with `ringfence kafka up`)"
        raise CliError(f"cannot reach Kafka at {settings.bootstrap_servers}{hint}: {exc}") from None
    except PipelineError as exc:
        raise CliError(str(exc)) from None
    return _report(plan, header, applied=args.apply)


async def _reconcile(args: argparse.Namespace, topics_file: TopicsFile,
                     settings: KafkaSettings) -> tuple[Plan, str]:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    from pipeline.topics_admin import TopicsAdmin, choose_profile, reconcile

    client = AIOKafkaAdminClient(**settings.client_kwargs(), request_timeout_ms=15000)
    try:
        await asyncio.wait_for(client.start(), 30)
        admin = TopicsAdmin(client)
        brokers = await admin.broker_count()
        profile = choose_profile(args.profile, brokers,
                                 {n: p.replication_factor for n, p in topics_file.profiles.items()})
        specs = _specs(args, topics_file, profile)
        header = (f"topics: {len(specs)} in {topics_file.source} on {settings.bootstrap_servers} "
                  f"(profile {profile}, {brokers} broker(s))")
        return await reconcile(admin, specs, apply=args.apply), header
    finally:
        await client.close()


def _specs(args: argparse.Namespace, topics_file: TopicsFile, profile: str) -> tuple[TopicSpec, ...]:
    from schemas.topics import EVENTS

    events = _events_partitions(args)
    return topics_file.resolve(profile, prefix=args.prefix, partitions={EVENTS: events} if events else None)


def _report(plan: Plan, header: str, applied: bool) -> int:
    print(header)
    for line in plan.lines():
        print(f"  {line}")
    if applied:
        print(f"topics: {len(plan.actions)} change(s) applied" if plan.actions else "topics: no changes")
        return 1 if any(p.drift for p in plan.problems) else 0
    fixable = len(plan.actions)
    if plan.has_drift:
        print(f"topics: drift found ({fixable} fixable by `ringfence topics apply`)")
    else:
        print("topics: no drift")
    return 1 if plan.has_drift else 0
