#!/usr/bin/env bash
# Pylon against nginx, HAProxy and Caddy on loopback, in one run, interleaved, three rounds:
#   - wrk: HTTP/1.1 with keep-alive, 64 connections, to each proxy's plain port;
#   - h2load: HTTP/2 over TLS, 64 connections x 10 streams, to each proxy's TLS port;
# each proxy forwards to one fast upstream (nginx, keep-alive both ways). Then Pylon alone:
# requests/s with 10 and with 10,000 routers, and the delay from a change written to etcd to
# that change being served (p50/p99 over 100 changes), and the cost of a middleware chain
# (headers + stripPrefix + basicAuth + rateLimit) and of a weighted service against the same route without one, and the
# cost of Prometheus metrics (a second Pylon with metrics.prometheus on, router labels included,
# in alternating pairs). Last, scripts/bench-acme.sh: time to a
# certificate from Pebble for three replicas beside Caddy, and scripts/profile.sh: instructions per
# request under callgrind, Pylon beside nginx and HAProxy. Writes docs/benchmarks.md.
#
#   scripts/bench.sh            # full run (~6 minutes after the release build)
#   DURATION=3 scripts/bench.sh # shorter runs
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-docs/benchmarks.md}

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
. scripts/lib.sh

need_packages nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk h2load:nghttp2-client openssl:openssl
scripts/install-deps.sh >/dev/null
cargo build --release --locked -q
PYLON=$ROOT/target/release/pylon
peak_rss_mib() { local total=0; for p in "$@"; do total=$((total + $(awk '/VmHWM/{print $2}' /proc/"$p"/status 2>/dev/null || echo 0))); done; echo $((total / 1024)); }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench.local \
  -addext subjectAltName=DNS:bench.local -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/both.pem"

# The upstream: nginx answering a small body, keep-alive without a request limit.
start_upstream

# Peers, each on a plain and a TLS port.
declare -A PLAIN TLS PID_OF
for p in nginx haproxy caddy pylon; do PLAIN[$p]=$(port); TLS[$p]=$(port); done

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 2; daemon off; pid $WORK/nginx/pid; error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:${PLAIN[nginx]}; listen 127.0.0.1:${TLS[nginx]} ssl http2;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" & PID_OF[nginx]=$!; PIDS+=($!)

cat > "$WORK/haproxy.cfg" <<EOF
global
  maxconn 5000
  nbthread 2
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PLAIN[haproxy]}
  bind 127.0.0.1:${TLS[haproxy]} ssl crt $WORK/both.pem alpn h2,http/1.1
  default_backend be
backend be
  server up 127.0.0.1:$UP
EOF
haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & PID_OF[haproxy]=$!; PIDS+=($!)

cat > "$WORK/Caddyfile" <<EOF
{
  admin off
  auto_https off
  http_port ${PLAIN[caddy]}
  https_port ${TLS[caddy]}
}
http://bench.local:${PLAIN[caddy]}, http://127.0.0.1:${PLAIN[caddy]} {
  reverse_proxy 127.0.0.1:$UP
}
https://bench.local:${TLS[caddy]} {
  tls $WORK/cert.pem $WORK/key.pem
  reverse_proxy 127.0.0.1:$UP
}
EOF
XDG_DATA_HOME=$WORK HOME=$WORK caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 & PID_OF[caddy]=$!; PIDS+=($!)

