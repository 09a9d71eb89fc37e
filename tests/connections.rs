//! Client connections under `[limits] maxConnections`, with raw keep-alive sockets whose bytes
//! are written out: at the limit, a newcomer is served by closing the longest-idle connection
//! (between requests, or silent since it connected), and never by cutting a request in flight;
//! an h2 client that shuts its window gives its upstream connections back after `writeTimeout`.

mod support;

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use support::{fixture::on_etcd, send};

const LIMIT: &str = "[limits]\nmaxConnections = 2\n";

/// Sends one keep-alive request on `stream` and reads its whole response: the status.
async fn request(stream: &mut TcpStream, path: &str) -> u16 {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed mid-response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let length = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0usize);
        if got.len() >= end + 4 + length {
            return text[9..12].parse().unwrap();
        }
    }
}

/// Whether the server closes `stream` within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(within, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// GET /probe on a new connection: how long it took to be answered 200.
async fn newcomer(port: u16) -> Duration {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/probe");
    let reply = tokio::time::timeout(Duration::from_secs(10), send("GET", &url, &[("host", "h")]))
        .await
        .expect("the newcomer was answered")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn at_max_connections_idle_and_silent_connections_make_room_for_newcomers() {
    let f = on_etcd(LIMIT).await;
    let _app = f.serve_app("Path(`/probe`)", "h", "/probe").await;
    let port = f.replica.web;

    // Two keep-alive connections, each idle after one request; the first has been idle longer.
    let mut older = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(request(&mut older, "/probe").await, 200);
    let mut newer = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(request(&mut newer, "/probe").await, 200);
    let took = newcomer(port).await;
    // The idle ones become eligible after 500 ms of idleness (their next request may be on the way).
    assert!(took < Duration::from_secs(2), "the newcomer waited {took:?} behind idle connections");
    assert!(closed_within(&mut older, Duration::from_secs(1)).await, "the longest-idle connection made room");
    assert_eq!(request(&mut newer, "/probe").await, 200, "the other one still serves");
    drop(newer);

    // Two connections that never send a byte (they would hold their places for readTimeout).
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let took = newcomer(port).await;
    assert!(took < Duration::from_secs(2), "the newcomer waited {took:?} behind silent connections");
    let mut closed = 0;
    for stream in &mut silent {
        closed += usize::from(closed_within(stream, Duration::from_millis(500)).await);
    }
    assert!(closed >= 1, "a silent connection made room");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_max_connections_a_request_in_flight_is_never_cut_for_a_newcomer() {
    let f = on_etcd(LIMIT).await;
    let app = f.serve_app("Path(`/probe`) || PathPrefix(`/slow/`)", "h", "/probe").await;
    let port = f.replica.web;
    let before = app.hits();

    // Each slow client keeps its connection open after its answer.
    let slow = |_| async move {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        (request(&mut stream, "/slow/1500").await, stream)
    };
    let started = Instant::now();
    let slow: Vec<_> = (0..2).map(|i| tokio::spawn(slow(i))).collect();
    support::eventually("both slow requests reach the upstream", Duration::from_secs(2), || async {
        app.hits() == before + 2
    })
    .await;
    newcomer(port).await;
    let answered = started.elapsed();
    for request in slow {
        let (status, _open) = request.await.unwrap();
        assert_eq!(status, 200, "the slow request in flight was served whole");
    }
    // Both places were busy until a slow request ended; then its connection, idle but open,
    // made room once idle for 500 ms.
    assert!(
        answered >= Duration::from_millis(1_900) && answered < Duration::from_secs(4),
        "the newcomer is let in 500 ms after a slow request ends, at about 2 s: {answered:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn h2_streams_whose_window_stays_shut_give_back_their_upstream_connections() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

    let f = on_etcd("[respondingTimeouts]\nwriteTimeout = \"1s\"\n").await;
    let app = f.serve_app("PathPrefix(`/bytes/`) || PathPrefix(`/drip/`) || Path(`/probe`)", "h", "/probe").await;
    let pooled = app.open_connections();

    // h2c with prior knowledge; a zero stream window, and pings every 200 ms so that the socket
    // is never idle.
    let tcp = TcpStream::connect(("127.0.0.1", f.replica.web)).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(0)
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut held = Vec::new();
    for _ in 0..5 {
        let request = http::Request::get("http://h/bytes/10485760").body(Empty::<bytes::Bytes>::new()).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        held.push(response);
    }
    support::eventually("each stream holds an upstream connection", Duration::from_secs(2), || async {
        app.open_connections() >= 5
    })
    .await;
    let shut = Instant::now();
    support::eventually("the upstream connections are given back", Duration::from_secs(5), || async {
        app.open_connections() <= pooled
    })
    .await;
    let took = shut.elapsed();
    eprintln!("5 upstream connections held by shut h2 windows were closed after {took:?}");
    assert!(took < Duration::from_secs(3), "writeTimeout is 1 s; the streams were cut after {took:?}");
    drop(held);

    // A slow upstream is not a stalled client: a line every 1.5 s, longer than writeTimeout,
    // arrives whole.
    let tcp = TcpStream::connect(("127.0.0.1", f.replica.web)).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://h/drip/2").body(Empty::<bytes::Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), http_body_util::BodyExt::collect(response.into_body()))
        .await
        .expect("the slow stream is not cut")
        .unwrap();
    assert_eq!(body.to_bytes().len(), 2 * 5);
}
