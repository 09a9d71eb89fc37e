#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind, for Pylon, nginx and HAProxy
# proxying the same upstream on loopback: HTTP/1.1 with keep-alive, one connection, N requests
# (h2load --h1), counters zeroed after a warm-up and dumped after the N requests. Unlike
# requests/s, the count does not move with the machine's noise, so a change to the request path
# is judged by it (issue #15). Prints a Markdown section; scripts/bench.sh appends it to
# docs/benchmarks.md.
#
#   scripts/profile.sh            # 2,000 requests per proxy
#   REQUESTS=500 scripts/profile.sh
#   TOP=25 scripts/profile.sh     # also Pylon's 25 costliest functions (self cost), on stderr
#   TOP=25 KEEP=/tmp/pylon.cg PEERS=0 scripts/profile.sh
#                                 # Pylon alone, its callgrind file kept for callgrind_annotate
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REQUESTS=${REQUESTS:-2000}

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
. scripts/lib.sh

need_packages valgrind:valgrind callgrind_control:valgrind nginx:nginx haproxy:haproxy h2load:nghttp2-client
cargo build --release --locked -q
PYLON=$ROOT/target/release/pylon

# The upstream, outside valgrind.
start_upstream

# measure NAME PORT COMMAND...: the proxy under callgrind; instructions per request.
measure() {
  local name=$1 port=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.%p" --dump-instr=no --collect-jumps=no \
    "$@" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
  h2load --h1 -n 200 -c 1 "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  local done
  done=$(h2load --h1 -n "$REQUESTS" -c 1 "http://127.0.0.1:$port/" | awk '/^requests:/ { print $8 }')
  callgrind_control -d "$pid" >/dev/null
  local total
  # The dump after the requests: its `totals:` (or `summary:`) line, events since the zeroing.
  total=$(cat "$WORK/$name".[0-9]* 2>/dev/null | awk '/^totals:/ { t += $2 } /^summary:/ { s += $2 } END { print (t ? t : s) + 0 }')
  if [ "$name" = pylon ] && [ -n "${TOP:-}" ]; then
    local dump
    dump=$(ls -S "$WORK/$name".[0-9]* | head -1)
    callgrind_annotate "$dump" | sed -n "1,$((TOP + 25))p" >&2 || true
    [ -z "${KEEP:-}" ] || cp "$dump" "$KEEP"
  fi
  # CHECK=URL: the proxy must serve Prometheus' entrypoint counter there (metrics really on).
  if [ -n "${CHECK:-}" ] && ! curl -s "$CHECK" | grep '^traefik_entrypoint_requests_total{' >/dev/null; then
    kill "$pid" 2>/dev/null || true
    echo "profile.sh: $name serves no entrypoint counter at $CHECK" >&2; exit 1
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ "$done" = "$REQUESTS" ] || { echo "profile.sh: $name answered $done of $REQUESTS requests" >&2; exit 1; }
  echo $((total / REQUESTS))
}

NGINX_PORT=$(port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process off; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 16; }
  server { listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
HAPROXY_PORT=$(port)
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend be
backend be
  server up 127.0.0.1:$UP
EOF
PYLON_PORT=$(port)
mkdir -p "$WORK/dynamic"
cat > "$WORK/dynamic/routes.toml" <<EOF
[http.routers.app]
rule = "PathPrefix(\`/\`)"
service = "app"
[http.services.app.loadBalancer]
servers = [{ url = "http://127.0.0.1:$UP" }]
EOF

PYLON_IR=$(measure pylon "$PYLON_PORT" "$PYLON" --entryPoints.web.address="127.0.0.1:$PYLON_PORT" \
  --providers.file.directory="$WORK/dynamic" --log.level=WARN --datadir="$WORK/data")
if [ "${PEERS:-1}" = 0 ]; then echo "pylon: $PYLON_IR instructions per request"; exit 0; fi
# The same Pylon with Prometheus metrics on, every level counted (entrypoint, router, service).
METRICS_PORT=$(port); METRICS_ADMIN=$(port)
METRICS_IR=$(CHECK="http://127.0.0.1:$METRICS_ADMIN/metrics" measure pylon-metrics "$METRICS_PORT" "$PYLON" --entryPoints.web.address="127.0.0.1:$METRICS_PORT" \
  --entryPoints.traefik.address="127.0.0.1:$METRICS_ADMIN" --metrics.prometheus.entryPoint=traefik \
  --metrics.prometheus.addRoutersLabels=true \
  --providers.file.directory="$WORK/dynamic" --log.level=WARN --datadir="$WORK/metrics-data")
NGINX_IR=$(measure nginx "$NGINX_PORT" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx")
HAPROXY_IR=$(measure haproxy "$HAPROXY_PORT" haproxy -db -f "$WORK/haproxy.cfg")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
echo "## Instructions per request"
echo
echo "Counted by callgrind (\`scripts/profile.sh\`, valgrind $(valgrind --version | sed 's/valgrind-//')): HTTP/1.1 with keep-alive, one"
echo "connection, $REQUESTS requests after 200 of warm-up, every thread of the proxy counted (Pylon: its workers and its"
echo "control thread), the upstream outside valgrind. Pylon $(git describe --always --dirty), routes from the file provider."
echo
echo "| proxy | instructions per request | Pylon's ratio to it |"
echo "|---|---|---|"
echo "| pylon | $PYLON_IR | 1.00 |"
echo "| nginx | $NGINX_IR | $(ratio "$PYLON_IR" "$NGINX_IR") |"
echo "| haproxy | $HAPROXY_IR | $(ratio "$PYLON_IR" "$HAPROXY_IR") |"
echo
echo "Pylon with Prometheus metrics on (\`addRoutersLabels = true\`: entrypoint, router and service counters,"
echo "histograms and byte counts per request): $METRICS_IR instructions per request, $(ratio "$METRICS_IR" "$PYLON_IR") of Pylon without them."
