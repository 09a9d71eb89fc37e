//! Pylon: a reverse proxy and ACME client whose replicas share all state through a KV store.
//!
//! The crate is two planes and the start-up that wires them (see `docs/design.md`).
//!
//! **Data plane**, per request and per handshake; imports nothing from [`store`], [`acme`],
//! [`watcher`] or [`dynamic`] (a test checks), and waits for the control plane only in an
//! onDemand handshake:
//! - [`plane`]: the immutable snapshot the data plane reads (routing table, certificate index,
//!   challenge answers, onDemand admission), published through one `ArcSwap`.
//! - [`server`]: entrypoints, connections (admission under `maxConnections`, idle and write
//!   timeouts, stalled h2 streams), `/ping`, the lifecycle on SIGTERM.
//! - [`proxy`]: the request pipeline, from the head's checks to the forwarded response.
//! - [`routing`]: Traefik routing rules and the routing table.
//! - [`middleware`]: Traefik's HTTP middlewares and the chain that runs them between routing
//!   and the service.
//! - [`balancer`]: services as the request path sees them (load balancers, weights, mirrors);
//!   its health checks run on the control plane's task tree.
//! - [`upstream`]: the HTTP client to upstream servers.
//! - [`tls`]: certificates and their index, entrypoint TLS settings, the handshake.
//! - [`access_log`]: the access log.
//!
//! **Control plane**, in the background on the main thread's runtime:
//! - [`store`]: the store facade, its backends (embedded, etcd with per-member watches, Consul),
//!   leases and locks.
//! - [`watcher`]: the dynamic configuration followed live and published on the plane.
//! - [`dynamic`]: routers, services and certificates, validated; bad ones rejected alone.
//! - [`acme`]: distributed ACME (orders under a lock, answers published for every replica).
//! - [`events`]: the event bus (certificates, configuration) to the log and its subscribers.
//!
//! **Start-up and commands**:
//! - [`cli`]: the command line, Traefik v1.7's flags and dotted overrides.
//! - [`config`]: the static configuration pipeline (sources → serde types → validated model).
//! - [`setup`]: which file, store and overrides a command uses.
//! - [`app`]: `pylon run`, the start-up steps, the task tree and shutdown.
//! - [`storeconfig`]: `pylon storeconfig`, the static configuration into the store.
//!
//! **Shared leaves**: [`calendar`] (Unix time and calendar dates), [`der`] (just enough DER for
//! the X.509 fields ACME and `passTLSClientCert` need), [`limits`] (bounds on untrusted input),
//! [`logging`] (tracing set-up).

pub mod access_log;
pub mod acme;
pub mod app;
pub mod balancer;
pub mod calendar;
pub mod cli;
pub mod config;
pub mod der;
pub mod dynamic;
pub mod events;
pub mod limits;
pub mod logging;
pub mod middleware;
pub mod plane;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod setup;
pub mod store;
pub mod storeconfig;
pub mod tls;
pub mod upstream;
pub mod watcher;
