//! The end of a router's chain, phases 4 to 6: the service picks a server (sticky cookie
//! first), the request is forwarded (to another server when a connection fails before anything
//! was sent; mirrored copies fired and forgotten), and the response comes back, an accepted
//! `Upgrade` becoming a tunnel.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{body, forward, Fault, Proxy, ProxyBody, ProxyError, Served};
use crate::{
    data::balancer::{Mirroring, Pick, Service},
    data::middleware,
    data::proxy::internal::Endpoint,
    data::routing::Route,
    data::upstream::{self, Upstream},
};

/// The end of a router's chain: its service.
pub(super) struct ToService<'a> {
    pub proxy: &'a Proxy,
    pub route: &'a Route,
    pub client: forward::Client<'a>,
    pub served: &'a mut Served,
    pub entry_point: &'a str,
    /// How many times the chain reached the service: more than once under `retry`.
    pub calls: u32,
}

impl middleware::End for ToService<'_> {
    fn call(&mut self, req: middleware::Req) -> middleware::BoxFuture<'_, Response<ProxyBody>> {
        Box::pin(self.forward(req))
    }
}

impl ToService<'_> {
    /// 4. pick, 5. forward, 6. respond; a failure becomes its response here.
    pub(super) async fn forward(&mut self, req: middleware::Req) -> Response<ProxyBody> {
        self.calls += 1;
        if let (Some(meter), true) = (&mut self.served.meter, self.calls > 1) {
            meter.retry();
        }
        let service = self.route.service.clone();
        if let Service::Internal(endpoint) = *service {
            return self.proxy.internal_answer(endpoint, &req);
        }
        let forwarded = match service.pick(req.headers()) {
            None => Err(ProxyError::NoServer { router: self.route.name.clone() }),
            Some(pick) => self.proxy.forward(req, &service, pick, &self.client, self.served).await,
        };
        if let (Some(meter), Ok(response)) = (&mut self.served.meter, &forwarded) {
            meter.answered(response.status().as_u16());
        }
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
    /// A router's internal service: the API, the metrics or `/ping`, after its middlewares.
    fn internal_answer(&self, endpoint: Endpoint, req: &middleware::Req) -> Response<ProxyBody> {
        match (endpoint, &self.internal) {
            (Endpoint::Ping, _) => match self.draining.load(std::sync::atomic::Ordering::Relaxed) {
                true => super::error::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n"),
                false => super::error::text(StatusCode::OK, "OK"),
            },
            (Endpoint::Prometheus, Some(internal)) => internal.metrics(),
            (Endpoint::Api, Some(internal)) => {
                let path = req.uri().path();
                internal
                    .dashboard(req.method(), path, req.headers(), false)
                    .unwrap_or_else(|| internal.api(req.method(), path, req.uri().query()))
            }
            // Traefik's `dashboard@internal`, on an insecure API's entrypoint: `/` moves for good.
            (Endpoint::Dashboard, Some(internal)) => internal
                .dashboard(req.method(), req.uri().path(), req.headers(), true)
                .unwrap_or_else(|| super::error::text(StatusCode::NOT_FOUND, "404 page not found\n")),
            (_, None) => super::error::text(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }

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
            (Service::Mirroring(m), body) => mirror(m, &head, body, client, self).await?,
            (_, body::RequestBody::Client(body)) => Payload::Stream(body::Slot::new(body, client.read_timeout)),
            (_, body::RequestBody::Read(bytes)) => Payload::Buffered(bytes),
        };
        let mut tried = Vec::new();
        let response = loop {
            let server = &pick.pool.servers[pick.server].url;
            if self.access_log.is_some() {
                served.server = Some(server.to_string());
            }
            if let Some(meter) = &mut served.meter {
                meter.attempt(pick.pool.metric);
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
                self.tasks.spawn(async move {
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
    let sent = upstream.request(request);
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
    proxy: &Proxy,
) -> Result<Payload, ProxyError> {
    use http_body::Body as _;
    let body = match body {
        body::RequestBody::Client(body) => body,
        body::RequestBody::Read(bytes) => {
            let chosen: Vec<_> = m.mirrors.iter().filter(|mirror| mirror.take()).collect();
            send_mirrors(&chosen, head, &bytes, client, proxy);
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
    send_mirrors(&chosen, head, &bytes, client, proxy);
    Ok(Payload::Buffered(bytes))
}

/// Sends a copy of the request to each of `chosen`, without waiting for the answers (tracked,
/// so that shutdown lets them finish within the grace time).
fn send_mirrors(
    chosen: &[&crate::data::balancer::Mirror],
    head: &http::request::Parts,
    bytes: &Bytes,
    client: &forward::Client<'_>,
    proxy: &Proxy,
) {
    for mirror in chosen {
        let Some(pick) = mirror.service.pick(&head.headers) else { continue };
        let server = &pick.pool.servers[pick.server].url;
        let body = Full::new(bytes.clone()).map_err(|never| match never {}).boxed_unsync();
        let request = forward::request(head, server, pick.pool.spec.pass_host_header, client).map(|()| body);
        let sent = proxy.upstream.request(request);
        proxy.tasks.spawn(async move {
            if let Ok(response) = sent.await {
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
