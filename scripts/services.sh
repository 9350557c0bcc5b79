#!/usr/bin/env bash
# Starts the local PostgreSQL the tests use when it is not running, and makes sure the
# test role can log in over TCP. (Tests start their own Redis servers on free ports.)
set -euo pipefail

url="${TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "postgresql: starting cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432

if ! psql "$url" -qAtc "select 1" >/dev/null 2>&1; then
  # A fresh Debian cluster asks TCP clients for a password the role does not have yet.
  echo "postgresql: setting the password of the postgres role for local tests"
  runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'"
fi
psql "$url" -qAtc "select 'postgresql: ready'"
