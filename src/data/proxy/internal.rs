//! Pylon's own endpoints, answered before routing as Traefik's internal routers are
//! (`prometheus@internal` at `/metrics`, `api@internal` at `/api` and the dashboard at
//! `/dashboard/` with `api.insecure`), or as
//! the service of a router that names them (`api@internal`, `prometheus@internal`,
//! `ping@internal`). What they show is built outside the data plane, from its snapshot and the
//! control plane's state; the data plane only asks.

use http::{HeaderMap, Method, Response};

use super::ProxyBody;

/// An internal service a router may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Api,
    Prometheus,
    Ping,
}

impl Endpoint {
    /// The internal service `name` names (`api@internal`), if any.
    pub fn named(name: &str) -> Option<Endpoint> {
        match name {
            "api@internal" => Some(Endpoint::Api),
            "prometheus@internal" => Some(Endpoint::Prometheus),
            "ping@internal" => Some(Endpoint::Ping),
            _ => None,
        }
    }
}

pub trait Internal: Send + Sync {
    /// The Prometheus exposition of every metric, as of now (404 when metrics are off).
    fn metrics(&self) -> Response<ProxyBody>;
    /// Traefik's API at `path` (`/api/...`; 404 when the API is off).
    fn api(&self, method: &Method, path: &str, query: Option<&str>) -> Response<ProxyBody>;
    /// The dashboard's page at `path` (`/dashboard/...`, or `/` redirected there, permanently
    /// on an insecure API's entrypoint); `None` when `path` is not the dashboard's or it is off.
    fn dashboard(&self, path: &str, headers: &HeaderMap, permanent: bool) -> Option<Response<ProxyBody>>;
}
