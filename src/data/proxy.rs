//! The request pipeline. Each request goes through these phases, top to bottom:
//!
//! 0. **head**: framing other than a single `chunked`, a missing or repeated `Host` on
//!    HTTP/1.1, and `CONNECT` are 400 ([`head`]); the connection closes after every 400.
//!    **path**: the path is made canonical ([`path`]): dot segments removed, unreserved
//!    characters decoded; an encoded `/`, `\`, NUL, `;`, `%`, `?` or `#` is 400 unless the
//!    entrypoint allows it. Everything after sees, and the upstream receives, that path.
//! 1. **ping**: `GET /ping` on the ping entrypoint answers `OK`, or 503 once draining.
//! 2. **redirect**: on an entrypoint with `redirect.entryPoint`, every request gets 301/308
//!    (302/307 when not permanent) to the same host, path and query on the target entrypoint.
//! 3. **route**: the current routing table picks the highest-priority matching router; none
//!    matching is 404. Pylon's own endpoints are routers too (`api@internal`,
//!    `prometheus@internal`, ... [`internal`]), behind the entrypoint's middlewares. Then the router's middlewares run ([`crate::data::middleware`]), outermost
//!    first; any of them may answer instead (401, 403, a redirect) and none further in runs.
//! 4. **pick**: the router's service picks a server (sticky cookie first); none up is 503.
//! 5. **forward**: the request streams upstream; a connection that fails before anything was
//!    sent marks the server down for a moment and the request goes to another server; a
//!    response head that does not come in time is 504, other upstream failures 502.
//! 6. **respond**: hop-by-hop headers go, sticky cookies are set, an accepted `Upgrade` becomes
//!    a tunnel, and the response body streams back.
//!
//! Every failure is a [`ProxyError`], turned into a response in one place.

pub mod body;
pub mod error;
pub mod forward;
pub mod head;
pub mod internal;
pub mod path;
pub mod reply;
mod service;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

pub use error::{Fault, ProxyError};

use crate::{
    config::model::ForwardedTrust,
    data::access_log::{AccessLog, Entry as LogEntry},
    data::metrics::{meter::Meter, Metrics, Name},
    data::plane::{Plane, HTTP01_PREFIX},
    data::routing::{RequestView, Route},
    data::upstream::Upstream,
};

pub use reply::ProxyBody;

/// What the pipeline shares across requests. Each worker thread has its own copy, with its
/// own upstream connection pool; the rest is shared.
#[derive(Clone)]
pub struct Proxy {
    /// The control plane's last snapshot: routing table, certificates, challenge answers.
    pub plane: Arc<Plane>,
    pub upstream: Upstream,
    /// Set at SIGTERM: `/ping` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
    pub access_log: Option<Arc<AccessLog>>,
    /// Whether ACME is on: HTTP-01 tokens of pending orders are answered on every plain
    /// entrypoint, from the snapshot.
    pub acme_http01: bool,
    /// Tunnels (upgraded connections) and mirrored requests, which outlive the request that
    /// started them; shutdown waits for them within the grace time.
    pub tasks: tokio_util::task::TaskTracker,
    /// The request metrics, when `metrics.prometheus` is on.
    pub metrics: Option<&'static Metrics>,
    /// Pylon's own endpoints (`/metrics`), where an entrypoint serves them.
    pub internal: Option<Arc<dyn internal::Internal>>,
}

impl Proxy {
    /// A copy for another worker thread: the same table, state and log, a pool of its own, so
    /// that a worker's requests use connections driven by that worker.
    pub fn for_worker(&self) -> Proxy {
        Proxy { upstream: self.upstream.with_own_pool(), ..self.clone() }
    }
}

/// One entrypoint, as the pipeline sees it.
pub struct EntryPoint {
    pub name: String,
    /// The port it listens on (for `X-Forwarded-Port`).
    pub port: u16,
    /// Whether it answers `/ping`.
    pub ping: bool,
    pub redirect: Option<RedirectTo>,
    pub trust: ForwardedTrust,
    pub path: path::PathPolicy,
    /// How long a client may take to send a whole request body (`readTimeout`).
    pub read_timeout: std::time::Duration,
    /// The `Upgrade` protocols tunnelled (`http.allowedUpgrades`).
    pub upgrades: Vec<String>,
    /// The entrypoint's name, as the metrics count it.
    pub metric: Name,
}

