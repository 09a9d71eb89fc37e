//! Requests an attacker writes by hand: paths that try to climb out of a route or slip past a
//! deny rule, bodies framed two ways at once, codings Pylon would drop, missing and doubled
//! `Host`s, `CONNECT`, `h2c` upgrades (and the upgrades an entrypoint allows by name), forged
//! forwarding headers. Each is sent as raw bytes on a socket (written out in the test), to a
//! replica in front of an upstream that echoes what it received.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{
    fixture::{on_etcd, router, servers, Fixture},
    upstream::Upstream,
};

/// A replica with `/public` and `/upload` routed to `app`, and `/admin` to `deny`.
async fn fixture() -> (Fixture, Upstream, Upstream) {
    let f = on_etcd("").await;
    let (app, deny) = (Upstream::start("app").await, Upstream::start("deny").await);
    let mut pairs = router("public", "PathPrefix(`/public`) || Path(`/upload`)", "app");
    pairs.extend(router("admin", "PathPrefix(`/admin`)", "deny"));
    pairs.extend(servers("app", &[&app]));
    pairs.extend(servers("deny", &[&deny]));
    f.write(&pairs).await;
    f.within_a_second("h", "/public/", "the routes", |r| r.body.starts_with("app ")).await;
    (f, app, deny)
}

/// Writes `bytes` on a new connection and reads until the replica closes it (or 5 s pass).
async fn raw(port: u16, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection stayed open after:\n{}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").into_bytes()
}

