#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every unit, conformance and
# end-to-end test (the end-to-end tests drive the real `kinetic` binary against real PostgreSQL and
# SQLite over real HTTP, the S3Source tests against moto's S3/SQS emulator, the Kafka tests
# against nisshi, a Kafka-protocol broker, signed deliveries against the Standard Webhooks
# reference library, the container engine tests against Docker Engine, and deploy/ with kubectl
# kustomize and kubernetes-validate, the console in Debian's Chromium driven by playwright-core),
# then the quickstart.
# Installs or starts what it needs. Arguments go to `cargo test` (e.g. a test name), and then the
# quickstart and the fuzzing smoke pass are skipped.
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
bash scripts/ensure-pyjwt.sh
export KINETIC_PYJWT_PYTHON=${KINETIC_PYJWT_PYTHON:-${KINETIC_PYJWT_VENV:-$HOME/.cache/kinetic-pyjwt}/bin/python}
bash scripts/ensure-browser.sh
export KINETIC_BROWSER_DIR=${KINETIC_BROWSER_DIR:-$HOME/.cache/kinetic-browser}
bash scripts/ensure-k8s-tools.sh
export KINETIC_KUBERNETES_VALIDATE=${KINETIC_KUBERNETES_VALIDATE:-${KINETIC_K8S_VENV:-$HOME/.cache/kinetic-k8s}/bin/kubernetes-validate}
# A Docker Engine for the container runtime's tests; stopped (by its PID) at the end when this
# script started it.
dockerd_pid=$(bash scripts/ensure-docker.sh)
trap 'bash scripts/stop-dockerd.sh "$dockerd_pid"' EXIT

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every dependency a crate declares is used (names resolved through cargo's metadata, so renamed
# libraries such as cloudevents-sdk's `cloudevents` count).
echo "==> cargo machete (unused dependencies)"
machete=$(bash scripts/ensure-machete.sh)
"$machete" --with-metadata
echo "==> cargo build (binaries the end-to-end tests run: kinetic, the example functions)"
cargo build --workspace --bins --locked
echo "==> cargo test"
cargo test --workspace --locked --no-fail-fast "$@"
# kinetic on a real cluster (tests/cluster.rs) needs one; no machine it is tested on has it.
if [ -n "${KINETIC_TEST_KUBECONFIG:-}" ]; then
  echo "==> the real-cluster suite (KINETIC_TEST_KUBECONFIG=$KINETIC_TEST_KUBECONFIG)"
  cargo test --locked --test cluster -- --ignored
else
  echo "==> the real-cluster suite: skipped, KINETIC_TEST_KUBECONFIG is not set (set it and KINETIC_TEST_IMAGE to run tests/cluster.rs)"
fi
if [ "$#" -eq 0 ]; then
  # The README's main command, end to end, on free ports (its build is already done above).
  echo "==> scripts/quickstart.sh"
  free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  KINETIC_PORT=$(free_port) ADMIN_PORT=$(free_port) GATEWAY_PORT=$(free_port) DISPLAY_PORT=$(free_port) bash scripts/quickstart.sh
  # A short pass of every fuzz target (its seeds and past findings already ran in `cargo test`).
  echo "==> scripts/fuzz.sh (smoke pass)"
  KINETIC_FUZZ_SEED=1 bash scripts/fuzz.sh "${KINETIC_FUZZ_SECONDS:-20}"
fi
