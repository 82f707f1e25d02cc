#!/usr/bin/env bash
# `make demo [MODE=audit|block]`: the feedback loop end to end on this machine (`ringfence demo`).
#
# Kafka: RINGFENCE_KAFKA_BOOTSTRAP if set (nothing is started or stopped); otherwise the local
# broker on DEMO_KAFKA_PORT (default 9092): started if it is not running, and then stopped again
# when the demo ends, also on Ctrl-C or failure. A broker that was already running is left alone.
# The demo itself creates its own prefixed topic set and deletes it at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
MODE="${MODE:-block}"
ringfence() { "$PY" -m pipeline.cli "$@"; }

case "$MODE" in
    audit|block) ;;
    *) echo "demo: MODE must be audit or block, not '$MODE'" >&2; exit 2 ;;
esac

started_port=""
stop_kafka() {
    if [[ -n "$started_port" ]]; then
        echo "demo: stopping the local Kafka broker it started (port $started_port)"
        # without the exported bootstrap: `kafka down` would take it for an external cluster and leave it
        RINGFENCE_KAFKA_BOOTSTRAP="" ringfence kafka down --port "$started_port" >/dev/null || true
    fi
}
trap stop_kafka EXIT
trap 'exit 130' INT TERM

if [[ -n "${RINGFENCE_KAFKA_BOOTSTRAP:-}" ]]; then
    ringfence kafka up  # only checks that the configured cluster answers
else
    port="${DEMO_KAFKA_PORT:-9092}"
    if ! ringfence kafka status --port "$port" >/dev/null 2>&1; then
        started_port="$port"
    fi
    ringfence kafka up --port "$port"
    export RINGFENCE_KAFKA_BOOTSTRAP="127.0.0.1:$port"
fi

# DEMO_ARGS: more `ringfence demo` options, e.g. DEMO_ARGS="--devices 50 --keep".
# shellcheck disable=SC2086
"$PY" -m pipeline.cli demo --mode "$MODE" ${DEMO_ARGS:-}
