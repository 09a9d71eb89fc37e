#!/usr/bin/env bash
# Installs the Debian packages Pylon's build and tests need. Idempotent; needs root (or sudo).
#   protobuf-compiler  protoc, for the etcd-client crate's build
#   libprotobuf-dev    google/protobuf/*.proto, which that build imports
#   etcd-server        etcd 3.4, for the store tests
#   etcd-client        etcdctl, which saves and restores etcd snapshots in the restore test
#   consul             Consul 1.8.7 from Debian 11 (bullseye): Debian 12 has none
#   curl               the README's quickstart check and the TLS/h2 tests' client
#   haproxy            the load balancer in front of replicas in the graceful-termination test
#   pebble             the ACME test server (and pebble-challtestsrv, its DNS) for the ACME tests
#   python3-grpcio     a real gRPC server (Debian's /usr/bin/python3) for the gRPC and grpcWeb tests
#   prometheus         a real Prometheus that scrapes replicas in the metrics test (Flagger's queries)
#   chromium           headless Chromium that loads the dashboard in the dashboard test
#   python3-websocket  the dashboard test's client of Chromium's DevTools protocol (Debian's /usr/bin/python3)
#   python3-yaml       the manifests test's reader of k8s/ (Debian's /usr/bin/python3)
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v curl >/dev/null || need+=(curl)
command -v haproxy >/dev/null || need+=(haproxy)
command -v pebble >/dev/null || need+=(pebble)
/usr/bin/python3 -c 'import grpc' 2>/dev/null || need+=(python3-grpcio)
command -v prometheus >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
/usr/bin/python3 -c 'import websocket' 2>/dev/null || need+=(python3-websocket)
/usr/bin/python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)

bullseye_source() {
  # The machine's own Debian source tells us the mirror and keyring to reuse.
  local src=/etc/apt/sources.list.d/debian.sources uris signed
  uris=$(sed -n 's/^URIs:[[:space:]]*//p' "$src" 2>/dev/null | grep -v security | head -n1 || true)
  signed=$(sed -n 's/^Signed-By:[[:space:]]*//p' "$src" 2>/dev/null | head -n1 || true)
  if [ -z "$uris" ]; then
    uris=$(awk '$1 == "deb" && $3 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  fi
  [ -n "$uris" ] || { echo "install-deps: no Debian mirror found in the apt sources; cannot add bullseye for consul" >&2; exit 1; }
  [ -n "$signed" ] || signed="/usr/share/keyrings/debian-archive-keyring.gpg"
  $SUDO tee /etc/apt/sources.list.d/pylon-bullseye.sources >/dev/null <<SRC
Types: deb
URIs: $uris
Suites: bullseye
Components: main
Signed-By: $signed
SRC
  $SUDO tee /etc/apt/preferences.d/pylon-bullseye >/dev/null <<PIN
Package: *
Pin: release n=bullseye
Pin-Priority: 100
PIN
}

want_consul=0
command -v consul >/dev/null || want_consul=1

if [ ${#need[@]} -eq 0 ] && [ $want_consul -eq 0 ]; then
  echo "install-deps: everything is already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
[ $want_consul -eq 1 ] && bullseye_source
$SUDO apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ $want_consul -eq 1 ]; then
  if ! $SUDO apt-get install -y -qq --no-install-recommends -t bullseye consul; then
    echo "install-deps: could not install consul from Debian 11 (bullseye) main;" >&2
    echo "  check /etc/apt/sources.list.d/pylon-bullseye.sources and that the mirror serves bullseye" >&2
    exit 1
  fi
fi
# Installing etcd-server on a systemd host starts a service on :2379; tests use their own ports,
# but do not leave a stray daemon around on developer machines.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
fi
echo "install-deps: protoc $(protoc --version | awk '{print $2}'), etcd $(etcd --version | awk 'NR==1{print $3}'), $(consul version | head -1)"
