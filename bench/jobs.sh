#!/usr/bin/env bash
# Builds release binaries and prints the jobs benchmark table (kinetic's user jobs end to end, each
# beside a baseline measured in the same run). Extra arguments go to the benchmark, e.g.
#   bash bench/jobs.sh --orders 20000 --repeat 5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-kafka.sh
cargo build --release --locked -p kinetic -p kinetic-bench -p order-fn
exec target/release/kinetic-jobs-bench --kinetic target/release/kinetic "$@"
