//! Pylon's own endpoints on an entrypoint, answered before routing as Traefik's internal
//! routers are (`prometheus@internal` at `/metrics`). What they show is built outside the data
//! plane, from its snapshot and the control plane's state; the data plane only asks.

use http::Response;

use super::ProxyBody;

pub trait Internal: Send + Sync {
    /// The Prometheus exposition of every metric, as of now.
    fn metrics(&self) -> Response<ProxyBody>;
}
