#!/usr/bin/env bash
# Start (or reuse) a local PostgreSQL server for netarchitect's distributed-search tests.
#
#   eval "$(scripts/start_postgres.sh)"    # exports NETARCHITECT_TEST_POSTGRES_URL
#
# Installs Debian's `postgresql` package with apt-get when no server binaries are found
# (set NETARCHITECT_PG_NO_INSTALL=1 to forbid that), initialises a private cluster in
# $NETARCHITECT_PG_DIR (default /tmp/netarchitect-pg) listening on 127.0.0.1:$NETARCHITECT_PG_PORT
# (default 54329), creates the role and database `netarchitect`, and prints one line on stdout:
# `export NETARCHITECT_TEST_POSTGRES_URL=postgresql+psycopg://...`. Everything else goes to
# stderr. Running it again reuses the running server (idempotent).
set -euo pipefail

PORT="${NETARCHITECT_PG_PORT:-54329}"
DIR="${NETARCHITECT_PG_DIR:-/tmp/netarchitect-pg}"
NAME=netarchitect

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

BIN="$(find_bin || true)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  if [ "${NETARCHITECT_PG_NO_INSTALL:-0}" = "1" ]; then
    echo "start_postgres: PostgreSQL is not installed (and NETARCHITECT_PG_NO_INSTALL=1)" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "start_postgres: installing Debian's postgresql package" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)"
fi

# The server refuses to run as root: use the package's `postgres` account then.
if [ "$(id -u)" -eq 0 ]; then
  OWNER=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  OWNER="$(id -un)"
  as_owner() { "$@"; }
fi

mkdir -p "$DIR"
if [ "$(id -u)" -eq 0 ]; then chown "$OWNER" "$DIR"; fi
DATA="$DIR/data"
if [ ! -f "$DATA/PG_VERSION" ]; then
  as_owner "$BIN/initdb" -D "$DATA" -A trust -U postgres >&2
fi
if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1" start >&2
fi

psql_admin() {
  as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA -c "$1"
}
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$NAME'")" != "1" ]; then
  psql_admin "CREATE ROLE $NAME LOGIN PASSWORD '$NAME'" >&2
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$NAME'")" != "1" ]; then
  psql_admin "CREATE DATABASE $NAME OWNER $NAME" >&2
fi

echo "export NETARCHITECT_TEST_POSTGRES_URL=postgresql+psycopg://$NAME:$NAME@127.0.0.1:$PORT/$NAME"