pub struct RedirectTo {
    pub scheme: &'static str,
    pub port: u16,
    pub permanent: bool,
}

/// One accepted connection.
#[derive(Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The peer's address as text, for the `X-Forwarded-For` of each request.
    pub peer_ip: forward::IpText,
    pub tls: bool,
    /// The TLS version and cipher suite negotiated, on a TLS connection.
    pub suite: Option<(u16, u16)>,
}

impl Connection {
    pub fn new(peer: SocketAddr, tls: bool, suite: Option<(u16, u16)>) -> Connection {
        Connection { peer, peer_ip: forward::IpText::new(peer.ip()), tls, suite }
    }
}

impl Served {
    /// The request is one Pylon answers itself (`/ping`, a challenge, a redirect, an internal
    /// service): it is not counted (Traefik's `metrics.addInternals = false`).
    fn discard_meter(&mut self) {
        if let Some(meter) = self.meter.take() {
            meter.discard();
        }
    }
}

/// What the access log needs from the routing decision.
#[derive(Default)]
pub(crate) struct Served {
    route: Option<Arc<Route>>,
    /// The server's URL, recorded only when the access log is on.
    server: Option<String>,
    /// The request's metrics, when they are on.
    meter: Option<Meter>,
}

impl Proxy {
    /// Runs one request through the pipeline. `session` is what a TLS connection's handshake
    /// chose. The meter, when metrics are on, goes with the response body and counts the
    /// request when that body is sent.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        ep: &EntryPoint,
        conn: Connection,
        session: Option<&crate::data::tls::Session>,
    ) -> (Response<ProxyBody>, Option<Meter>) {
        let started = Instant::now();
        let entry = self.access_log.as_ref().map(|_| LogEntry::begin(&req, conn.peer.ip()));
        let meter = self.metrics.map(|metrics| Meter::begin(metrics, ep.metric, &req, conn.suite));
        let mut served = Served { meter, ..Served::default() };
        let response = match self.serve(req, ep, conn, session, &mut served).await {
            Ok(response) => response,
            Err(err) => {
                if err.fault() == Fault::Upstream {
                    tracing::warn!(entrypoint = %ep.name, router = ?served.route.as_ref().map(|r| &r.name), "{err}");
                }
                err.response()
            }
        };
        if let (Some(log), Some(entry)) = (&self.access_log, entry) {
            log.record(entry.finish(&response, served.route.map(|r| r.name.clone()), served.server, started.elapsed()));
        }
        let mut meter = served.meter;
        if let Some(meter) = &mut meter {
            meter.respond(response.status().as_u16(), response.headers());
        }
        (response, meter)
    }

    async fn serve(
        &self,
        req: Request<Incoming>,
        ep: &EntryPoint,
        conn: Connection,
        session: Option<&crate::data::tls::Session>,
        served: &mut Served,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // 0. head, path
        head::check(&req).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        let mut req = canonical_path(req, &ep.path)?;
        // An untrusted client's X-Forwarded-* are gone before anything reads them.
        if !ep.trust.trusts(conn.peer.ip()) {
            forward::distrust(req.headers_mut());
        }
        forward::drop_connection_headers(req.headers_mut());

        // 1. ping
        if ep.ping && req.uri().path() == "/ping" {
            served.discard_meter();
            return Ok(if self.draining.load(Ordering::Relaxed) {
                error::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
            } else {
                error::text(StatusCode::OK, "OK")
            });
        }
        // 1b. ACME HTTP-01, before the redirect: the CA validates over plain HTTP.
        let snapshot = self.plane.load();
        if self.acme_http01 && !conn.tls {
            if let Some(token) = req.uri().path().strip_prefix(HTTP01_PREFIX) {
                served.discard_meter();
                return Ok(match snapshot.answers.token(token) {
                    Some(key_authorization) => error::text(StatusCode::OK, key_authorization.to_string()),
                    None => error::text(StatusCode::NOT_FOUND, "Not Found\n"),
                });
            }
        }
        let host = host_of(&req).to_string();

        // 2. redirect (Traefik's redirect router goes to `noop@internal`: not counted)
        if let Some(to) = &ep.redirect {
            served.discard_meter();
            return Ok(redirect(&req, &host, to));
        }

        // 3. route, on a connection whose TLS options are the ones the host asks for
        let table = &snapshot.table;
        let bare_host = strip_port(&host).trim_end_matches('.').to_ascii_lowercase();
        if let Some(session) = session {
            if !snapshot.handshakes.allows(&ep.name, session, &bare_host) {
                return Err(ProxyError::Misdirected { host: bare_host, server_name: session.server_name.to_string() });
            }
        }
        let view = RequestView {
            host: &bare_host,
            path: req.uri().path(),
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
            client_ip: conn.peer.ip(),
        };
        let route = table.route(&ep.name, conn.tls, &view).ok_or(ProxyError::NoRoute)?.clone();
        drop(snapshot);
        // Pylon's own endpoints (`api@internal`, ...) are not counted, as Traefik's internals.
        if matches!(*route.service, crate::data::balancer::Service::Internal(_)) {
            served.discard_meter();
        } else if let Some(meter) = &mut served.meter {
            meter.router(route.metric, route.service_metric);
        }
        served.route = Some(route.clone());

        // 3b. middlewares, then 4. pick and 5. forward
        let client = forward::Client {
            ip: conn.peer_ip.as_str(),
            tls: conn.tls,
            port: ep.port,
            host: &host,
            read_timeout: ep.read_timeout,
            upgrades: &ep.upgrades,
        };
        let mut service =
            service::ToService { proxy: self, route: &route, client, served, entry_point: &ep.name, calls: 0 };
        let req = req.map(body::RequestBody::Client);
        Ok(match route.chain.is_empty() {
            true => service.forward(req).await,
            false => route.chain.run(req, conn, &mut service).await,
        })
    }
}

