//! Entrypoints: bind every configured address, accept connections (up to `maxConnections`),
//! terminate TLS where the client starts a handshake (always on entrypoints with a `tls`
//! section), serve HTTP/1.1 and HTTP/2 (h2 by ALPN, h2c by prior knowledge) into the proxy
//! pipeline, and shut down in Traefik's order: `/ping` turns 503 at once, requests are still
//! accepted for `requestAcceptGraceTimeout`, then listeners close and in-flight requests get
//! `graceTimeOut` to finish.

mod admission;
mod idle;
mod proxy_protocol;
mod response;
mod stall;

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Either;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{transport::Transport, StaticConfig},
    data::plane::Plane,
    data::proxy::{Connection, EntryPoint, Proxy, RedirectTo},
    data::tls::{self, Accepted},
};

/// How long a connection closed to make room may take to say goodbye (GOAWAY, a last flush).
const EVICTED_GRACE: Duration = Duration::from_secs(1);

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
#[error("entrypoint {name:?} cannot listen on {address}: {source}")]
pub struct BindError {
    pub name: String,
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// Bound listeners, ready to serve.
pub struct Server {
    listeners: BTreeMap<String, std::net::TcpListener>,
    config: Arc<StaticConfig>,
}

/// What every connection of one entrypoint shares.
struct Listener {
    ep: Arc<EntryPoint>,
    /// True on entrypoints with a `tls` section: every connection is TLS.
    tls_only: bool,
    /// `proxyProtocol`: whose PROXY headers name the client.
    proxy_protocol: Option<crate::config::model::ForwardedTrust>,
    /// What handshakes get until the control plane has built the TLS options.
    tls: Arc<tls::handshakes::Chosen>,
    plane: Arc<Plane>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// For TLS connections whose options offer no h2.
    builder_h1: Arc<auto::Builder<TokioExecutor>>,
    transport: Transport,
}

impl Server {
    /// Binds every entrypoint, failing on the first address that cannot be bound.
    pub async fn bind(config: Arc<StaticConfig>) -> Result<Server, BindError> {
        let mut listeners = BTreeMap::new();
        for (name, ep) in &config.entry_points {
            let listener =
                listen(ep.address).map_err(|source| BindError { name: name.clone(), address: ep.address, source })?;
            listeners.insert(name.clone(), listener);
        }
        Ok(Server { listeners, config })
    }

    /// The address each entrypoint actually listens on (port 0 resolved).
    pub fn local_addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.listeners.iter().filter_map(|(n, l)| Some((n.clone(), l.local_addr().ok()?))).collect()
    }

