#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at $KINETIC_PG_HOST:$KINETIC_PG_PORT (default 127.0.0.1:5432)
# with trust auth for user postgres: installs it from Debian's packages if missing, starts the
# machine's cluster if it is stopped.
set -euo pipefail
host=${KINETIC_PG_HOST:-127.0.0.1}
port=${KINETIC_PG_PORT:-5432}

ready() { pg_isready -q -h "$host" -p "$port" -U postgres 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "PostgreSQL is not installed; installing it (apt-get install postgresql)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
if ready; then exit 0; fi

echo "PostgreSQL is not answering on $host:$port; starting the local cluster..." >&2
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  done
fi
for _ in $(seq 1 50); do
  if ready; then exit 0; fi
  sleep 0.2
done
echo "error: PostgreSQL does not answer on $host:$port. Start it, or point KINETIC_TEST_POSTGRES_URL at one." >&2
exit 1
