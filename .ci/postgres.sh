#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the store tests.
#   PG_PORT=5433 PG_DATA_DIR=/var/lib/postgresql/llm-orchestrator-ci bash .ci/postgres.sh start|stop
# Installs Debian's postgresql when missing (root); prints POSTGRES_URL=... once it accepts
# connections. Port and data directory default to the values above; scripts/test.sh passes its own.
set -euo pipefail
PGDATA="${PG_DATA_DIR:-/var/lib/postgresql/llm-orchestrator-ci}"  # postgres cannot enter /root
PORT="${PG_PORT:-5433}"
URL="postgresql+asyncpg://orch:orch@127.0.0.1:$PORT/orch"

pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install_pg() {
  if [ -z "$(pg_bin)" ]; then
    echo "installing Debian postgresql..." >&2
    bash "$(dirname "$0")/apt.sh" postgresql
  fi
}

as_pg() { runuser -u postgres -- "$@"; }

start() {
  install_pg
  local bin; bin="$(pg_bin)"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    rm -rf "$PGDATA"; mkdir -p "$PGDATA"; chown postgres "$PGDATA"; chmod 700 "$PGDATA"
    as_pg "$bin/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
  fi
  chown -R postgres "$PGDATA"
  if ! as_pg "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k /tmp" start >&2
  fi
  as_pg psql -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='orch'" | grep -q 1 \
    || as_pg psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE ROLE orch LOGIN PASSWORD 'orch'"
  as_pg psql -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='orch'" | grep -q 1 \
    || as_pg psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "CREATE DATABASE orch OWNER orch"
  echo "POSTGRES_URL=$URL"
}

stop() {
  local bin; bin="$(pg_bin || true)"
  if [ -n "$bin" ] && [ -f "$PGDATA/PG_VERSION" ]; then
    as_pg "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
