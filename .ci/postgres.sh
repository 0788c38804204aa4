#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the distributed tests, from Debian's
# packages. Usage: source .ci/postgres.sh  -> exports CODESIGN_TEST_POSTGRES and stops the server
# on exit. Needs root (CI runs as root); the server itself runs as the postgres user.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PG_PORT=${PG_PORT:-55432}
PG_DIR=$(mktemp -d /tmp/codesign-pg.XXXXXX)
chown postgres "$PG_DIR"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
export CODESIGN_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
trap 'runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null; rm -rf "$PG_DIR"' EXIT
echo "PostgreSQL on 127.0.0.1:$PG_PORT"
