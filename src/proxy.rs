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
//!    matching is 404. Then the router's middlewares run ([`crate::middleware`]), outermost
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
pub mod path;
pub mod reply;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub use error::{Fault, ProxyError};

use crate::{
    access_log::{AccessLog, Entry as LogEntry},
    acme::{challenge, Challenges},
    balancer::{Mirroring, Pick, Service},
    config::model::ForwardedTrust,
    middleware,
    routing::{RequestView, Route, Table},
    upstream::{self, Upstream},
};

pub use reply::ProxyBody;

/// What the pipeline shares across requests. Each worker thread has its own copy, with its
/// own upstream connection pool; the rest is shared.
#[derive(Clone)]
pub struct Proxy {
    /// The routing table; the watcher swaps in a new one on every change.
    pub table: Arc<ArcSwap<Table>>,
    pub upstream: Upstream,
    /// Set at SIGTERM: `/ping` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
    pub access_log: Option<Arc<AccessLog>>,
    /// HTTP-01 tokens of pending ACME orders, answered on every plain entrypoint.
    pub challenges: Option<Arc<Challenges>>,
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
    pub tls: bool,
}

/// What the access log needs from the routing decision.
#[derive(Default)]
struct Served {
    route: Option<Arc<Route>>,
    /// The server's URL, recorded only when the access log is on.
    server: Option<String>,
}

impl Proxy {
    /// Runs one request through the pipeline.
    pub async fn handle(&self, req: Request<Incoming>, ep: &EntryPoint, conn: Connection) -> Response<ProxyBody> {
        let started = Instant::now();
        let entry = self.access_log.as_ref().map(|_| LogEntry::begin(&req, conn.peer.ip()));
        let mut served = Served::default();
        let response = match self.serve(req, ep, conn, &mut served).await {
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
        response
    }

    async fn serve(
        &self,
        req: Request<Incoming>,
        ep: &EntryPoint,
        conn: Connection,
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
            return Ok(if self.draining.load(Ordering::Relaxed) {
                error::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
            } else {
                error::text(StatusCode::OK, "OK")
            });
        }
        // 1b. ACME HTTP-01, before the redirect: the CA validates over plain HTTP.
        if let (Some(challenges), false) = (&self.challenges, conn.tls) {
            if let Some(token) = req.uri().path().strip_prefix(challenge::PATH_PREFIX) {
                return Ok(match challenges.answer(token).await {
                    Some(key_authorization) => error::text(StatusCode::OK, key_authorization),
                    None => error::text(StatusCode::NOT_FOUND, "Not Found\n"),
                });
            }
        }
        let host = host_of(&req).to_string();

        // 2. redirect
        if let Some(to) = &ep.redirect {
            return Ok(redirect(&req, &host, to));
        }

        // 3. route
        let table = self.table.load();
        let bare_host = strip_port(&host).to_ascii_lowercase();
        let view = RequestView {
            host: &bare_host,
            path: req.uri().path(),
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
            client_ip: conn.peer.ip(),
        };
        let route = table.route(&ep.name, conn.tls, &view).ok_or(ProxyError::NoRoute)?.clone();
        drop(table);
        served.route = Some(route.clone());

        // 3b. middlewares, then 4. pick and 5. forward
        let client = forward::Client {
            ip: conn.peer.ip(),
            tls: conn.tls,
            port: ep.port,
            host: &host,
            read_timeout: ep.read_timeout,
            upgrades: &ep.upgrades,
        };
        let mut service = ToService { proxy: self, route: &route, client, served, entry_point: &ep.name };
        let req = req.map(body::RequestBody::Client);
        Ok(match route.chain.is_empty() {
            true => service.forward(req).await,
            false => route.chain.run(req, conn, &mut service).await,
        })
    }
}

/// The end of a router's chain: its service.
struct ToService<'a> {
    proxy: &'a Proxy,
    route: &'a Route,
    client: forward::Client<'a>,
    served: &'a mut Served,
    entry_point: &'a str,
}