    /// Serves until `shutdown` fires, then drains as the lifecycle settings say.
    pub async fn serve(self, proxy: Arc<Proxy>, shutdown: CancellationToken) {
        let plane = proxy.plane.clone();
        let addrs = self.local_addrs();
        let config = &self.config;
        let transport = &config.transport;
        let builder = Arc::new(http_builder(transport));
        let builder_h1 = Arc::new(http_builder(transport).http1_only());
        let admission = transport.max_connections.map(admission::Admission::new);
        let stop_accepting = CancellationToken::new();
        let drain = CancellationToken::new();
        let connections = TaskTracker::new();
        let mut entrypoints = Vec::new();
        let floors = config.tls_floors();
        for (name, listener) in self.listeners {
            let ep = &config.entry_points[&name];
            let redirect = ep.redirect.as_ref().map(|r| RedirectTo {
                scheme: if config.entry_points[&r.entry_point].tls.is_some() { "https" } else { "http" },
                port: addrs.get(&r.entry_point).map_or(0, |a| a.port()),
                permanent: r.permanent,
            });
            let shared = Arc::new(Listener {
                ep: Arc::new(EntryPoint {
                    name: name.clone(),
                    port: addrs.get(&name).map_or(0, |a| a.port()),
                    ping: config.ping.as_deref() == Some(name.as_str()),
                    redirect,
                    trust: ep.forwarded_trust.clone(),
                    path: ep.path,
                    read_timeout: transport.header_read_timeout,
                    upgrades: ep.upgrades.clone(),
                    metric: crate::data::metrics::intern(crate::data::metrics::names::Kind::EntryPoint, &name),
                }),
                tls_only: ep.tls.is_some(),
                proxy_protocol: ep.proxy_protocol.clone(),
                tls: tls::handshakes::fallback(&plane, &floors[&name]),
                plane: plane.clone(),
                builder: builder.clone(),
                builder_h1: builder_h1.clone(),
                transport: transport.clone(),
            });
            entrypoints.push((listener, shared));
        }

        // One worker thread per core, each with a single-threaded runtime accepting on every
        // listener: a connection, its requests and its upstream connections stay on one thread.
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let finished = CancellationToken::new();
        let mut accept_loops = Vec::new();
        for index in 0..workers {
            let listeners: Vec<_> = entrypoints
                .iter()
                .filter_map(|(l, shared)| match l.try_clone() {
                    Ok(l) => Some((l, shared.clone())),
                    Err(err) => {
                        tracing::error!(entrypoint = %shared.ep.name, "worker {index} cannot share the listener: {err}");
                        None
                    }
                })
                .collect();
            let ctx = Accept {
                proxy: Arc::new(proxy.for_worker()),
                admission: admission.clone(),
                stop: stop_accepting.clone(),
                drain: drain.clone(),
                connections: connections.clone(),
            };
            let (done, accepted) = tokio::sync::oneshot::channel::<()>();
            let finished = finished.clone();
            let spawned = std::thread::Builder::new().name(format!("pylon-worker-{index}")).spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => return tracing::error!("worker {index} cannot start its runtime: {err}"),
                };
                runtime.block_on(async move {
                    let mut loops = tokio::task::JoinSet::new();
                    for (listener, shared) in listeners {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => drop(loops.spawn(accept(listener, shared, ctx.clone()))),
                            Err(err) => tracing::error!(entrypoint = %shared.ep.name, "worker {index}: {err}"),
                        }
                    }
                    while loops.join_next().await.is_some() {}
                    let _ = done.send(());
                    // Keep driving this worker's connections until the drain is over.
                    finished.cancelled().await;
                });
            });
            match spawned {
                Ok(_) => accept_loops.push(accepted),
                Err(err) => tracing::error!("cannot start worker {index}: {err}"),
            }
        }

        shutdown.cancelled().await;
        proxy.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        let grace = config.lifecycle.request_accept_grace;
        if !grace.is_zero() {
            tracing::info!("stopping: /ping answers 503; still accepting requests for {grace:?}");
            tokio::time::sleep(grace).await;
        }
        stop_accepting.cancel();
        for accept_loop in accept_loops {
            let _ = accept_loop.await;
        }
        let timeout = config.lifecycle.grace_timeout;
        tracing::info!("listeners closed; waiting up to {timeout:?} for in-flight requests");
        drain.cancel();
        connections.close();
        proxy.tasks.close();
        let drained = async { tokio::join!(connections.wait(), proxy.tasks.wait()) };
        if tokio::time::timeout(timeout, drained).await.is_err() {
            tracing::warn!("grace time of {timeout:?} ran out with requests still in flight");
        }
        finished.cancel();
    }
}

/// A non-blocking listening socket with a backlog fit for bursts of connections.
fn listen(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)?.into_std()
}