# Pylon on a real etcd, its routes written by storeconfig --dynamic.
start_etcd --heartbeat-interval 10 --election-timeout 100
ADMIN=$(port)
cat > "$WORK/pylon.toml" <<EOF
logLevel = "WARN"
defaultEntryPoints = ["web", "websecure"]
[entryPoints.web]
address = "127.0.0.1:${PLAIN[pylon]}"
[entryPoints.websecure]
address = "127.0.0.1:${TLS[pylon]}"
[entryPoints.websecure.tls]
[[entryPoints.websecure.tls.certificates]]
certFile = "$WORK/cert.pem"
keyFile = "$WORK/key.pem"
[entryPoints.traefik]
address = "127.0.0.1:$ADMIN"
[ping]
entryPoint = "traefik"
EOF
routers() { # routers N: N host routers, bench.local last, to the upstream
  python3 - "$1" "$UP" > "$WORK/dynamic.toml" <<'PY'
import sys
n, up = int(sys.argv[1]), sys.argv[2]
for i in range(n - 1):
    print(f'[http.routers.r{i}]\nrule = "Host(`h{i}.bench.local`)"\nservice = "up"')
print('[http.routers.bench]\nrule = "Host(`bench.local`) || Host(`127.0.0.1`)"\nservice = "up"')
# The same upstream through a chain: headers, stripPrefix, basicAuth (bob:U*U, cached after the
# first check) and a rate limit far above the load.
print('[http.routers.chained]\nrule = "Host(`mw.bench.local`)"\nservice = "up"\nmiddlewares = ["hdr", "strip", "auth", "limit"]')
print('[http.middlewares.hdr.headers]\nframeDeny = true\ncustomRequestHeaders = { X-Bench = "1" }')
print('[http.middlewares.strip.stripPrefix]\nprefixes = ["/api"]')
print('[http.middlewares.auth.basicAuth]\nusers = ["bob:$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"]')
print('[http.middlewares.limit.rateLimit]\naverage = 100000000\nburst = 100000000')
print(f'[http.services.up.loadBalancer]\nservers = [{{ url = "http://127.0.0.1:{up}" }}]')
# A canary split: a weighted service (3:1) over two load balancers of two servers each, all of
# them the same upstream, so that only the picks differ from the plain route.
print('[http.routers.weighted]\nrule = "Host(`wt.bench.local`)"\nservice = "wt"')
print('[http.services.wt.weighted]\nservices = [{ name = "stable", weight = 3 }, { name = "canary", weight = 1 }]')
for name in ("stable", "canary"):
    print(f'[http.services.{name}.loadBalancer]\nservers = [{{ url = "http://127.0.0.1:{up}" }}, {{ url = "http://127.0.0.1:{up}/" }}]')
PY
  "$PYLON" storeconfig --dynamic "$WORK/dynamic.toml" "${STORE[@]}" >/dev/null
}
routers 10
"$PYLON" run --configfile "$WORK/pylon.toml" "${STORE[@]}" 2>"$WORK/pylon.log" & PID_OF[pylon]=$!; PIDS+=($!)
# The same Pylon with Prometheus metrics on (every level counted), on ports of its own: the
# alternating pairs below compare it with the plain route. Idle while the other is measured.
METRICS_PLAIN=$(port); METRICS_TLS=$(port); METRICS_ADMIN=$(port)
sed -e "s/127.0.0.1:${PLAIN[pylon]}\"/127.0.0.1:$METRICS_PLAIN\"/" -e "s/127.0.0.1:${TLS[pylon]}\"/127.0.0.1:$METRICS_TLS\"/" \
  -e "s/127.0.0.1:$ADMIN\"/127.0.0.1:$METRICS_ADMIN\"/" "$WORK/pylon.toml" > "$WORK/pylon-metrics.toml"
printf '[metrics.prometheus]\nentryPoint = "traefik"\naddRoutersLabels = true\n' >> "$WORK/pylon-metrics.toml"
"$PYLON" run --configfile "$WORK/pylon-metrics.toml" "${STORE[@]}" --datadir "$WORK/metrics-data" 2>"$WORK/pylon-metrics.log" & PID_OF[metrics]=$!; PIDS+=($!)
for p in nginx haproxy caddy pylon; do wait_port "${PLAIN[$p]}"; wait_port "${TLS[$p]}"; done
wait_port "$METRICS_PLAIN"; wait_port "$METRICS_ADMIN"
sleep 1
# wrk counts any answer: every route measured must answer 200 first.
for host in bench.local mw.bench.local wt.bench.local; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" -H "Authorization: Basic Ym9iOlUqVQ==" "http://127.0.0.1:${PLAIN[pylon]}/api/x")
  [ "$code" = 200 ] || { echo "bench: $host answers $code, not 200" >&2; cat "$WORK/pylon.log" >&2; exit 1; }
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: bench.local" "http://127.0.0.1:$METRICS_PLAIN/api/x")
[ "$code" = 200 ] || { echo "bench: Pylon with metrics answers $code, not 200" >&2; cat "$WORK/pylon-metrics.log" >&2; exit 1; }

