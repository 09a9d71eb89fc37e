//! Entrypoints: bind every configured address, accept connections, serve HTTP/1.1 and h2c on
//! them, and shut down in Traefik's order: `/ping` turns 503 at once, requests are still
//! accepted for `requestAcceptGraceTimeout`, then listeners close and in-flight requests get
//! `graceTimeOut` to finish.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::StaticConfig;

#[derive(Debug, thiserror::Error)]
#[error("entrypoint {name:?} cannot listen on {address}: {source}")]
pub struct BindError {
    pub name: String,
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: BTreeMap<String, TcpListener>,
    ping: Option<String>,
    lifecycle: crate::config::model::Lifecycle,
}

/// What every connection's handler reads: whether this replica is going away.
struct Shared {
    draining: AtomicBool,
}

impl Server {
    /// Binds every entrypoint, failing on the first address that cannot be bound.
    pub async fn bind(config: &StaticConfig) -> Result<Server, BindError> {
        let mut listeners = BTreeMap::new();
        for (name, ep) in &config.entry_points {
            let listener = TcpListener::bind(ep.address).await.map_err(|source| BindError {
                name: name.clone(),
                address: ep.address,
                source,
            })?;
            listeners.insert(name.clone(), listener);
        }
        Ok(Server { listeners, ping: config.ping.clone(), lifecycle: config.lifecycle.clone() })
    }

    /// The address each entrypoint actually listens on (port 0 resolved).
    pub fn local_addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.listeners.iter().filter_map(|(n, l)| Some((n.clone(), l.local_addr().ok()?))).collect()
    }

    /// Serves until `shutdown` fires, then drains as the lifecycle settings say.
    pub async fn serve(self, shutdown: CancellationToken) {
        let shared = Arc::new(Shared { draining: AtomicBool::new(false) });
        let stop_accepting = CancellationToken::new();
        let graceful = Arc::new(GracefulShutdown::new());
        let mut accept_loops = Vec::new();
        for (name, listener) in self.listeners {
            let is_ping = self.ping.as_deref() == Some(name.as_str());
            let (shared, stop, graceful) = (shared.clone(), stop_accepting.clone(), graceful.clone());
            accept_loops.push(tokio::spawn(accept(name, listener, is_ping, shared, stop, graceful)));
        }

        shutdown.cancelled().await;
        shared.draining.store(true, Ordering::SeqCst);
        let grace = self.lifecycle.request_accept_grace;
        if !grace.is_zero() {
            tracing::info!("stopping: /ping answers 503; still accepting requests for {grace:?}");
            tokio::time::sleep(grace).await;
        }
        stop_accepting.cancel();
        for handle in accept_loops {
            let _ = handle.await;
        }
        let timeout = self.lifecycle.grace_timeout;
        tracing::info!("listeners closed; waiting up to {timeout:?} for in-flight requests");
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!("accept loops have ended"));
        if tokio::time::timeout(timeout, graceful.shutdown()).await.is_err() {
            tracing::warn!("grace time of {timeout:?} ran out with requests still in flight");
        }
    }
}

async fn accept(
    name: String,
    listener: TcpListener,
    is_ping: bool,
    shared: Arc<Shared>,
    stop: CancellationToken,
    graceful: Arc<GracefulShutdown>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(entrypoint = %name, %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(req, is_ping, &shared)) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn handle(req: Request<Incoming>, is_ping: bool, shared: &Shared) -> Response<Full<Bytes>> {
    if is_ping && req.uri().path() == "/ping" {
        if shared.draining.load(Ordering::SeqCst) {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        }
        return text(StatusCode::OK, "OK");
    }
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
