#!/usr/bin/env bash
# Builds release binaries and prints the serving benchmark table: kinetic's gateway and queue-proxy
# (and with the activator forced into the path) against the same function reached directly and
# through a bare reverse proxy, latency at a fixed rate, cold starts, a burst from zero, RSS, and the
# function as a container image beside the engine running it alone, each beside baselines measured
# in the same run. Throughput, latency, cold starts and the burst are measured for `kinetic up` and
# for serving split across processes (autoscaler, activator, gateway, queue-proxies; on a scratch
# PostgreSQL database). Extra arguments go to the benchmark, e.g.
#   bash bench/serving.sh --only throughput,latency --duration 10 --repeats 5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-build-deps.sh
# The split rows keep their resources in PostgreSQL.
bash scripts/ensure-postgres.sh
# The container rows need an engine; one started here is stopped (by its PID) at the end.
dockerd_pid=$(bash scripts/ensure-docker.sh)
trap 'bash scripts/stop-dockerd.sh "$dockerd_pid"' EXIT
cargo build --release --locked -p kinetic -p hello-fn -p kinetic-bench
target/release/kinetic-serving-bench \
  --kinetic target/release/kinetic --function target/release/hello-fn "$@"