h1() { # h1 PORT [HOST [PATH [HEADER]]] -> "rps p50ms p99ms"
  local extra=(); [ -n "${4:-}" ] && extra=(-H "$4")
  wrk -t2 -c64 -d"${DURATION}s" --latency -H "Host: ${2:-bench.local}" "${extra[@]}" "http://127.0.0.1:$1${3:-/}" 2>&1 | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=ms($2) } /^ +99%/ { p99=ms($2) }
    END { printf "%d %.2f %.2f\n", rps, p50, p99 }'
}
h2() { # h2 PORT -> "rps p50ms p99ms"
  local log="$WORK/h2load.log"; rm -f "$log"
  h2load -D "$DURATION" -c64 -m10 -t2 --log-file="$log" --connect-to="127.0.0.1:$1" \
    "https://bench.local:$1/" > "$WORK/h2load.out" 2>&1 || true
  local rps; rps=$(awk '/finished in/ { for (i=1;i<=NF;i++) if ($(i+1) ~ /req\/s/) print int($i) }' "$WORK/h2load.out" | head -n1)
  sort -n -k3 "$log" | awk -v rps="${rps:-0}" '{ d[NR]=$3 } END {
    if (NR == 0) { print rps, 0, 0; exit } printf "%d %.2f %.2f\n", rps, d[int(NR*0.5)]/1000, d[int(NR*0.99)]/1000 }'
}

cpu_ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat; }
TICK=$(getconf CLK_TCK)
per_cpu() { # per_cpu RPS TICKS -> requests per proxy CPU-second
  awk -v r="$1" -v t="$2" -v d="$DURATION" -v k="$TICK" 'BEGIN { if (t == 0) print "n/a"; else printf "%d", r * d / (t / k) }'
}
AUTH="Authorization: Basic Ym9iOlUqVQ=="
declare -A SUM
for round in $(seq "$ROUNDS"); do
  for route in plain chained weighted; do
    pid=${PID_OF[pylon]}
    before=$(cpu_ticks "$pid")
    case $route in
      plain) read -r r a b < <(h1 "${PLAIN[pylon]}" bench.local /api/x) ;;
      chained) read -r r a b < <(h1 "${PLAIN[pylon]}" mw.bench.local /api/x "$AUTH") ;;
      weighted) read -r r a b < <(h1 "${PLAIN[pylon]}" wt.bench.local /api/x) ;;
    esac
    ticks=$(( $(cpu_ticks "$pid") - before ))
    SUM[$route,rps]+=" $r"; SUM[$route,p99]+=" $b"; SUM[$route,cpu]+=" $(per_cpu "$r" "$ticks")"
    echo "round $round pylon $route route: $r req/s p99 ${b}ms" >&2
  done
  for p in pylon nginx haproxy caddy; do
    read -r r a b < <(h1 "${PLAIN[$p]}"); SUM[$p,h1,rps]+=" $r"; SUM[$p,h1,p50]+=" $a"; SUM[$p,h1,p99]+=" $b"
    echo "round $round $p http/1.1: $r req/s p50 ${a}ms p99 ${b}ms" >&2
  done
  for p in pylon nginx haproxy caddy; do
    read -r r a b < <(h2 "${TLS[$p]}"); SUM[$p,h2,rps]+=" $r"; SUM[$p,h2,p50]+=" $a"; SUM[$p,h2,p99]+=" $b"
    echo "round $round $p h2/tls: $r req/s p50 ${a}ms p99 ${b}ms" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR]=$1 } END { print v[int((NR+1)/2)] }'; }
ratio3() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.3f", a / b }'; }

# Metrics off (the plain route) against on (the second Pylon), in pairs whose order alternates
# (off-on, on-off, ...), so that neither side always runs first: each pair gives one ratio, and
# the medians of the ratios are reported. The effect is a few percent; a single run's noise on
# two shared cores is larger.
PAIRS=${PAIRS:-6}
[ "$PAIRS" -ge 1 ] || { echo "bench: PAIRS must be at least 1" >&2; exit 1; }
declare -A AB
for pair in $(seq "$PAIRS"); do
  order="off on"; [ $((pair % 2)) = 0 ] && order="on off"
  for side in $order; do
    port=${PLAIN[pylon]}; pid=${PID_OF[pylon]}
    [ "$side" = on ] && { port=$METRICS_PLAIN; pid=${PID_OF[metrics]}; }
    before=$(cpu_ticks "$pid")
    read -r r a b < <(h1 "$port" bench.local /api/x)
    ticks=$(( $(cpu_ticks "$pid") - before ))
    AB[$side,rps]+=" $r"; AB[$side,p99]+=" $b"; AB[$side,cpu]+=" $(per_cpu "$r" "$ticks")"
    AB[$side,last]=$r; AB[$side,lastcpu]=$(per_cpu "$r" "$ticks")
    echo "pair $pair metrics $side: $r req/s p99 ${b}ms" >&2
  done
  AB[ratio,rps]+=" $(ratio3 "${AB[on,last]}" "${AB[off,last]}")"
  AB[ratio,cpu]+=" $(ratio3 "${AB[on,lastcpu]}" "${AB[off,lastcpu]}")"
