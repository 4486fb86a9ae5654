#!/usr/bin/env bash
# Builds release binaries and prints the jobs benchmark table (kinetic's user jobs end to end, each
# beside a baseline measured in the same run). Extra arguments go to the benchmark, e.g.
#   bash bench/jobs.sh --orders 50000 --repeat 5
#   bash bench/jobs.sh --only thumbnails --images 400
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-kafka.sh
bash scripts/ensure-moto.sh
cargo build --release --locked -p kinetic -p kinetic-bench -p order-fn -p thumbnailer
exec target/release/kinetic-jobs-bench --kinetic target/release/kinetic \
  --thumbnailer target/release/thumbnailer "$@"