fn status(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn path_tricks_neither_climb_out_of_a_route_nor_slip_past_a_deny_rule() {
    let (f, app, _deny) = fixture().await;
    let port = f.replica.web;
    for path in [
        "/public/../admin/secret.txt",
        "/public/%2e%2e/admin/secret.txt",
        "/public%2F..%2Fadmin/secret.txt",
        "/public/..%2Fadmin/secret.txt",
        "/%61dmin/secret.txt",
        "//admin/secret.txt",
        "/./admin/secret.txt",
        "/x/../admin/secret.txt",
        "/%2Fadmin/secret.txt",
    ] {
        let response = raw(port, &get(path)).await;
        let refused = status(&response) == 400;
        let denied = response.contains("deny GET /admin/secret.txt");
        assert!(refused || denied, "{path} got past the rules:\n{response}");
    }
    assert_eq!(app.hits(), 1, "only the fixture's own request reached app");
    let response = raw(port, &get("/public/./a//b/../%7Euser?q=%2F")).await;
    assert!(response.contains("app GET /public/a/~user?q=%2F\n"), "the upstream sees the matched path:\n{response}");
    for path in ["/public/a%3Bb", "/public/a%00", "/public/a%5C", "/public/%25", "/public/a%3F", "/public/a%23"] {
        assert_eq!(status(&raw(port, &get(path)).await), 400, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encoded_characters_pass_where_the_entrypoint_allows_them() {
    let extra = "[entryPoints.web.http]\nsanitizePath = false\n[entryPoints.web.http.encodedCharacters]\nallowEncodedSlash = true\n";
    let f = on_etcd(extra).await;
    let _app = f.serve_app("PathPrefix(`/public`)", "h", "/public/").await;
    let response = raw(f.replica.web, &get("/public/a%2fb/../c")).await;
    assert!(response.contains("app GET /public/a%2Fb/../c\n"), "{response}");
    assert_eq!(status(&raw(f.replica.web, &get("/public/a%3Bb")).await), 400, "the other encodings stay refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_framed_two_ways_are_read_one_way_and_the_connection_closes() {
    let (f, _app, deny) = fixture().await;
    let port = f.replica.web;
    // CL.TE: chunked wins; what the length would have left over is never read as a request.
    let cl_te = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
                  0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let response = raw(port, cl_te).await;
    assert_eq!((status(&response), response.matches("HTTP/1.1 ").count()), (200, 1), "{response}");
    // TE.CL: the chunked body is what is forwarded, whole.
    let te_cl = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                  8\r\nSMUGGLED\r\n0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let response = raw(port, te_cl).await;
    assert!(response.ends_with("\r\n\r\n8"), "the upstream received 8 bytes:\n{response}");
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response}");
    let two_lengths = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
    assert_eq!(status(&raw(port, two_lengths).await), 400);
    assert_eq!(deny.hits(), 0, "nothing was smuggled to /admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn codings_other_than_one_chunked_and_broken_chunks_are_the_clients_fault() {
    let (f, _app, _deny) = fixture().await;
    let port = f.replica.web;
    let chunked = |te: &str| {
        format!("POST /upload HTTP/1.1\r\nHost: h\r\n{te}\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /public/next HTTP/1.1\r\nHost: h\r\n\r\n")
    };
    for te in [
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    ] {
        let response = raw(port, chunked(te).as_bytes()).await;
        assert_eq!(status(&response), 400, "{te}:\n{response}");
        assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{te}: the connection closed after the 400");
    }
    let extension = format!("3;{}\r\nabc\r\n0\r\n\r\n", "x".repeat(100 * 1024));
    for body in ["zz\r\nabc\r\n0\r\n\r\n", "3\nabc\n0\n\n", "3\r\nabcdef0\r\n\r\n", extension.as_str()] {
        let request = format!("POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let response = raw(port, request.as_bytes()).await;
        assert!(!response.contains(" 502 "), "a broken chunk is not the upstream's fault:\n{response}");
        assert_eq!(status(&response), 400, "{:?}:\n{response}", &body[..body.len().min(20)]);
    }
    assert!(!f.replica.log().contains("upstream"), "no upstream warning for a client's body:\n{}", f.replica.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn heads_without_one_host_connect_and_h2c_upgrades_are_refused_or_defused() {
    let (f, _app, _deny) = fixture().await;
    let port = f.replica.web;
    assert_eq!(status(&raw(port, b"GET /public/ HTTP/1.1\r\nConnection: close\r\n\r\n").await), 400, "no Host");
    let two = b"GET /public/ HTTP/1.1\r\nHost: h\r\nHost: evil\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&raw(port, two).await), 400, "two Hosts");
    assert_eq!(status(&raw(port, b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n").await), 400, "CONNECT");

    let h2c = b"GET /public/ HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
                Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let response = raw(port, h2c).await;
    assert_eq!(status(&response), 200, "{response}");
    assert!(!response.to_ascii_lowercase().contains("upgrade: h2c"), "the upgrade reached the upstream:\n{response}");

    let forged = b"GET /public/ HTTP/1.1\r\nHost: h\r\nX-Forwarded-Uri: /admin\r\nX-Forwarded-Prefix: /admin\r\n\
                   X-Forwarded-Tls-Client-Cert: MIIB\r\nConnection: close\r\n\r\n";
    let response = raw(port, forged).await.to_ascii_lowercase();
    for name in ["x-forwarded-uri", "x-forwarded-prefix", "x-forwarded-tls-client-cert"] {
        assert!(!response.contains(name), "{name} reached the upstream:\n{response}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_trickled_past_read_timeout_is_cut_with_408() {
    let f = on_etcd("[respondingTimeouts]\nreadTimeout = \"1s\"\n").await;
    let _app = f.serve_app("Path(`/upload`) || Path(`/probe`)", "h", "/probe").await;

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.replica.web)).await.unwrap();
    stream.write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 100 ms: each byte would re-arm an idle timeout, never the whole-read one.
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), reader.read_to_end(&mut response)).await;
    trickle.abort();
    let response = String::from_utf8_lossy(&response);
    assert!(read.is_ok(), "the trickling client was never cut: {response}");
    assert_eq!(status(&response), 408, "{response}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "cut after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_after_write_timeout() {
    let f = on_etcd("[respondingTimeouts]\nwriteTimeout = \"1s\"\n").await;
    let _app = f.serve_app("PathPrefix(`/bytes/`) || Path(`/probe`)", "h", "/probe").await;

    const TOTAL: usize = 100 * 1024 * 1024;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.replica.web)).await.unwrap();
    stream.write_all(format!("GET /bytes/{TOTAL} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).await.unwrap();
    // Read nothing for 3 s: buffers fill, Pylon's writes stop making progress.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    });
    assert!(drained.await.is_ok(), "the connection was neither cut nor finished");
    assert!(received < TOTAL / 2, "a client that stopped reading got {received} of {TOTAL} bytes: never cut");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entrypoint_tunnels_the_upgrades_it_allows_by_name() {
    let f = on_etcd("[entryPoints.web.http]\nallowedUpgrades = [\"websocket\", \"echo\"]\n").await;
    let _app = f.serve_app("Path(`/ws`) || Path(`/probe`)", "h", "/probe").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", f.replica.web)).await.unwrap();
    stream.write_all(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert_eq!(status(&head), 101, "{head}");
    // The upstream echoes the upgraded connection's bytes: the tunnel is through.
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"ping");
}
