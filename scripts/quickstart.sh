#!/usr/bin/env bash
# Pylon's quickstart: one replica on the embedded store (./pylon-data) from configs/quickstart.toml,
# which watches configs/quickstart-dynamic.toml: a router that sends every path to a small upstream
# this script starts (python3's http.server on 127.0.0.1:8081, serving configs/quickstart-site/).
#   curl -i http://127.0.0.1:8000/            the upstream's page, through Pylon
#   edit configs/quickstart-dynamic.toml      served within a second
#   http://127.0.0.1:8080/dashboard/          the dashboard;  :8080/ping answers OK
# Extra arguments go to pylon (e.g. --entryPoints.http.address=127.0.0.1:9000). Stop with Ctrl-C.
# PYLON_BIN=path skips the install and the build (a binary built already); QUICKSTART_UPSTREAM_PORT
# moves the upstream (change the URL in configs/quickstart-dynamic.toml too).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYLON_BIN:-}" ]; then
  bash scripts/install-deps.sh
  cargo build --release --locked
  PYLON_BIN=./target/release/pylon
fi
python3 -m http.server "${QUICKSTART_UPSTREAM_PORT:-8081}" --bind 127.0.0.1 \
  --directory configs/quickstart-site >/dev/null 2>&1 &
upstream=$!
trap 'kill "$upstream" 2>/dev/null || true' EXIT
# Pylon starts once the upstream listens, so that the first request finds it.
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/${QUICKSTART_UPSTREAM_PORT:-8081}") 2>/dev/null && break
  sleep 0.05
done
"$PYLON_BIN" --configfile=configs/quickstart.toml "$@"
