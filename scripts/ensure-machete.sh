#!/usr/bin/env bash
# Makes sure cargo-machete, which finds dependencies a crate declares and never uses, is on this
# machine: installed with cargo into $KINETIC_MACHETE_ROOT (default ~/.cache/kinetic-machete) and
# kept there across runs (a cold install compiles for about two minutes). Prints the binary's path.
set -euo pipefail
root=${KINETIC_MACHETE_ROOT:-$HOME/.cache/kinetic-machete}
version=0.9.2

installed() {
  [ -x "$root/bin/cargo-machete" ] && "$root/bin/cargo-machete" --version 2>/dev/null | grep -q "$version"
}
if ! installed; then
  echo "cargo-machete $version is not installed; compiling it into $root (cargo install, once)..." >&2
  cargo install cargo-machete --version "$version" --locked --root "$root" --quiet
  installed || { echo "error: installing cargo-machete into $root failed" >&2; exit 1; }
fi
echo "$root/bin/cargo-machete"
