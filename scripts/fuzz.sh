#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of what kinetic reads from outside: the
# CloudEvents HTTP decoder, CESQL, resource YAML, WebhookSource verification and templates, and
# S3/MinIO/COS/SNS notifications. What each target checks is in fuzz/src/lib.rs.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (all when none is named) for SECONDS (default 60), starting from the seeds in
# fuzz/seeds/<target> and adding what it finds to a corpus of its own: a temporary one, removed at
# the end, unless KINETIC_FUZZ_CORPUS names a directory to keep it in (one subdirectory per
# target). KINETIC_FUZZ_SEED fixes libFuzzer's random seed; KINETIC_FUZZ_SANITIZER=address builds
# with AddressSanitizer (slower; the default is none, since kinetic has no unsafe code of its own
# and a panic, an overflow, a timeout or running out of memory is what the targets catch).
#
# Exits non-zero when a target crashes, times out (10 s on one input) or goes over 2 GiB. The input
# that did it is copied to fuzz/artifacts/<target>/; once fixed, move it to
# fuzz/regressions/<target>/, where `cargo test` replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
case "$seconds" in
  '' | *[!0-9]*)
    echo "scripts/fuzz.sh: SECONDS must be a whole number of seconds, got \`$seconds\`" >&2
    exit 2
    ;;
esac
all_targets=(cloudevent_http cesql resources webhook s3_notification)
targets=("${@:-${all_targets[@]}}")
for target in "${targets[@]}"; do
  if [ ! -f "fuzz/libfuzzer/fuzz_targets/$target.rs" ]; then
    echo "scripts/fuzz.sh: no fuzz target \`$target\`; the targets are: ${all_targets[*]}" >&2
    exit 2
  fi
done

cargo_fuzz_version=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$cargo_fuzz_version" ]; then
  echo "installing cargo-fuzz $cargo_fuzz_version (cargo install, once)..."
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --quiet
fi

sanitizer=${KINETIC_FUZZ_SANITIZER:-none}
# The instrumented build is kept between runs on this machine; it shares nothing with target/.
target_dir=${KINETIC_FUZZ_TARGET_DIR:-$HOME/.cache/kinetic-fuzz/target}
fuzz() { cargo fuzz "$@" --fuzz-dir fuzz/libfuzzer --sanitizer "$sanitizer" --target-dir "$target_dir"; }
if [ "$sanitizer" != none ]; then
  # Sanitizers are unstable rustc flags; the stable toolchain takes them this way.
  export RUSTC_BOOTSTRAP=1
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
echo "==> building the fuzz targets ($sanitizer sanitizer)"
fuzz build --release --debug-assertions

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
seed_flag=()
if [ -n "${KINETIC_FUZZ_SEED:-}" ]; then
  seed_flag=("-seed=$KINETIC_FUZZ_SEED")
fi

failed=()
summary=()
for target in "${targets[@]}"; do
  corpus=${KINETIC_FUZZ_CORPUS:+$KINETIC_FUZZ_CORPUS/$target}
  corpus=${corpus:-$scratch/corpus/$target}
  mkdir -p "$corpus" "$scratch/artifacts/$target"
  log=$scratch/$target.log
  echo "==> fuzzing $target for ${seconds}s"
  status=0
  # The binary just built, run directly: `cargo fuzz run` would build again.
  "$target_dir/$triple/release/$target" "$corpus" "$PWD/fuzz/seeds/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$target/" \
    "${seed_flag[@]}" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | awk '{print $2}')
  features=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | awk '{print $2}')
  inputs=$(find "$corpus" -type f | wc -l)
  summary+=("$(printf '%-16s %12s %8s %9s %8s' "$target" "${runs:-?}" "${coverage:-?}" "${features:-?}" "$inputs")")
  if [ "$status" -ne 0 ]; then
    mkdir -p "fuzz/artifacts/$target"
    cp "$scratch/artifacts/$target/"* "fuzz/artifacts/$target/" 2>/dev/null || true
    echo "!! $target failed (exit $status); the input is in fuzz/artifacts/$target/:" >&2
    ls "fuzz/artifacts/$target/" >&2 || true
    grep -E -A 25 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -n 60 >&2 || true
    failed+=("$target")
  fi
done

echo
printf '%-16s %12s %8s %9s %8s\n' target executions coverage features corpus
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]}" >&2
  exit 1
fi
