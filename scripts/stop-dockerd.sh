#!/usr/bin/env bash
# Stops the dockerd whose PID `scripts/ensure-docker.sh` printed (nothing when it printed none, as
# it does when an engine was already running): SIGTERM, up to 15 s for it to stop its containers
# and exit, then SIGKILL.
pid=${1:-}
[ -n "$pid" ] || exit 0
kill "$pid" 2>/dev/null || exit 0
for _ in $(seq 1 150); do
  kill -0 "$pid" 2>/dev/null || exit 0
  sleep 0.1
done
kill -9 "$pid" 2>/dev/null || true
