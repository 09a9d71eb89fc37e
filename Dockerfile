# runtime-files: /usr/local/bin/pylon
#
# Pylon's container image: the `pylon` binary, built in a Rust stage, on Debian bookworm-slim
# with the system's CA roots (Pylon trusts them through rustls-native-certs, for the ACME CA and
# for upstream HTTPS). It runs as the unprivileged user `pylon` (uid/gid 10001) and can still
# bind :80 and :443: the binary carries the file capability cap_net_bind_service.
# The k8s/ manifests run it as `image: pylon:latest`.
#
# CI does not build this image (the CI machine cannot pull base images); build it yourself:
#
#   docker build -t pylon:latest .
#
# and run one replica on the embedded store (its data in ./pylon-data under the working
# directory /var/lib/pylon; add `-v pylon-data:/var/lib/pylon` to keep it), its routers from a
# watched directory of dynamic files:
#
#   docker run --rm -p 80:80 -p 8080:8080 -v "$PWD/dynamic:/etc/pylon/dynamic:ro" pylon:latest \
#     --entryPoints.web.address=:80 --providers.file.directory=/etc/pylon/dynamic \
#     --api.insecure=true --ping=true
#   curl http://127.0.0.1:8080/ping
#
# or with a store, as the replicas in k8s/ do: `docker run pylon:latest --etcd --etcd.endpoint=HOST:2379`.
# Everything after the image name is Pylon's command line (the entrypoint is the binary).

FROM rust:1-bookworm AS build
# etcd-client's build script compiles etcd's .proto files with protoc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what `cargo build --bin pylon` reads: there is no build.rs, and the files pulled in with
# include_str! (the dashboard's page, script and style) live under src/. configs/traefik.toml
# is included only by a #[cfg(test)] module, which a release build does not compile.
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
RUN cargo build --release --locked --bin pylon

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pylon /usr/local/bin/pylon
# The file capability lets the non-root user bind ports below 1024. In Kubernetes the container
# keeps NET_BIND_SERVICE in its capability set (capabilities.add), which is what lets the file
# capability through under allowPrivilegeEscalation: false (no_new_privs).
RUN setcap cap_net_bind_service=+ep /usr/local/bin/pylon \
 && apt-get purge -y --auto-remove libcap2-bin \
 && groupadd --system --gid 10001 pylon \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/pylon --no-create-home \
      --shell /usr/sbin/nologin pylon \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/pylon
# The embedded store's default --datadir is ./pylon-data, relative to this directory.
WORKDIR /var/lib/pylon
USER 10001:10001
# 80 and 443: the seed's http and https entrypoints; 8080: the `traefik` entrypoint (/ping,
# /metrics, the API and the dashboard).
EXPOSE 80 443 8080
ENTRYPOINT ["/usr/local/bin/pylon"]
