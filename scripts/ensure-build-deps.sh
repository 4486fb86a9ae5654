#!/usr/bin/env bash
# Makes sure what building kinetic needs beyond the Rust toolchain is on this machine: cmake and the
# curl and OpenSSL headers, which rdkafka's vendored librdkafka build needs (installed with apt-get,
# once). Prints nothing when all is there.
set -euo pipefail

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
