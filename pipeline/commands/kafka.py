"""`ringfence kafka up|down|status|logs`: the local single-node Apache Kafka, or the external one in use.

When a cluster is named (`--bootstrap` or `RINGFENCE_KAFKA_BOOTSTRAP`) nothing is started or stopped:
`up` and `status` only check that it answers, so scripts can call `ringfence kafka up` either way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from pipeline.kafka_local import LocalKafka

DESCRIPTION = """\
Run Apache Kafka locally for development and tests: a single KRaft broker+controller on
127.0.0.1:PORT (controller on PORT+1), started from Kafka's jars on Maven Central (needs Java 17+
and Maven; jars cached under $RINGFENCE_HOME/kafka, default ~/.cache/ringfence). State lives in
$RINGFENCE_HOME/run/PORT and survives down/up unless `up --fresh`.

If RINGFENCE_KAFKA_BOOTSTRAP (or --bootstrap) names a cluster, nothing is started: `up` and
`status` check that it answers, `down` does nothing.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("kafka", help="start/stop/inspect the local Apache Kafka broker",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    _add(actions, "up", "start the broker (idempotent) and wait until it answers", _up)
    _add(actions, "down", "stop the broker cleanly (SIGTERM, SIGKILL after --timeout)", _down)
    _add(actions, "status", "print running/stopped with pid, bootstrap and version (exit 1 if stopped)",
         _status)
    _add(actions, "logs", "print the end of the broker's server.log", _logs)
    _add(actions, "jars", "check Java and resolve/cache the broker's jars with Maven; start nothing", _jars)


def _add(actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str,
         handler: Callable[[argparse.Namespace], int]) -> None:
    parser = actions.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--port", type=int, default=None, help="broker port on 127.0.0.1 (default 9092)")
    parser.add_argument("--bootstrap", default=None,
                        help="use this existing cluster instead (default: $RINGFENCE_KAFKA_BOOTSTRAP)")
    if name == "up":
        parser.add_argument("--fresh", action="store_true", help="wipe the broker's data first")
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
        parser.add_argument("--heap", default="512m", help="JVM max heap (default 512m)")
    if name == "down":
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
        parser.add_argument("--purge", action="store_true", help="also delete this port's data and logs")
    if name == "logs":
        parser.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
        parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    parser.set_defaults(func=handler)


def _external_bootstrap(args: argparse.Namespace) -> str | None:
    if args.bootstrap:
        return str(args.bootstrap)
    from pydantic import ValidationError

    from schemas.topics import KafkaSettings

    try:
        return KafkaSettings().bootstrap
    except ValidationError as exc:
        raise CliError(f"invalid RINGFENCE_KAFKA_* settings: {exc.errors()[0]['msg']}") from None


def _launcher(args: argparse.Namespace) -> LocalKafka:
    from pipeline.kafka_local import DEFAULT_PORT, LocalKafka, LocalKafkaError

    try:
        return LocalKafka.from_env(args.port or DEFAULT_PORT, os.environ, getattr(args, "heap", "512m"))
    except LocalKafkaError as exc:
        raise CliError(str(exc)) from None


def _check_external(bootstrap: str) -> int:
    from aiokafka.errors import KafkaError

    from pipeline.kafka_local import probe_cluster

    try:
        brokers = probe_cluster(bootstrap, timeout_s=10.0)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise CliError(f"external Kafka at {bootstrap} does not answer: {exc}") from None
    print(f"kafka: external cluster at {bootstrap} answers ({brokers} broker(s)); nothing started")
    return 0


def _up(args: argparse.Namespace) -> int:
    external = _external_bootstrap(args)
    if external is not None:
        return _check_external(external)
    from pipeline.kafka_local import LocalKafkaError

    launcher = _launcher(args)
    try:
        status = launcher.up(fresh=args.fresh, ready_timeout_s=args.timeout)
    except LocalKafkaError as exc:
        raise CliError(str(exc)) from None
    print(status.line())
    print(f"  export RINGFENCE_KAFKA_BOOTSTRAP={status.bootstrap}")
    return 0


def _down(args: argparse.Namespace) -> int:
    external = _external_bootstrap(args)
    if external is not None:
        print(f"kafka: external cluster at {external} is not managed by ringfence; nothing stopped")
        return 0
    launcher = _launcher(args)
    was_running = launcher.down(timeout_s=args.timeout, purge=args.purge)
    print(f"kafka: stopped bootstrap={launcher.status().bootstrap}"
          + ("" if was_running else " (was not running)") + (" (data purged)" if args.purge else ""))
    return 0


def _jars(args: argparse.Namespace) -> int:
    from pipeline.kafka_local import LocalKafkaError

    launcher = _launcher(args)
    try:
        libs = launcher.fetch_jars()
    except LocalKafkaError as exc:
        raise CliError(str(exc)) from None
    count = sum(1 for _ in libs.glob("*.jar"))
    print(f"kafka: {count} jars for Kafka {launcher.paths.version} in {libs}")
    return 0


def _status(args: argparse.Namespace) -> int:
    external = _external_bootstrap(args)
    if external is not None:
        return _check_external(external)
    status = _launcher(args).status()
    print(status.line())
    return 0 if status.running else 1


def _logs(args: argparse.Namespace) -> int:
    if _external_bootstrap(args) is not None:
        raise CliError("the configured Kafka is external: its logs are on its own hosts")
    launcher = _launcher(args)
    if not launcher.paths.server_log.exists():
        raise CliError(f"no log yet at {launcher.paths.server_log}: run `ringfence kafka up` first")
    for line in launcher.logs(args.lines):
        print(line)
    if args.follow:
        _follow(launcher)
    return 0


def _follow(launcher: LocalKafka) -> None:
    """Print lines appended to server.log until interrupted (Ctrl-C)."""
    with launcher.paths.server_log.open("r", encoding="utf-8", errors="replace") as handle:
        handle.seek(0, os.SEEK_END)
        while True:
            line = handle.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.5)
