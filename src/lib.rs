//! Pylon: a reverse proxy and ACME client whose replicas share all state through a KV store.
//!
//! The crate is two planes and the start-up that wires them (see `docs/design.md`).
//!
//! **Data plane** ([`data`]), per request and per handshake; imports nothing from
//! [`control`] (a test checks), and waits for it only in an onDemand handshake:
//! - [`data::plane`]: the immutable snapshot the data plane reads (routing table, certificate
//!   index, TLS configurations, challenge answers, onDemand admission), published through one
//!   `ArcSwap`.
//! - [`data::server`]: entrypoints, connections (admission under `maxConnections`, idle and
//!   write timeouts, stalled h2 streams), `/ping`, the lifecycle on SIGTERM.
//! - [`data::proxy`]: the request pipeline, from the head's checks to the forwarded response.
//! - [`data::routing`]: Traefik routing rules and the routing table.
//! - [`data::middleware`]: Traefik's HTTP middlewares and the chain that runs them between
//!   routing and the service.
//! - [`data::balancer`]: services as the request path sees them (load balancers, weights,
//!   mirrors); its health checks run on the control plane's task tree.
//! - [`data::upstream`]: the HTTP client to upstream servers.
//! - [`data::tls`]: certificates and their index, TLS options and the configuration each
//!   handshake gets, the handshake.
//! - [`data::access_log`]: the access log.
//! - [`data::metrics`]: request metrics, per worker thread, summed at scrape time.
//!
//! **Control plane** ([`control`]), in the background on the main thread's runtime:
//! - [`control::store`]: the store facade, its backends (embedded, etcd with per-member
//!   watches, Consul), leases and locks.
//! - [`control::watcher`]: the dynamic configuration followed live and published on the plane.
//! - [`control::acme`]: distributed ACME (orders under a lock, answers published for every
//!   replica).
//! - [`control::replicas`]: each replica's record in the store, under its lease, and the
//!   cluster's records followed.
//! - [`control::events`]: the event bus (certificates, configuration) to the log and its
//!   subscribers.
//!
//! **Observability** ([`observe`]), between the planes: the control plane's numbers from the
//! event bus ([`observe::control`]), the `/metrics` exposition ([`observe::prometheus`]),
//! Traefik's API ([`observe::api`]) and the cluster view ([`observe::cluster`]);
//! the data plane's request metrics are [`data::metrics`].
//!
//! **Configuration, start-up and commands**:
//! - [`cli`]: the command line, Traefik v1.7's flags and dotted overrides.
//! - [`config`]: the static configuration pipeline (sources → serde types → validated model).
//! - [`dynamic`]: the dynamic configuration's model (routers, services, middlewares, TLS
//!   options, certificates), validated owner by owner, bad ones rejected alone; the control
//!   plane builds it, the data plane's tables are built from it.
//! - [`setup`]: which file, store and overrides a command uses.
//! - [`app`]: `pylon run`, the start-up steps, the task tree and shutdown.
//! - [`check`]: `--check`, the command line and configuration validated without side effects.
//! - [`storeconfig`]: `pylon storeconfig`, the static configuration into the store.
//!
//! **Shared leaves**: [`calendar`] (Unix time and calendar dates), [`der`] (just enough DER for
//! the X.509 fields ACME and `passTLSClientCert` need), [`limits`] (bounds on untrusted input),
//! [`logging`] (tracing set-up).

pub mod app;
pub mod calendar;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod data;
pub mod der;
pub mod dynamic;
pub mod limits;
pub mod logging;
pub mod observe;
pub mod setup;
pub mod storeconfig;
