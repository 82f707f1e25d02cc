#!/usr/bin/env bash
# Run a command with a Kafka available in RINGFENCE_KAFKA_BOOTSTRAP, and clean up after it.
#
#   scripts/with-kafka.sh COMMAND [ARGS...]
#
# If RINGFENCE_KAFKA_BOOTSTRAP is already set, that cluster is used and nothing is started.
# Otherwise a throwaway local broker is started on KAFKA_PORT (default: a free port pair chosen by
# the OS), exported for COMMAND, and ALWAYS stopped and purged afterwards: on success, on failure,
# on Ctrl-C. The exit status is COMMAND's (pytest's 5 = "no tests collected" stays a failure).
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
RINGFENCE=("$PY" -m pipeline.cli)

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

if [[ -n "${RINGFENCE_KAFKA_BOOTSTRAP:-}" ]]; then
    echo "with-kafka: using the configured Kafka at $RINGFENCE_KAFKA_BOOTSTRAP (nothing started)"
    exec "$@"
fi

port="${KAFKA_PORT:-}"
if [[ -z "$port" ]]; then
    port="$("$PY" -c 'from pipeline.kafka_local_config import find_free_port_pair; print(find_free_port_pair())')"
elif "${RINGFENCE[@]}" kafka status --port "$port" >/dev/null 2>&1; then
    # Never wipe a broker someone started by hand: this script purges what it starts.
    echo "with-kafka: a ringfence broker already runs on port $port; use it with" \
         "RINGFENCE_KAFKA_BOOTSTRAP=127.0.0.1:$port, or choose another KAFKA_PORT" >&2
    exit 2
fi

started=0
cleanup() {
    if [[ "$started" == 1 ]]; then
        env -u RINGFENCE_KAFKA_BOOTSTRAP "${RINGFENCE[@]}" kafka down --port "$port" --purge || echo "with-kafka: WARNING: could not stop the broker on port $port" >&2
        started=0
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=1  # set before `up`: a broker that starts but never gets ready must still be stopped
"${RINGFENCE[@]}" kafka up --port "$port" --fresh
export RINGFENCE_KAFKA_BOOTSTRAP="127.0.0.1:$port"
echo "with-kafka: Kafka at $RINGFENCE_KAFKA_BOOTSTRAP for: $*"

set +e
"$@"
status=$?
set -e
echo "with-kafka: command exited with status $status"
exit "$status"
