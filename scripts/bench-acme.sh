#!/usr/bin/env bash
# Time to a certificate, on loopback against one real Pebble (HTTP-01 for Pylon, TLS-ALPN-01
# for Caddy, PEBBLE_VA_NOSLEEP=1):
#   - Pylon: three replicas on one etcd; a new router with a new Host and tls.certResolver is
#     written to etcd, and the clock stops when all three replicas serve a certificate for it
#     that verifies against Pebble's root (p50/p99 over 20 names, one after another);
#   - Caddy: a site with a new name is added by `caddy reload`, and the clock stops when Caddy
#     serves a verifying certificate for it (p50 over 5 names).
# Prints a Markdown section; scripts/bench.sh appends it to docs/benchmarks.md.
#   scripts/bench-acme.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
command -v caddy >/dev/null || { echo "bench-acme.sh: caddy is missing (scripts/bench.sh installs it)" >&2; exit 1; }
cargo build --release --locked -q
PYLON=$PWD/target/release/pylon

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT
. scripts/lib.sh

# etcd.
start_etcd

# Pebble: its API certificate from a CA made here; DNS from challtestsrv (every name is
# 127.0.0.1); HTTP-01 on replica 1's plain port, TLS-ALPN-01 on Caddy's TLS port.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=Pebble API CA" \
  -keyout "$WORK/ca-key.pem" -out "$WORK/api-ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$WORK/api-key.pem" -out "$WORK/api.csr" 2>/dev/null
openssl x509 -req -in "$WORK/api.csr" -CA "$WORK/api-ca.pem" -CAkey "$WORK/ca-key.pem" -CAcreateserial -days 2 \
  -extfile <(printf "subjectAltName=IP:127.0.0.1,DNS:localhost") -out "$WORK/api-cert.pem" 2>/dev/null
DNS=$(port); API=$(port); MGMT=$(port)
declare -A WEB SECURE ADMIN
for r in 1 2 3; do WEB[$r]=$(port); SECURE[$r]=$(port); ADMIN[$r]=$(port); done
CADDY_HTTP=$(port); CADDY_TLS=$(port); CADDY_ADMIN=$(port)
pebble-challtestsrv -dns01 "127.0.0.1:$DNS" -http01 "" -https01 "" -tlsalpn01 "" -management "127.0.0.1:$(port)" \
  -defaultIPv4 127.0.0.1 -defaultIPv6 "" >/dev/null 2>&1 & PIDS+=($!)
cat > "$WORK/pebble.json" <<EOF
{ "pebble": { "listenAddress": "127.0.0.1:$API", "managementListenAddress": "127.0.0.1:$MGMT",
  "certificate": "$WORK/api-cert.pem", "privateKey": "$WORK/api-key.pem",
  "httpPort": ${WEB[1]}, "tlsPort": $CADDY_TLS, "ocspResponderURL": "", "externalAccountBindingRequired": false } }
EOF
PEBBLE_VA_NOSLEEP=1 pebble -config "$WORK/pebble.json" -dnsserver "127.0.0.1:$DNS" -strict=false >"$WORK/pebble.log" 2>&1 & PIDS+=($!)
wait_port "$MGMT"
curl -sS --cacert "$WORK/api-ca.pem" "https://127.0.0.1:$MGMT/roots/0" > "$WORK/root.pem"

# Three Pylon replicas that obtain certificates for routers' Host rules.
for r in 1 2 3; do
  cat > "$WORK/pylon$r.toml" <<EOF
logLevel = "WARN"
defaultEntryPoints = ["web", "websecure"]
[entryPoints.web]
address = "127.0.0.1:${WEB[$r]}"
[entryPoints.websecure]
address = "127.0.0.1:${SECURE[$r]}"
[entryPoints.websecure.tls]
[entryPoints.traefik]
address = "127.0.0.1:${ADMIN[$r]}"
[ping]
entryPoint = "traefik"
[acme]
email = "ops@bench.test"
caServer = "https://127.0.0.1:$API/dir"
caCertificates = ["$WORK/api-ca.pem"]
entryPoint = "websecure"
onHostRule = true
[acme.httpChallenge]
entryPoint = "web"
EOF
  "$PYLON" run --configfile "$WORK/pylon$r.toml" "${STORE[@]}" --datadir "$WORK/data$r" 2>"$WORK/pylon$r.log" & PIDS+=($!)
