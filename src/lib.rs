//! Pylon: a reverse proxy and ACME client whose replicas share all state through a KV store.
//!
//! The crate map:
//! - [`cli`]: the command line, Traefik v1.7's flags and dotted overrides.
//! - [`config`]: the static configuration pipeline (sources → serde types → validated model).
//! - [`dynamic`]: routers, services and certificates, validated; bad ones rejected alone.
//! - [`setup`]: which file, store and overrides a command uses.
//! - [`store`]: the store facade, its backends (embedded, etcd with per-member watches, Consul),
//!   leases and locks.
//! - [`storeconfig`]: `pylon storeconfig`, the static configuration into the store.
//! - [`app`]: `pylon run`, the start-up steps and shutdown.
//! - [`watcher`]: the dynamic configuration followed live and swapped in.
//! - [`server`]: entrypoints, connections (admission under `maxConnections`, idle and write
//!   timeouts, stalled h2 streams), `/ping`, the lifecycle on SIGTERM.
//! - [`proxy`]: the request pipeline, from the head's checks to the forwarded response.
//! - [`routing`]: Traefik routing rules and the routing table.
//! - [`middleware`]: Traefik's HTTP middlewares and the chain that runs them between routing
//!   and the service.
//! - [`balancer`]: services as the request path sees them (load balancers, weights, mirrors).
//! - [`upstream`]: the HTTP client to upstream servers.
//! - [`tls`]: the live certificate store, entrypoint TLS settings, the handshake.
//! - [`acme`]: distributed ACME (orders under a lock, challenges answered by every replica).
//! - [`access_log`]: the access log.
//! - [`calendar`]: Unix time to and from calendar dates.
//! - [`der`]: just enough DER to read the X.509 fields ACME and `passTLSClientCert` need.
//! - [`limits`]: the bounds on untrusted input (nesting, rule length, regex size).
//! - [`logging`]: tracing set-up.

pub mod access_log;
pub mod acme;
pub mod app;
pub mod balancer;
pub mod calendar;
pub mod cli;
pub mod config;
pub mod der;
pub mod dynamic;
pub mod limits;
pub mod logging;
pub mod middleware;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod setup;
pub mod store;
pub mod storeconfig;
pub mod tls;
pub mod upstream;
pub mod watcher;
