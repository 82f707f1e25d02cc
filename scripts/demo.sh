#!/usr/bin/env bash
# `make demo`: bring up the stack and show it working. (Placeholder body until the demo issue lands:
# it starts Kafka, provisions the topics and prints what runs. Replace the "show" part, keep the
# set-up part.)
#
# Kafka: RINGFENCE_KAFKA_BOOTSTRAP if set; otherwise the local broker on DEMO_KAFKA_PORT (default
# 9092), started if needed and LEFT RUNNING so you can explore; stop it with `ringfence kafka down`.
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
ringfence() { "$PY" -m pipeline.cli "$@"; }

# ---- set-up: Kafka and topics -------------------------------------------------------------------
if [[ -n "${RINGFENCE_KAFKA_BOOTSTRAP:-}" ]]; then
    ringfence kafka up  # only checks that the configured cluster answers
    stop_hint="(external cluster: nothing to stop)"
else
    port="${DEMO_KAFKA_PORT:-9092}"
    ringfence kafka up --port "$port"
    export RINGFENCE_KAFKA_BOOTSTRAP="127.0.0.1:$port"
    stop_hint="Stop Kafka with: ringfence kafka down --port $port"
fi
ringfence topics apply

# ---- show ---------------------------------------------------------------------------------------
cat <<EOF

ringfence demo — the stack is up:
  Kafka         $RINGFENCE_KAFKA_BOOTSTRAP   (ringfence kafka status | logs)
  Topics        deploy/topics.yaml applied   (ringfence topics check)

What runs on top of it (each in its own terminal, with RINGFENCE_KAFKA_BOOTSTRAP=$RINGFENCE_KAFKA_BOOTSTRAP):
  ringfence worker          the fleet pipeline: process trees, scoring, verdicts, alerts, commands
  ringfence-agent run       an endpoint agent: events to Kafka, enforces verdicts and commands

$stop_hint
EOF
