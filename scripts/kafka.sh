#!/usr/bin/env bash
# Runs a local Kafka-protocol broker (nisshi, in-memory) on 127.0.0.1:${KAFKA_PORT:-9092} in the
# foreground, for the examples; installs it first when missing (scripts/ensure-kafka.sh, a one-off
# compile of 10-20 minutes). Stop it with Ctrl-C. Topics are created on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-kafka.sh
nisshi=${KINETIC_NISSHI:-${KINETIC_NISSHI_ROOT:-$HOME/.cache/kinetic-nisshi}/bin/nisshi}
port=${KAFKA_PORT:-9092}
url="tcp://127.0.0.1:$port"
echo "Kafka-protocol broker on 127.0.0.1:$port (Ctrl-C stops it)" >&2
exec "$nisshi" broker --listener-url "$url" --advertised-listener-url "$url" \
  --storage-engine memory://nisshi/ --group-initial-rebalance-delay 0s
