//! HTTP/1.1 connections to upstream servers, one pool per worker thread: a request goes out on
//! a kept connection that is ready (its last response read to the end), else on a new one.
//! Unlike hyper-util's legacy client, nothing is spawned, boxed or hashed with SipHash per
//! request: the connection stays in its server's list while it serves, and hyper marks it
//! ready again by itself when the response is over.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{header, uri::PathAndQuery, HeaderValue, Method, Request, Response, Uri};
use hyper::{
    body::Incoming,
    client::conn::{http1, TrySendError},
};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use super::{Body, BoxError};

/// How long a connection may stay unused before it is closed (the legacy pool's 90 s).
const IDLE: Duration = Duration::from_secs(90);
/// How often the lists of every server are looked through for connections idle that long.
const SWEEP: Duration = Duration::from_secs(30);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection to the server: refused, unreachable, timed out, or its TLS failed.
    #[error("connecting: {0}")]
    Connect(#[source] BoxError),
    /// The request or its response broke on the connection.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// From the pool of HTTP/2 connections (`h2c://` servers).
    #[error(transparent)]
    H2c(#[from] hyper_util::client::legacy::Error),
}

impl SendError {
    /// Nothing reached the server: another server may be tried.
    pub fn is_connect(&self) -> bool {
        match self {
            SendError::Connect(_) => true,
            SendError::H2c(e) => e.is_connect(),
            SendError::Http(_) => false,
        }
    }
}

pub struct Http1 {
    connector: HttpsConnector<HttpConnector>,
    kept: Mutex<Kept>,
    /// At most this many connections are kept per server (`maxIdleConnsPerHost`).
    max_per_server: usize,
}

struct Kept {
    /// `https` false and true: by the server's authority (`host:port`).
    servers: [HashMap<Box<str>, Vec<Conn>, foldhash::fast::RandomState>; 2],
    swept: Instant,
}

struct Conn {
    sender: http1::SendRequest<Body>,
    used: Instant,
}

impl Http1 {
    pub fn new(connector: HttpsConnector<HttpConnector>, max_per_server: usize) -> Http1 {
        let kept = Kept { servers: Default::default(), swept: Instant::now() };
        Http1 { connector, kept: Mutex::new(kept), max_per_server: max_per_server.max(1) }
    }

    /// Sends `request`, whose URI is absolute (`http://server:port/path`), in origin form with
    /// a `Host` of the server's authority unless it has one.
    pub fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + Send + 'static + use<> {
        let target = request.uri().clone();
        prepare(&mut request, &target);
        let https = target.scheme() == Some(&http::uri::Scheme::HTTPS);
        let sent = self.on_kept(https, target.authority().map_or("", |a| a.as_str()), request);
        let pool = self.clone();
        async move {
            let request = match sent {
                Ok(sent) => match sent.await {
                    Ok(response) => return Ok(response),
                    // The kept connection closed before the request went out: a new one.
                    Err(mut err) => match err.take_message() {
                        Some(request) => request,
                        None => return Err(SendError::Http(err.into_error())),
                    },
                },
                Err(request) => request,
            };
            // Boxed: a connection's setup is a large future, and it is the rare path.
            Box::pin(pool.fresh(https, target, request)).await
        }
    }

    /// The request sent on a kept connection to the server that is ready, or given back.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    fn on_kept(
        &self,
        https: bool,
        authority: &str,
        request: Request<Body>,
    ) -> Result<impl Future<Output = Result<Response<Incoming>, TrySendError<Request<Body>>>> + use<>, Request<Body>>
    {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(kept.swept) > SWEEP {
            kept.sweep(now);
        }
        let Some(conns) = kept.servers[usize::from(https)].get_mut(authority) else { return Err(request) };
        conns.retain(|c| !c.sender.is_closed());
        let Some(conn) = conns.iter_mut().rev().find(|c| c.sender.is_ready()) else { return Err(request) };
        conn.used = now;
        Ok(conn.sender.try_send_request(request))
    }

    /// Opens a connection to the server, sends the request on it and keeps it for the next
    /// requests when the server has fewer than the limit.
    async fn fresh(&self, https: bool, target: Uri, request: Request<Body>) -> Result<Response<Incoming>, SendError> {
        let io = self.connector.clone().call(target.clone()).await.map_err(SendError::Connect)?;
        let (mut sender, conn) = http1::handshake(io).await.map_err(|e| SendError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let sent = sender.send_request(request);
        if let Some(authority) = target.authority() {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            let conns = kept.servers[usize::from(https)].entry(authority.as_str().into()).or_default();
            if conns.len() < self.max_per_server {
                conns.push(Conn { sender, used: Instant::now() });
            }
        }
        Ok(sent.await?)
    }
}

impl Kept {
    /// Drops the connections unused for [`IDLE`] and the servers left with none.
    fn sweep(&mut self, now: Instant) {
        for servers in &mut self.servers {
            servers.retain(|_, conns| {
                conns.retain(|c| !c.sender.is_closed() && (now.duration_since(c.used) < IDLE || !c.sender.is_ready()));
                !conns.is_empty()
            });
        }
        self.swept = now;
    }
}

/// The origin form of the target and, unless the request has one, its `Host`: the server's
/// authority, without a port that is its scheme's default.
fn prepare(request: &mut Request<Body>, target: &Uri) {
    if !request.headers().contains_key(header::HOST) {
        let default_port = match target.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let host = target.authority().and_then(|a| match a.port_u16() == Some(default_port) {
            true => HeaderValue::from_str(a.host()).ok(),
            false => HeaderValue::from_str(a.as_str()).ok(),
        });
        if let Some(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    if request.method() != Method::CONNECT {
        let path = target.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
    }
}