/// The HTTP/1.1 and HTTP/2 settings every entrypoint shares.
fn http_builder(t: &Transport) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(t.header_read_timeout)
        .max_buf_size(t.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(t.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// What every accept loop of one worker shares.
#[derive(Clone)]
struct Accept {
    proxy: Arc<Proxy>,
    admission: Option<Arc<admission::Admission>>,
    stop: CancellationToken,
    drain: CancellationToken,
    connections: TaskTracker,
}

async fn accept(listener: TcpListener, shared: Arc<Listener>, ctx: Accept) {
    let Accept { proxy, admission, stop, drain, connections } = ctx;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(entrypoint = %shared.ep.name, %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // At maxConnections the newcomer waits here, holding no more than this one socket,
        // while the longest-idle connection makes room.
        let admitted = match &admission {
            Some(admission) => tokio::select! {
                _ = stop.cancelled() => return,
                admitted = admission.admit() => Some(admitted),
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let (shared, proxy, drain) = (shared.clone(), proxy.clone(), drain.clone());
        connections.spawn(async move {
            connection(stream, peer, &shared, proxy, drain, admitted.as_ref().map(|a| a.conn.clone())).await;
            drop(admitted);
        });
    }
}

/// Serves one connection: TLS if the client starts a handshake (or the entrypoint requires
/// it), then HTTP until the client leaves or stays idle too long. When `drain` fires, the
/// connection finishes its in-flight requests and closes.
async fn connection(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    shared: &Listener,
    proxy: Arc<Proxy>,
    drain: CancellationToken,
    admitted: Option<Arc<admission::Conn>>,
) {
    let t = &shared.transport;
    let _open = proxy.metrics.map(|metrics| metrics.open(shared.ep.metric));
    // Chosen to make room at maxConnections: a connection between requests closes (gracefully
    // once it speaks HTTP), one still starting is dropped.
    let evicted = {
        let admitted = admitted.clone();
        async move {
            match admitted {
                Some(conn) => conn.evicted().await,
                None => std::future::pending().await,
            }
        }
    };
    tokio::pin!(evicted);
    // The PROXY header, the first byte and the TLS handshake share one `readTimeout`.
    let deadline = tokio::time::Instant::now() + t.header_read_timeout;
    if let Some(trust) = &shared.proxy_protocol {
        let header = tokio::time::timeout_at(deadline, proxy_protocol::read(&mut stream));
        tokio::select! {
            header = header => match header {
                Ok(Ok(Some(client))) if trust.trusts(peer.ip()) => peer = client,
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return tracing::debug!(%peer, "{err}"),
                Err(_) => return tracing::debug!(%peer, "no PROXY header or request in time"),
            },
            _ = evicted.as_mut() => return,
        }
    }
    let tls = shared.tls_only || {
        let mut first = [0u8; 1];
        tokio::select! {
            peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => match peeked {
                Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
                _ => return,
            },
            _ = evicted.as_mut() => return,
        }
    };
    let ep = shared.ep.clone();
    // On h2 the socket keeps moving (pings) while a stream's window is shut: responses are
    // watched for a client that stopped taking them.
    let stall = t.write_stall_timeout.unwrap_or(t.idle_timeout);
    // Each request of a connection whose client showed a certificate carries its chain.
    let service =
        move |client: Option<tls::ClientCertificates>, session: Option<Arc<tls::Session>>, conn: Connection| {
            service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let (proxy, ep, session) = (proxy.clone(), ep.clone(), session.clone());
                let in_flight = admitted.as_ref().map(|c| c.begin());
                let h2 = req.version() == hyper::Version::HTTP_2;
                if let Some(client) = &client {
                    req.extensions_mut().insert(client.clone());
                }
                async move {
                    let (response, meter) = proxy.handle(req, &ep, conn, session.as_deref()).await;
                    Ok::<_, Infallible>(response.map(|body| match h2 {
                        // Every h2 response, streamed or not: one held behind a shut window must not
                        // keep its connection's place under maxConnections either.
                        true if !hyper::body::Body::is_end_stream(&body) => {
                            let body = Either::Right(stall::Watched::new(body, in_flight, stall));
                            response::Tracked { body, in_flight: None, meter }
                        }
                        _ => response::Tracked { body: Either::Left(body), in_flight, meter },
                    }))
                }
            })
        };
    if tls {
        let handshake =
            tokio::time::timeout_at(deadline, tls::accept(&shared.plane, &shared.ep.name, &shared.tls, stream));
        let stream = tokio::select! {
            handshake = handshake => match handshake {
                Ok(Ok(Accepted::Serve(stream, session))) => (stream, session),
                Ok(Ok(Accepted::Validation(name))) => {
                    return tracing::info!(%peer, domain = %name, "answered a TLS-ALPN-01 validation")
                }
                Ok(Err(err)) => return tracing::debug!(%peer, "TLS handshake failed: {err}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            },
            _ = evicted.as_mut() => return,
        };
        let (stream, session) = stream;
        let client = stream.get_ref().1.peer_certificates().filter(|c| !c.is_empty());
        let client =
            client.map(|chain| tls::ClientCertificates(chain.iter().map(|c| c.clone().into_owned()).collect()));
        // Options whose `alpnProtocols` leave h2 out get no h2 by prior knowledge either.
        let h2 = session.chosen.config.alpn_protocols.iter().any(|p| p == b"h2");
        let builder = if h2 { &shared.builder } else { &shared.builder_h1 };
        let tls_state = stream.get_ref().1;
        let suite = tls_state
            .protocol_version()
            .map(u16::from)
            .zip(tls_state.negotiated_cipher_suite().map(|s| u16::from(s.suite())));
        let conn = Connection::new(peer, tls, suite);
        let io = idle::IdleIo::new(stream, t.idle_timeout, t.write_stall_timeout);
        serve_http(builder, io, service(client, Some(Arc::new(session)), conn), &drain, evicted).await;
    } else {
        let io = idle::IdleIo::new(stream, t.idle_timeout, t.write_stall_timeout);
        serve_http(&shared.builder, io, service(None, None, Connection::new(peer, tls, None)), &drain, evicted).await;
    }
}

/// Serves HTTP on `io` until the client leaves; `drain` (shutdown) or `evicted` (room for a
/// newcomer at maxConnections) end it gracefully, after the requests in flight.
async fn serve_http<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    drain: &CancellationToken,
    evicted: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<response::Tracked>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let made_room = tokio::select! {
        _ = conn.as_mut() => return,
        _ = drain.cancelled() => false,
        _ = evicted => true,
    };
    conn.as_mut().graceful_shutdown();
    if made_room {
        // Idle by definition, but an h2 stream cut behind a shut window never ends: the
        // newcomer waiting for this place must not wait for it.
        let _ = tokio::time::timeout(EVICTED_GRACE, conn).await;
    } else {
        let _ = conn.await;
    }
}
