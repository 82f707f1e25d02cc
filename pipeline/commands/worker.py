"""`ringfence worker`: run one pipeline worker (events -> trees -> scores -> alerts, verdicts, commands)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from pipeline.settings import WorkerSettings
    from pipeline.telemetry import TelemetrySettings

DESCRIPTION = """\
Consume the events topic in batches as a member of the worker group, build process trees per
device, score them with the model in micro-batches, apply the policy and publish alerts, signed
verdicts and signed commands. Start several workers to share the events partitions; a worker that
dies hands its partitions and its devices' trees (saved in the state topic) to the others.

Configuration is read from the environment (RINGFENCE_*; Kafka: RINGFENCE_KAFKA_*), e.g.
  RINGFENCE_KEYS_DIR      fleet keys folder of `ringfence keys init` (default ./.ringfence/keys)
  RINGFENCE_POLICY_PATH   YAML/JSON policy: default_mode, group_modes, device_modes, exclusions
  RINGFENCE_GROUP_ID      consumer group of the events topic (default ringfence-worker)
  RINGFENCE_EVENTS_TOPIC, RINGFENCE_STATE_TOPIC, RINGFENCE_ALERTS_TOPIC, ... topic names
  RINGFENCE_COMMIT_INTERVAL_MS (default 5000), RINGFENCE_POLL_MAX_RECORDS (50), RINGFENCE_MICRO_BATCH_ROWS
  (1024), RINGFENCE_MICRO_BATCH_MS (10)  batching (README, "Fleet pipeline")
Telemetry (README "Observability"; all off by default):
  RINGFENCE_OTEL_PROMETHEUS_PORT  serve Prometheus /metrics on this port (RINGFENCE_OTEL_PROMETHEUS_HOST,
                                  default 127.0.0.1)
  RINGFENCE_OTEL_OTLP_ENDPOINT    send spans and metrics by OTLP/HTTP, e.g. http://127.0.0.1:4318
  RINGFENCE_OTEL_CONSOLE=true     print spans and metrics on stderr
  RINGFENCE_OTEL_METRIC_INTERVAL_MS, RINGFENCE_OTEL_ACTIONS_TOPIC (fan-out latency source)
Options below override the environment. SIGTERM or Ctrl-C stops cleanly: the current batch is
finished, its decisions and the trees' state are written and the offsets committed.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("worker", help="run a pipeline worker (detection, alerts, verdicts, commands)",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=None,
                        help="policy file (overrides RINGFENCE_POLICY_PATH)")
    parser.add_argument("--keys-dir", type=Path, default=None,
                        help="fleet keys folder (overrides RINGFENCE_KEYS_DIR)")
    parser.add_argument("--group", default=None, help="events consumer group (overrides RINGFENCE_GROUP_ID)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # One thread per worker process, by design (scale out with processes): XGBoost's OpenMP pool
    # otherwise spins on every core for each micro-batch; measured on the 2-vCPU VM, a 33-row
    # predict took 25 ms with the default pool and 2 ms with one thread. Set before xgboost loads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import asyncio

    from pipeline.errors import PipelineError
    from pipeline.worker_runtime import load_signing_key, run_worker

    settings, telemetry = _settings(args), _telemetry()
    try:
        key = load_signing_key(settings)
        asyncio.run(run_worker(settings, key, telemetry=telemetry))
    except PipelineError as exc:
        raise CliError(str(exc), exit_code=1) from None
    return 0


def _settings(args: argparse.Namespace) -> WorkerSettings:
    from pydantic import ValidationError

    from pipeline.settings import WorkerSettings

    try:
        settings = WorkerSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise CliError(f"invalid RINGFENCE_* setting {where or ''}: {error['msg']}") from None
    overrides = {"policy_path": args.policy, "keys_dir": args.keys_dir, "group_id": args.group}
    return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _telemetry() -> TelemetrySettings:
    from pydantic import ValidationError

    from pipeline.telemetry import TelemetrySettings

    try:
        return TelemetrySettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise CliError(f"invalid RINGFENCE_OTEL_* setting {where or ''}: {error['msg']}") from None