/// The request with its path made canonical; untouched (and unallocated) when it already is.
fn canonical_path<B>(req: Request<B>, policy: &path::PathPolicy) -> Result<Request<B>, ProxyError> {
    let canonical = match path::normalize(req.uri().path(), policy) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(req),
        Ok(std::borrow::Cow::Owned(canonical)) => canonical,
        Err(err) => return Err(ProxyError::BadRequest(err.to_string())),
    };
    let (mut head, body) = req.into_parts();
    let mut uri = head.uri.into_parts();
    let with_query = match uri.path_and_query.as_ref().and_then(|p| p.query()) {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical,
    };
    uri.path_and_query =
        Some(with_query.parse().map_err(|_| ProxyError::BadRequest("the path cannot be made canonical".into()))?);
    head.uri = http::Uri::from_parts(uri).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    Ok(Request::from_parts(head, body))
}

/// The host the client asked for, port included: the URI's authority (HTTP/2, absolute form)
/// or the `Host` header.
pub(crate) fn host_of<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
}

/// The redirect to another entrypoint: same host (with the target's port unless it is the
/// scheme's default), path and query.
fn redirect<B>(req: &Request<B>, host: &str, to: &RedirectTo) -> Response<ProxyBody> {
    let bare = strip_port(host);
    let bare = if bare.contains(':') { format!("[{bare}]") } else { bare.to_string() };
    let default_port = if to.scheme == "https" { 443 } else { 80 };
    let authority = if to.port == default_port { bare } else { format!("{bare}:{}", to.port) };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{}://{authority}{path}", to.scheme);
    let safe = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
    let status = match (to.permanent, safe) {
        (true, true) => StatusCode::MOVED_PERMANENTLY,
        (true, false) => StatusCode::PERMANENT_REDIRECT,
        (false, true) => StatusCode::FOUND,
        (false, false) => StatusCode::TEMPORARY_REDIRECT,
    };
    let mut response = error::text(status, "");
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => ProxyError::BadRequest("the host cannot be redirected".into()).response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(uri: &str, host: &str, method: http::Method, to: RedirectTo) -> (u16, String) {
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        let r = redirect(&req, host, &to);
        (r.status().as_u16(), r.headers()[header::LOCATION].to_str().unwrap().to_string())
    }

    #[test]
    fn a_redirect_keeps_host_path_and_query_and_picks_its_status() {
        let https = |port| RedirectTo { scheme: "https", port, permanent: true };
        assert_eq!(
            location("/a/b?c=d", "example.com:80", http::Method::GET, https(443)),
            (301, "https://example.com/a/b?c=d".into())
        );
        assert_eq!(
            location("/", "example.com", http::Method::POST, https(8443)),
            (308, "https://example.com:8443/".into())
        );
        let temporary = RedirectTo { scheme: "https", port: 443, permanent: false };
        assert_eq!(location("/", "[::1]:80", http::Method::GET, temporary), (302, "https://[::1]/".into()));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
    }
}
