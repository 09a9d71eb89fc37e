#!/usr/bin/env bash
# Runs Pylon's coverage-guided fuzz targets (cargo-fuzz and libFuzzer, crate in fuzz/): installs
# cargo-fuzz when `cargo fuzz` is missing, builds every target with the nightly toolchain
# (AddressSanitizer, debug assertions, overflow checks), then fuzzes each named target (every one
# in fuzz/fuzz_targets/ when none is named) for SECONDS (default 60) on fuzz/corpus/<target>,
# which is created and seeded from fuzz/seeds/<target>. Each input may take 10 s and the process
# 2 GiB. Exits non-zero when a target crashes (a panic, a timeout or running out of memory),
# printing the input libFuzzer saved under fuzz/artifacts/<target>/; replay one with
#   cargo +nightly fuzz run --fuzz-dir fuzz <target> <artifact>
# The project builds on stable; nightly is for fuzzing only.
#   scripts/fuzz.sh                  # every target, 60 s each
#   scripts/fuzz.sh 3600             # every target, an hour each
#   scripts/fuzz.sh 600 rule path    # two targets, 10 minutes each
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if [ "$#" -gt 0 ]; then shift; fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]  (SECONDS a positive whole number, not '$seconds')" >&2
  exit 2
fi

all=()
for file in fuzz/fuzz_targets/*.rs; do
  all+=("$(basename "$file" .rs)")
done
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then targets=("${all[@]}"); fi
for target in "${targets[@]}"; do
  [ -f "fuzz/fuzz_targets/$target.rs" ] || { echo "fuzz.sh: no target '$target' (targets: ${all[*]})" >&2; exit 2; }
done

rustup run nightly rustc --version >/dev/null 2>&1 || { echo "fuzz.sh: the nightly toolchain is missing" >&2; exit 1; }
command -v protoc >/dev/null || { echo "fuzz.sh: protoc is missing; run scripts/install-deps.sh" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

start=$SECONDS
cargo +nightly fuzz build --fuzz-dir fuzz
echo "fuzz.sh: built the fuzz targets in $((SECONDS - start)) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  for seed in fuzz/seeds/"$target"/*; do
    if [ -f "$seed" ] && [ ! -e "$corpus/$(basename "$seed")" ]; then cp "$seed" "$corpus/"; fi
  done
  echo "fuzz.sh: fuzzing $target for $seconds s"
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    tee "$logs/$target.log" || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$target.log" | tail -n1)
  if [ "$status" -ne 0 ]; then
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$target.log" | tail -n1)
    failed+=("$target")
    summary+=("$target: FAILED (exit $status) after ${runs:-?} runs, ${rate:-?} exec/s; input: ${artifact:-none saved}")
  else
    summary+=("$target: ok, ${runs:-?} runs, ${rate:-?} exec/s, corpus $(find "$corpus" -type f | wc -l) inputs")
  fi
done

echo
echo "fuzz.sh: results ($seconds s per target)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
