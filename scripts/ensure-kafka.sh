#!/usr/bin/env bash
# Makes sure what the Kafka tests and the Kafka broker class need is on this machine:
# - what building kinetic needs (scripts/ensure-build-deps.sh);
# - nisshi, an Apache-2.0 Kafka-protocol broker written in Rust, installed with cargo into
#   $KINETIC_NISSHI_ROOT (default ~/.cache/kinetic-nisshi) and kept there across runs. A cold install
#   compiles for 10-20 minutes on two cores, so it happens only when the binary is missing.
# The tests start their own broker on a free loopback port and find the binary through
# $KINETIC_NISSHI (set by scripts/test.sh) or at the default path. Prints nothing when all is there.
set -euo pipefail
root=${KINETIC_NISSHI_ROOT:-$HOME/.cache/kinetic-nisshi}
version=0.8.1

bash "$(dirname "$0")/ensure-build-deps.sh"

installed() {
  [ -x "$root/bin/nisshi" ] && "$root/bin/nisshi" --version 2>/dev/null | grep -q "$version"
}
if installed; then exit 0; fi

echo "nisshi $version is not installed; compiling it into $root (cargo install, 10-20 min once)..." >&2
# One of its dependencies declares a newer rustc than it needs; it builds on this toolchain.
cargo install nisshi --version "$version" --locked --ignore-rust-version --root "$root" --quiet
installed || { echo "error: installing nisshi into $root failed" >&2; exit 1; }