impl middleware::End for ToService<'_> {
    fn call(&mut self, req: middleware::Req) -> middleware::BoxFuture<'_, Response<ProxyBody>> {
        Box::pin(self.forward(req))
    }
}

impl ToService<'_> {
    /// 4. pick, 5. forward, 6. respond; a failure becomes its response here.
    async fn forward(&mut self, req: middleware::Req) -> Response<ProxyBody> {
        let service = self.route.service.clone();
        let forwarded = match service.pick(req.headers()) {
            None => Err(ProxyError::NoServer { router: self.route.name.clone() }),
            Some(pick) => self.proxy.forward(req, &service, pick, &self.client, self.served).await,
        };
        forwarded.unwrap_or_else(|err| {
            if err.fault() == Fault::Upstream {
                tracing::warn!(entrypoint = %self.entry_point, router = %self.route.name, "{err}");
            }
            let mut response = err.response();
            // Nothing was sent: a retry may send it again.
            if matches!(err, ProxyError::Refused { .. } | ProxyError::NoServer { .. }) {
                response.extensions_mut().insert(middleware::retry::NotSent);
            }
            response
        })
    }
}

impl Proxy {
    async fn forward(
        &self,
        mut req: middleware::Req,
        service: &Service,
        mut pick: Pick,
        client: &forward::Client<'_>,
        served: &mut Served,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let client_upgrade =
            forward::upgrade_of(req.version(), req.headers(), client.upgrades).map(|_| hyper::upgrade::on(&mut req));
        let (head, body) = req.into_parts();
        let held = head.extensions.get::<middleware::HeldWhileOpen>().cloned();
        let payload = match (service, body) {
            (Service::Mirroring(m), body) => mirror(m, &head, body, client, &self.upstream).await?,
            (_, body::RequestBody::Client(body)) => Payload::Stream(body::Slot::new(body, client.read_timeout)),
            (_, body::RequestBody::Read(bytes)) => Payload::Buffered(bytes),
        };
        let mut tried = Vec::new();
        let response = loop {
            let server = &pick.pool.servers[pick.server].url;
            if self.access_log.is_some() {
                served.server = Some(server.to_string());
            }
            let request =
                forward::request(&head, server, pick.pool.spec.pass_host_header, client).map(|()| payload.attempt());
            match send(&self.upstream, request).await {
                Ok(response) => break response,
                Err(Failure::Connect(reason)) => {
                    pick.pool.mark_failed(pick.server);
                    tracing::warn!(service = %pick.pool.service, %server, "{reason}; server out of rotation for a moment");
                    tried.push(pick.server);
                    match pick.pool.next(&tried).filter(|_| payload.replayable()) {
                        Some(next) => pick.server = next,
                        None => return Err(ProxyError::Refused { server: server.to_string(), reason }),
                    }
                }
                Err(Failure::Other(reason)) => return Err(ProxyError::Upstream { server: server.to_string(), reason }),
                Err(Failure::ClientBody { too_slow: true, reason }) => return Err(ProxyError::RequestTimeout(reason)),
                Err(Failure::ClientBody { too_slow: false, reason }) => return Err(ProxyError::BadRequest(reason)),
                Err(Failure::Timeout) => return Err(ProxyError::Timeout { server: server.to_string() }),
            }
        };

        // 6. respond
        let mut response = response;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let server_upgrade = hyper::upgrade::on(&mut response);
            if let Some(client_upgrade) = client_upgrade {
                tokio::spawn(async move {
                    tunnel(client_upgrade, server_upgrade).await;
                    drop(held);
                });
            }
        } else {
            forward::strip_hop_by_hop(response.headers_mut());
        }
        let (mut parts, body) = response.into_parts();
        for cookie in pick.set_cookies {
            parts.headers.append(header::SET_COOKIE, cookie);
        }
        Ok(Response::from_parts(parts, ProxyBody::Upstream(body)))
    }
}

/// The body of a forwarded request: streamed once, or buffered for mirrors and so replayable.
enum Payload {
    Stream(body::Slot),
    Buffered(Bytes),
}

