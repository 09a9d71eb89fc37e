# Helpers the benchmark scripts share; sourced, not run.
# port: a free loopback port below the kernel's ephemeral range (so no outbound connection takes
# it first), never the same one twice in a run (those given are listed in $PORTS_GIVEN,
# under the sourcing script's $WORK).
# wait_port PORT: until something listens on it (10 s at most).
# need_packages CMD:PACKAGE...: installs (apt-get) the Debian packages whose commands are missing.
# start_upstream: the benchmarks' upstream, nginx answering a small body with keep-alive on a
# free port, set as $UP, its pid added to PIDS.
PORTS_GIVEN=${PORTS_GIVEN:-$WORK/ports-given}
export PORTS_GIVEN
port() {
  python3 -c '
import os, random, socket, sys
given = set(open(sys.argv[1]).read().split()) if os.path.exists(sys.argv[1]) else set()
for p in random.sample(range(20000, 32000), 12000):
    if str(p) in given:
        continue
    try:
        socket.socket().bind(("127.0.0.1", p))
    except OSError:
        continue
    open(sys.argv[1], "a").write(f"{p}\n")
    print(p)
    break
' "$PORTS_GIVEN"
}
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
# start_etcd [ETCD FLAGS...]: one etcd member on loopback under $WORK/etcd, its pid added to PIDS;
# sets EC (client port) and STORE (Pylon's flags for it).
start_etcd() {
  EC=$(port)
  local peer
  peer=$(port)
  etcd --name bench --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$EC" \
    --advertise-client-urls "http://127.0.0.1:$EC" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "bench=http://127.0.0.1:$peer" \
    --listen-metrics-urls "http://127.0.0.1:$(port)" --log-level warn --logger zap "$@" 2>"$WORK/etcd.log" &
  PIDS+=($!)
  wait_port "$EC"
  STORE=(--etcd "--etcd.endpoint=127.0.0.1:$EC")
}
need_packages() {
  local need=() sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  for pkg in "$@"; do command -v "${pkg%%:*}" >/dev/null || need+=("${pkg#*:}"); done
  if [ ${#need[@]} -gt 0 ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}
start_upstream() {
  UP=$(port)
  mkdir -p "$WORK/up"
  cat > "$WORK/up/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/up/pid; error_log $WORK/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$UP; location / { return 200 "hello from the upstream\n"; } } }
EOF
  nginx -c "$WORK/up/nginx.conf" -p "$WORK/up" &
  PIDS+=($!)
  wait_port "$UP"
}
