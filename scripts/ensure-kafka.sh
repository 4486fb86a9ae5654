#!/usr/bin/env bash
# Makes sure what the Kafka tests and the Kafka broker class need is on this machine:
# - cmake and the curl and OpenSSL headers, which rdkafka's vendored librdkafka build needs (apt-get);
# - nisshi, an Apache-2.0 Kafka-protocol broker written in Rust, installed with cargo into
#   $KINETIC_NISSHI_ROOT (default ~/.cache/kinetic-nisshi) and kept there across runs. A cold install
#   compiles for 10-20 minutes on two cores, so it happens only when the binary is missing.
# The tests start their own broker on a free loopback port and find the binary through
# $KINETIC_NISSHI (set by scripts/test.sh) or at the default path. Prints nothing when all is there.
set -euo pipefail
root=${KINETIC_NISSHI_ROOT:-$HOME/.cache/kinetic-nisshi}
version=0.8.1

missing_packages() {
  command -v cmake >/dev/null 2>&1 || echo cmake
  [ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -e /usr/include/curl/curl.h ] || echo libcurl4-openssl-dev
  [ -e /usr/include/openssl/ssl.h ] || echo libssl-dev
}
packages=$(missing_packages | tr '\n' ' ' | sed 's/ *$//')
if [ -n "$packages" ]; then
  echo "installing $packages (apt-get) for rdkafka's librdkafka build..." >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq >/dev/null
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
fi

installed() {
  [ -x "$root/bin/nisshi" ] && "$root/bin/nisshi" --version 2>/dev/null | grep -q "$version"
}
if installed; then exit 0; fi

echo "nisshi $version is not installed; compiling it into $root (cargo install, 10-20 min once)..." >&2
# One of its dependencies declares a newer rustc than it needs; it builds on this toolchain.
cargo install nisshi --version "$version" --locked --ignore-rust-version --root "$root" --quiet
installed || { echo "error: installing nisshi into $root failed" >&2; exit 1; }
