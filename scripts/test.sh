#!/usr/bin/env bash
# Runs Pylon's whole test suite: installs what the tests need (protoc, etcd, Consul, ...),
# checks formatting and lints, runs unit and integration tests against real servers, then runs
# each fuzz target for 20 s (PYLON_FUZZ_SECONDS).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
for bin in protoc etcd etcdctl consul curl; do
  command -v "$bin" >/dev/null || { echo "test.sh: $bin is missing after install-deps.sh" >&2; exit 1; }
done

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Each integration test starts its own servers; two threads match the two cores.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --all-targets -- --test-threads="${PYLON_TEST_THREADS:-2}" 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
# Every fuzz target for a short while (the nightly toolchain, for fuzzing only): a crash fails CI.
bash scripts/fuzz.sh "${PYLON_FUZZ_SECONDS:-20}"
