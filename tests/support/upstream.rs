//! A real HTTP/1.1 upstream server for proxy tests, in the test process on a free loopback
//! port. It answers:
//! - `/health`: the status set with [`Upstream::set_health`] (200 at start);
//! - `/status/N`: status N;
//! - `/slow/MS`: after MS milliseconds;
//! - `/bytes/N`: N bytes, streamed in 64 KiB chunks, never held whole;
//! - `/drip/N`: N lines of `drip`, one every 1.5 s;
//! - `/upload`: the number of body bytes it received (streamed, counted, dropped);
//! - `/ws`: `101 Switching Protocols`, then echoes every byte of the upgraded connection;
//! - `/close`: 200 with `Connection: close`, after which it closes the connection;
//! - anything else: `<name> <method> <path?query>` and, one per line, every request header.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    health: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    /// Client connections open right now.
    open: Arc<AtomicUsize>,
    /// Client connections accepted so far.
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

type Body = BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (n, h, c, o, a) = (name.to_string(), health.clone(), hits.clone(), open.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let (n, h, c, o) = (n.clone(), h.clone(), c.clone(), o.clone());
                o.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (n, h, c) = (n.clone(), h.clone(), c.clone());
                        async move { Ok::<_, Infallible>(answer(req, &n, &h, &c).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Upstream { name: name.into(), addr, health, hits, open, accepted, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    /// Requests answered so far, health checks excluded.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Client connections open right now (a proxy's pooled ones included).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far, health checks' included.
    pub fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed()
}

async fn answer(mut req: Request<Incoming>, name: &str, health: &AtomicU16, hits: &AtomicUsize) -> Response<Body> {
    let path = req.uri().path().to_string();
    let status = |code: u16, body: Body| {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        r
    };
    if path == "/health" {
        return status(health.load(Ordering::SeqCst), full("health"));
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let arg = |prefix: &str| path.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok());
    if let Some(code) = arg("/status/") {
        return status(code as u16, full(format!("{name} status {code}")));
    }
    if let Some(ms) = arg("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return status(200, full(format!("{name} slow")));
    }
    if let Some(chunks) = arg("/drip/") {
        let interval = Duration::from_millis(1500);
        let drip = Drip { left: chunks, sleep: Box::pin(tokio::time::sleep(interval)), interval };
        return status(200, drip.boxed());
    }
    if let Some(total) = arg("/bytes/") {
        let mut r = status(200, Repeat { left: total, chunk: Bytes::from(vec![b'x'; 64 * 1024]) }.boxed());
        r.headers_mut().insert("content-length", total.into());
        return r;
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return status(400, full("upload broken")),
            }
        }
        return status(200, full(received.to_string()));
    }
    if path == "/close" {
        let mut r = status(200, full(format!("{name} closing")));
        r.headers_mut().insert("connection", "close".parse().unwrap());
        return r;
    }
    if path == "/ws" {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        let mut r = status(101, full(""));
        r.headers_mut().insert("connection", "upgrade".parse().unwrap());
        r.headers_mut().insert("upgrade", "websocket".parse().unwrap());
        return r;
    }
    let mut text = format!("{name} {} {}\n", req.method(), req.uri().path_and_query().map_or("/", |p| p.as_str()));
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    status(200, full(text))
}

/// `left` chunks of `drip\n`, one every `interval`: a slow upstream, not a stalled client.
pub struct Drip {
    left: u64,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    interval: Duration,
}

impl http_body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.left -= 1;
        let next = tokio::time::Instant::now() + self.interval;
        self.sleep.as_mut().reset(next);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"drip\n")))))
    }
}

/// `left` bytes of `chunk`-sized frames, made as they are sent.
pub struct Repeat {
    pub left: u64,
    pub chunk: Bytes,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= len as u64;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.slice(..len)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}