done
declare -A RSS
RSS[pylon]=$(peak_rss_mib "${PID_OF[pylon]}")
RSS[haproxy]=$(peak_rss_mib "${PID_OF[haproxy]}")
RSS[caddy]=$(peak_rss_mib "${PID_OF[caddy]}")
RSS[nginx]=$(peak_rss_mib $(pgrep -f "nginx.*$WORK/nginx/" || true))

# The metrics replica counted what it served: its entrypoint counter holds every measured request.
COUNTED=$(curl -s "http://127.0.0.1:$METRICS_ADMIN/metrics" | awk '/^traefik_entrypoint_requests_total\{.*entrypoint="web"/ { s += $NF } END { printf "%d", s }')
[ "${COUNTED:-0}" -gt 1000 ] || { echo "bench: the metrics replica counted ${COUNTED:-0} requests" >&2; exit 1; }
kill "${PID_OF[metrics]}" 2>/dev/null || true

# Scale: the same load with 10,000 routers in the table.
ROUTERS10=$(echo "${SUM[pylon,h1,rps]}" | median)
routers 10000
sleep 3
read -r ROUTERS10K _ _ < <(h1 "${PLAIN[pylon]}")

# Store change to served: a new router per change, polled until it answers.
PROPAGATION=$(python3 - "$EC" "${PLAIN[pylon]}" "$UP" <<'PY'
import base64, http.client, json, sys, time
etcd, pylon, up = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def put(key, value):
    c = http.client.HTTPConnection("127.0.0.1", int(etcd), timeout=5)
    b = lambda s: base64.b64encode(s.encode()).decode()
    c.request("POST", "/v3/kv/put", json.dumps({"key": b(key), "value": b(value)}))
    assert c.getresponse().status == 200
conn = http.client.HTTPConnection("127.0.0.1", pylon, timeout=5)
delays = []
for i in range(100):
    host = f"change{i}.bench.local"
    put(f"traefik/http/routers/change{i}/service", "up")
    start = time.monotonic()
    put(f"traefik/http/routers/change{i}/rule", f"Host(`{host}`)")
    deadline = start + 10
    while time.monotonic() < deadline:
        conn.request("GET", "/", headers={"Host": host})
        r = conn.getresponse(); r.read()
        if r.status == 200:
            break
    delays.append((time.monotonic() - start) * 1000)
delays.sort()
print(f"{delays[49]:.1f} {delays[98]:.1f}")
PY
)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d); do not edit by hand."
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/{printf "%d GiB", $2/1048576}' /proc/meminfo), $(uname -sr)."
  echo "Load generator, proxy and upstream share these cores, so compare the ratios, not the absolute numbers."
  echo "Each figure is the median of $ROUNDS interleaved rounds of ${DURATION}s; 64 connections (h2: 10 streams each)."
  echo "Peers: nginx $(nginx -v 2>&1 | sed 's/.*\///'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), Caddy $(caddy version | awk '{print $1}'); Pylon $(git describe --always --dirty) (release build)."
  echo
  echo "| proxy | HTTP/1.1 req/s | p50 ms | p99 ms | h2/TLS req/s | p50 ms | p99 ms | peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|"
  for p in pylon nginx haproxy caddy; do
    echo "| $p | $(echo "${SUM[$p,h1,rps]}" | median) | $(echo "${SUM[$p,h1,p50]}" | median) | $(echo "${SUM[$p,h1,p99]}" | median) | $(echo "${SUM[$p,h2,rps]}" | median) | $(echo "${SUM[$p,h2,p50]}" | median) | $(echo "${SUM[$p,h2,p99]}" | median) | ${RSS[$p]} |"
  done
  echo
  echo "Pylon's ratio to each peer (requests/s: above 1 is better; p99: below 1 is better):"
  echo
  echo "| peer | HTTP/1.1 req/s | HTTP/1.1 p99 | h2 req/s | h2 p99 |"
  echo "|---|---|---|---|---|"
  for p in nginx haproxy caddy; do
    m() { echo "${SUM[$1,$2,$3]}" | median; }
    echo "| $p | $(ratio "$(m pylon h1 rps)" "$(m $p h1 rps)") | $(ratio "$(m pylon h1 p99)" "$(m $p h1 p99)") | $(ratio "$(m pylon h2 rps)" "$(m $p h2 rps)") | $(ratio "$(m pylon h2 p99)" "$(m $p h2 p99)") |"
  done
  echo
  echo "## The cost of scale"
  echo
  echo "| routers in the table | HTTP/1.1 req/s |"
  echo "|---|---|"
  echo "| 10 | $ROUTERS10 |"
  echo "| 10,000 | $ROUTERS10K |"
  echo
  echo "## The cost of middlewares and weighted services"
  echo
  echo "HTTP/1.1 to \`/api/x\` on the same upstream, interleaved with the rounds above: a route without middlewares, a"
  echo "route through \`headers\` + \`stripPrefix\` + \`basicAuth\` (bcrypt, cached) + \`rateLimit\` (a limit far above the load),"
  echo "and a weighted service (3:1) over two load balancers of two servers each (two picks per request, from every worker)."
  echo
  echo "| route | req/s | p99 ms | req per Pylon CPU-second |"
  echo "|---|---|---|---|"
  for route in plain chained weighted; do
    echo "| $route | $(echo "${SUM[$route,rps]}" | median) | $(echo "${SUM[$route,p99]}" | median) | $(echo "${SUM[$route,cpu]}" | median) |"
  done
  echo
  echo "Chained to plain: $(ratio "$(echo "${SUM[chained,rps]}" | median)" "$(echo "${SUM[plain,rps]}" | median)") in req/s, $(ratio "$(echo "${SUM[chained,cpu]}" | median)" "$(echo "${SUM[plain,cpu]}" | median)") in req per CPU-second."
  echo "Weighted to plain: $(ratio "$(echo "${SUM[weighted,rps]}" | median)" "$(echo "${SUM[plain,rps]}" | median)") in req/s, $(ratio "$(echo "${SUM[weighted,cpu]}" | median)" "$(echo "${SUM[plain,cpu]}" | median)") in req per CPU-second."
  echo
  echo "## The cost of Prometheus metrics"
  echo
  echo "The plain route against a second Pylon, identical but for \`[metrics.prometheus]\` with \`addRoutersLabels = true\`"
  echo "(entrypoint, router and service series, histograms and bytes, per request): $PAIRS pairs of ${DURATION}-second wrk runs,"
  echo "the order alternating (off-on, on-off, ...). The metrics Pylon counted $COUNTED requests on its entrypoint."
  echo
  echo "| metrics | req/s | p99 ms | req per Pylon CPU-second |"
  echo "|---|---|---|---|"
  echo "| off | $(echo "${AB[off,rps]}" | median) | $(echo "${AB[off,p99]}" | median) | $(echo "${AB[off,cpu]}" | median) |"
  echo "| on | $(echo "${AB[on,rps]}" | median) | $(echo "${AB[on,p99]}" | median) | $(echo "${AB[on,cpu]}" | median) |"
  echo
  echo "On to off, median of the pairs' ratios: $(echo "${AB[ratio,rps]}" | median) in req/s (pairs:${AB[ratio,rps]}),"
  echo "$(echo "${AB[ratio,cpu]}" | median) in req per CPU-second (pairs:${AB[ratio,cpu]}). Instructions per request, which"
  echo "noise does not move, are in the profile below."
  echo
  read -r P50 P99 <<<"$PROPAGATION"
  echo "Store change to served (a new router written to etcd until Pylon routes it), over 100 changes: p50 ${P50} ms, p99 ${P99} ms."
} > "$OUT"
{ echo; scripts/bench-acme.sh; } >> "$OUT"
{ echo; scripts/profile.sh; } >> "$OUT"
{ echo; cat docs/perf-log.md; } >> "$OUT"
cat "$OUT"
