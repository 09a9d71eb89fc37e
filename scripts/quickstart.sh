#!/usr/bin/env bash
# Builds Pylon and runs one replica from configs/quickstart.toml on the embedded store
# (./pylon-data). Try: curl http://127.0.0.1:8080/ping   Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked
exec ./target/release/pylon --configfile=configs/quickstart.toml "$@"
