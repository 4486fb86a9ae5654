#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every unit, conformance and
# end-to-end test (the end-to-end tests drive the real `kinetic` binary against real PostgreSQL and
# SQLite over real HTTP, the S3Source tests against moto's S3/SQS emulator, the Kafka tests
# against nisshi, a Kafka-protocol broker, and signed deliveries against the Standard Webhooks
# reference library). Installs or starts what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-postgres.sh
export KINETIC_TEST_POSTGRES_URL=${KINETIC_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
bash scripts/ensure-moto.sh
export KINETIC_MOTO_SERVER=${KINETIC_MOTO_SERVER:-${KINETIC_MOTO_VENV:-$HOME/.cache/kinetic-moto}/bin/moto_server}
bash scripts/ensure-kafka.sh
export KINETIC_NISSHI=${KINETIC_NISSHI:-${KINETIC_NISSHI_ROOT:-$HOME/.cache/kinetic-nisshi}/bin/nisshi}
bash scripts/ensure-standardwebhooks.sh
export KINETIC_STANDARDWEBHOOKS_PYTHON=${KINETIC_STANDARDWEBHOOKS_PYTHON:-${KINETIC_STANDARDWEBHOOKS_VENV:-$HOME/.cache/kinetic-standardwebhooks}/bin/python}

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo build (binaries the end-to-end tests run: kinetic, the example functions)"
cargo build --workspace --bins --locked
echo "==> cargo test"
cargo test --workspace --locked --no-fail-fast "$@"