done
for r in 1 2 3; do wait_port "${SECURE[$r]}"; done
# The account is created with the first certificate; keep it out of the timed names.
NAMES=$(python3 - "$EC" "$WORK/root.pem" "${SECURE[1]}" "${SECURE[2]}" "${SECURE[3]}" <<'PY'
import base64, http.client, json, socket, ssl, sys, time
etcd, root, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
ctx = ssl.create_default_context(cafile=root)
def put(key, value):
    c = http.client.HTTPConnection("127.0.0.1", int(etcd), timeout=5)
    b = lambda s: base64.b64encode(s.encode()).decode()
    c.request("POST", "/v3/kv/put", json.dumps({"key": b(key), "value": b(value)}))
    assert c.getresponse().status == 200
def serves(port, name):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            with ctx.wrap_socket(s, server_hostname=name):
                return True
    except (OSError, ssl.SSLError):
        return False
def obtain(name):
    put(f"traefik/http/routers/{name}/service", "up")
    put(f"traefik/http/routers/{name}/tls/certresolver", "default")
    start = time.monotonic()
    put(f"traefik/http/routers/{name}/rule", f"Host(`{name}`)")
    waiting = set(ports)
    while waiting and time.monotonic() < start + 60:
        waiting = {p for p in waiting if not serves(p, name)}
        if waiting:
            time.sleep(0.01)
    assert not waiting, f"{name} not served by {waiting} within 60 s"
    return (time.monotonic() - start) * 1000
put("traefik/http/services/up/loadbalancer/servers/0/url", "http://127.0.0.1:9")
obtain("warmup.pylon.bench")
delays = sorted(obtain(f"n{i}.pylon.bench") for i in range(20))
print(f"{delays[9]:.0f} {delays[19]:.0f}")
PY
)

# Caddy: one site per reload, certificates from the same Pebble over TLS-ALPN-01.
caddy_sites() {
  { printf '{\n  admin 127.0.0.1:%s\n  http_port %s\n  https_port %s\n  storage file_system %s\n}\n' \
      "$CADDY_ADMIN" "$CADDY_HTTP" "$CADDY_TLS" "$WORK/caddy-data"
    for name in "$@"; do
      printf '%s {\n  tls {\n    issuer acme {\n      dir https://127.0.0.1:%s/dir\n      email ops@bench.test\n      trusted_roots %s\n      disable_http_challenge\n    }\n  }\n  respond "ok"\n}\n' \
        "$name" "$API" "$WORK/api-ca.pem"
    done; } > "$WORK/Caddyfile"
}
# served_after START_NS NAME: polls Caddy until it serves NAME a verifying certificate; prints
# the milliseconds since START_NS (wall clock, as `date +%s%N`).
served_after() {
  python3 - "$1" "$2" "$CADDY_TLS" "$WORK/root.pem" <<'PY'
import socket, ssl, sys, time
start, name, port, root = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=root)
while time.time_ns() < start + 60 * 10**9:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s, ctx.wrap_socket(s, server_hostname=name):
            print(f"{(time.time_ns() - start) / 1e6:.0f}")
            sys.exit(0)
    except (OSError, ssl.SSLError):
        time.sleep(0.01)
sys.exit(f"caddy never served {name}")
PY
}
SITES=(c-warmup.caddy.bench)
caddy_sites "${SITES[@]}"
HOME=$WORK XDG_DATA_HOME=$WORK caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 & PIDS+=($!)
wait_port "$CADDY_ADMIN"
served_after "$(date +%s%N)" c-warmup.caddy.bench >/dev/null || { tail -20 "$WORK/caddy.log" >&2; exit 1; }
CADDY_DELAYS=()
for i in 0 1 2 3 4; do
  SITES+=("c$i.caddy.bench")
  caddy_sites "${SITES[@]}"
  start=$(date +%s%N)
  HOME=$WORK caddy reload --config "$WORK/Caddyfile" --adapter caddyfile --address "127.0.0.1:$CADDY_ADMIN" >/dev/null 2>&1
  CADDY_DELAYS+=("$(served_after "$start" "c$i.caddy.bench")")
done
CADDY=$(printf '%s\n' "${CADDY_DELAYS[@]}" | sort -g | sed -n 3p)
CADDY_MAX=$(printf '%s\n' "${CADDY_DELAYS[@]}" | sort -g | tail -n1)
echo "caddy: ${CADDY_DELAYS[*]} ms" >&2
read -r P50 P99 <<<"$NAMES"
echo "## Time to a certificate"
echo
echo "One Pebble $(dpkg-query -W -f='${Version}' pebble 2>/dev/null | cut -d+ -f1) on loopback with \`PEBBLE_VA_NOSLEEP=1\`; the account already exists for both."
echo
echo "| | what is timed | p50 ms | p99 ms |"
echo "|---|---|---|---|"
echo "| Pylon, 3 replicas on etcd (HTTP-01) | new router written to etcd → all 3 replicas serve a verifying certificate (20 names) | $P50 | $P99 |"
echo "| Caddy $(caddy version | awk '{print $1}') (TLS-ALPN-01) | \`caddy reload\` with a new site → Caddy serves a verifying certificate (5 names) | $CADDY | $CADDY_MAX (max of 5) |"
