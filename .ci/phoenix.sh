#!/usr/bin/env bash
# Arize Phoenix (PyPI `arize-phoenix`), the OTLP trace receiver of the OpenTelemetry test
# (tests/telemetry/test_otel_phoenix.py, which starts and stops its own server on free ports):
#   bash .ci/phoenix.sh        # installs it when missing, prints PHOENIX_BIN=...
# It lives in its own venv (~850 MB of dependencies the project must not share), installed once
# into $ORCH_CI_CACHE (2–3 min on a fresh machine, without a pip cache) and shared by every run.
set -euo pipefail
CACHE="${ORCH_CI_CACHE:-$HOME/.cache/llm-orchestrator-ci}"
VENV="$CACHE/phoenix-venv"
VERSION="${PHOENIX_VERSION:-20.26.1}"
mkdir -p "$CACHE"

phoenix_ok() {
  [ -x "$VENV/bin/phoenix" ] && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("arize-phoenix"))' 2>/dev/null)" = "$VERSION" ]
}

if ! phoenix_ok; then
  exec 9>"$CACHE/phoenix-venv.lock"  # another test run may be installing it right now
  flock 9
  if ! phoenix_ok; then
    echo "installing arize-phoenix $VERSION into $VENV (2–3 minutes)..." >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "arize-phoenix==$VERSION"
    phoenix_ok || { echo "arize-phoenix did not install into $VENV" >&2; exit 1; }
  fi
  exec 9>&-
fi
echo "PHOENIX_BIN=$VENV/bin/phoenix"
