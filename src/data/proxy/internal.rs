//! Pylon's own endpoints: the services `api@internal` (the API, and the dashboard under
//! `/dashboard/`), `dashboard@internal`, `prometheus@internal` and `ping@internal`. A router
//! names them, or the table adds Traefik's internal routers for them (`/metrics` on the metrics
//! entrypoint; `/api` and `/` on an insecure API's), behind the entrypoint's middlewares. What
//! they show is built outside the data plane, from its snapshot and the control plane's state;
//! the data plane only asks.

use http::{HeaderMap, Method, Response};

use super::ProxyBody;

/// An internal service a router may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Api,
    Dashboard,
    Prometheus,
    Ping,
}

impl Endpoint {
    /// The internal service `name` names (`api@internal`), if any.
    pub fn named(name: &str) -> Option<Endpoint> {
        match name {
            "api@internal" => Some(Endpoint::Api),
            "dashboard@internal" => Some(Endpoint::Dashboard),
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
    /// Only GET is answered.
    fn dashboard(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        permanent: bool,
    ) -> Option<Response<ProxyBody>>;
}