impl Payload {
    fn attempt(&self) -> upstream::Body {
        match self {
            Payload::Stream(slot) => slot.attempt().boxed_unsync(),
            Payload::Buffered(bytes) => Full::new(bytes.clone()).map_err(|never| match never {}).boxed_unsync(),
        }
    }

    fn replayable(&self) -> bool {
        match self {
            Payload::Stream(slot) => slot.is_untouched(),
            Payload::Buffered(_) => true,
        }
    }
}

enum Failure {
    Connect(String),
    Timeout,
    /// The client's body broke, or came too slowly, while it was being sent.
    ClientBody {
        too_slow: bool,
        reason: String,
    },
    Other(String),
}

async fn send(upstream: &Upstream, request: Request<upstream::Body>) -> Result<Response<Incoming>, Failure> {
    let sent = upstream.client.request(request);
    let result = match upstream.response_header_timeout {
        Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| Failure::Timeout)?,
        None => sent.await,
    };
    result.map_err(|e| {
        let reason = upstream::error_chain(&e);
        if e.is_connect() {
            Failure::Connect(reason)
        } else if let Some(cause) = body::ClientBodyError::cause_of(&e) {
            Failure::ClientBody { too_slow: matches!(cause, body::ClientBodyError::TooSlow(_)), reason }
        } else {
            Failure::Other(reason)
        }
    })
}

/// Sends a copy of the request to the mirrors whose share includes it, fire and forget. The
/// body is buffered for that, so requests whose body is longer than `maxBodySize` (or of
/// unknown length) are not mirrored.
async fn mirror(
    m: &Mirroring,
    head: &http::request::Parts,
    body: body::RequestBody,
    client: &forward::Client<'_>,
    upstream: &Upstream,
) -> Result<Payload, ProxyError> {
    use http_body::Body as _;
    let body = match body {
        body::RequestBody::Client(body) => body,
        body::RequestBody::Read(bytes) => {
            let chosen: Vec<_> = m.mirrors.iter().filter(|mirror| mirror.take()).collect();
            send_mirrors(&chosen, head, &bytes, client, upstream);
            return Ok(Payload::Buffered(bytes));
        }
    };
    let fits = body.is_end_stream() || body.size_hint().upper().is_some_and(|n| n <= m.max_body_size);
    let chosen: Vec<_> = m.mirrors.iter().filter(|mirror| mirror.take()).collect();
    if chosen.is_empty() || !fits {
        return Ok(Payload::Stream(body::Slot::new(body, client.read_timeout)));
    }
    let limit = usize::try_from(m.max_body_size).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(client.read_timeout, Limited::new(body, limit).collect()).await;
    let bytes = collected
        .map_err(|_| ProxyError::RequestTimeout(format!("the body took longer than {:?}", client.read_timeout)))?
        .map_err(|e| ProxyError::BadRequest(format!("reading the body: {e}")))?
        .to_bytes();
    send_mirrors(&chosen, head, &bytes, client, upstream);
    Ok(Payload::Buffered(bytes))
}

/// Sends a copy of the request to each of `chosen`, fire and forget.
fn send_mirrors(
    chosen: &[&crate::balancer::Mirror],
    head: &http::request::Parts,
    bytes: &Bytes,
    client: &forward::Client<'_>,
    upstream: &Upstream,
) {
    for mirror in chosen {
        let Some(pick) = mirror.service.pick(&head.headers) else { continue };
        let server = &pick.pool.servers[pick.server].url;
        let body = Full::new(bytes.clone()).map_err(|never| match never {}).boxed_unsync();
        let request = forward::request(head, server, pick.pool.spec.pass_host_header, client).map(|()| body);
        let client = upstream.client.clone();
        tokio::spawn(async move {
            if let Ok(response) = client.request(request).await {
                let _ = response.into_body().collect().await;
            }
        });
    }
}

/// Joins the client's and the server's upgraded connections once both sides have switched.
async fn tunnel(client: hyper::upgrade::OnUpgrade, server: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(server)) = tokio::join!(client, server) else { return };
    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(server)).await;
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
