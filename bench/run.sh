#!/usr/bin/env bash
# Builds release binaries and prints the end-to-end benchmark table (kinetic vs. posting straight
# to the subscriber, measured in the same run). Extra arguments go to the benchmark, e.g.
#   bash bench/run.sh --engines sqlite --events 50000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-kafka.sh   # the kafka engines need nisshi; it also installs the build deps
bash scripts/ensure-postgres.sh
bash scripts/ensure-pyjwt.sh   # the auth engine makes its TLS certificate with Python's cryptography
cargo build --release --locked -p kinetic -p kinetic-bench
exec target/release/kinetic-bench --kinetic target/release/kinetic "$@"
