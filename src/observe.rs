//! Observability, between the planes: what a replica shows of itself. It reads the data
//! plane's snapshot and request metrics and the control plane's events and status, and answers
//! the data plane's internal endpoints ([`crate::data::proxy::internal`]).
//! - [`control`]: the control plane's numbers (reloads, orders, the store), fed by the event bus.
//! - [`prometheus`]: the `/metrics` exposition, Traefik's families and Pylon's own.
//! - [`api`]: Traefik's API (`/api/...`).
//! - [`cluster`]: every replica, certificate and lock, from any replica (`/api/pylon/cluster`).
//! - [`dashboard`]: the page at `/dashboard/`, built into the binary.

pub mod api;
pub mod cluster;
pub mod control;
pub mod dashboard;
pub mod prometheus;

use http::{HeaderMap, Method, Response, StatusCode};

use crate::data::proxy::{internal::Internal, ProxyBody};

/// The internal endpoints this replica serves: each part present when the static
/// configuration turns it on.
pub struct Endpoints {
    pub metrics: Option<prometheus::Scrape>,
    pub api: Option<api::Api>,
    /// `api.dashboard` (with the API on).
    pub dashboard: bool,
}

fn not_found() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full("404 page not found\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

impl Internal for Endpoints {
    fn metrics(&self) -> Response<ProxyBody> {
        self.metrics.as_ref().map_or_else(not_found, prometheus::Scrape::response)
    }

    fn api(&self, method: &Method, path: &str, query: Option<&str>) -> Response<ProxyBody> {
        self.api.as_ref().map_or_else(not_found, |api| api.answer(method, path, query))
    }

    fn dashboard(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        permanent: bool,
    ) -> Option<Response<ProxyBody>> {
        match self.dashboard && self.api.is_some() && method == Method::GET {
            true => dashboard::serve(path, headers, permanent),
            false => None,
        }
    }
}
