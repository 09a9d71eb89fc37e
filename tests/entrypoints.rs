//! What entrypoints do for clients: TLS by SNI from certificates in the store, the default
//! certificate for unknown names, h2 over TLS, the http → https redirect, WebSocket upgrades,
//! and 256 MiB bodies streamed both ways while Pylon's memory stays bounded. Routes and
//! certificates are written to a real etcd; clients are curl and hyper.

mod support;

use std::{process::Command, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor, rt::TokioIo};
use pylon::control::store::{self, Op, Store, Txn};
use support::{get_host, replica::Replica, send, tls::issue, upstream::Upstream, Etcd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    store: Store,
    replica: Replica,
    upstream: Upstream,
    _etcd: Etcd,
    dir: tempfile::TempDir,
}

/// A replica on etcd with one router for `app.example` (plain and TLS) to one upstream.
async fn fixture() -> Fixture {
    let etcd = Etcd::start().await;
    let store = store::open(&etcd.spec()).await.unwrap();
    let upstream = Upstream::start("app").await;
    let replica = Replica::start(&etcd.flags(), "").await;
    let f = Fixture { store, replica, upstream, _etcd: etcd, dir: tempfile::tempdir().unwrap() };
    f.write(&[
        ("http/routers/app/rule", "Host(`app.example`) || Host(`other.example`)".into()),
        ("http/routers/app/service", "app".into()),
        ("http/services/app/loadBalancer/servers/0/url", f.upstream.url()),
    ])
    .await;
    support::eventually("routed", Duration::from_secs(2), || async {
        get_host(&f.replica.web("/"), "app.example").await.status == 200
    })
    .await;
    f
}

impl Fixture {
    async fn write(&self, pairs: &[(&str, String)]) {
        let ops = pairs.iter().map(|(k, v)| Op::put(format!("traefik/{k}"), v.as_bytes())).collect();
        self.store.txn(Txn { compares: vec![], ops }).await.unwrap();
    }

    /// Runs curl against `host` resolved to the replica's `port`; returns (exit code, stdout, stderr).
    fn curl(&self, port: u16, host: &str, args: &[&str]) -> (i32, String, String) {
        support::require("curl");
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--resolve", &format!("{host}:{port}:127.0.0.1")])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_by_sni_default_certificate_and_h2() {
    let f = fixture().await;
    let (ca, chain, key) = issue(&["app.example"]);
    f.write(&[("tls/certificates/0/certFile", chain), ("tls/certificates/0/keyFile", key)]).await;
    std::fs::write(f.dir.path().join("ca.pem"), ca).unwrap();
    let port = f.replica.websecure;
    let url = format!("https://app.example:{port}/tls");

    // The certificate arrives through the watch; curl verifies it against the test CA.
    support::eventually("certificate served", Duration::from_secs(2), || async {
        f.curl(port, "app.example", &["--cacert", "ca.pem", &url]).0 == 0
    })
    .await;
    let (code, out, err) =
        f.curl(port, "app.example", &["--cacert", "ca.pem", "--http2", "-w", "\n%{http_version}", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("app GET /tls\n"), "{out}");
    assert!(out.contains("x-forwarded-proto: https"), "{out}");
    assert!(out.ends_with("\n2"), "h2 negotiated by ALPN: {out}");
    let (_, out, _) =
        f.curl(port, "app.example", &["--cacert", "ca.pem", "--http1.1", "-w", "\n%{http_version}", &url]);
    assert!(out.ends_with("\n1.1"), "{out}");

    // A name without a certificate gets the default one, which the CA did not sign.
    let other = format!("https://other.example:{port}/");
    let (code, _, err) = f.curl(port, "other.example", &["--cacert", "ca.pem", &other]);
    assert_ne!(code, 0, "the default certificate must not verify: {err}");
    let (code, out, err) = f.curl(port, "other.example", &["-k", "-v", &other]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("app GET /"), "{out}");
    assert!(err.contains("PYLON DEFAULT CERT"), "default certificate's subject: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_requests_are_redirected_to_https_keeping_host_path_and_query() {
    let f = fixture().await;
    let redir = f.replica.redir;
    let url = format!("http://127.0.0.1:{redir}/a/b?c=d");
    let get = send("GET", &url, &[("host", &format!("app.example:{redir}"))]).await.unwrap();
    assert_eq!(get.status, 301);
    let expected = format!("https://app.example:{}/a/b?c=d", f.replica.websecure);
    assert_eq!(get.headers["location"], expected.as_str());
    let post = send("POST", &url, &[("host", "app.example")]).await.unwrap();
    assert_eq!(post.status, 308, "a redirected POST keeps its method");
    assert_eq!(post.headers["location"], expected.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_upgrade_is_tunnelled() {
    let f = fixture().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::get(f.replica.web("/ws"))
        .header("host", "app.example")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    for message in ["hello", "through the tunnel", "again"] {
        io.write_all(message.as_bytes()).await.unwrap();
        let mut buf = vec![0; message.len()];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(buf, message.as_bytes());
    }
}

const BIG: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_256_mib_upload_and_download_stream_with_bounded_memory() {
    let f = fixture().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<support::upstream::Repeat>();
    // What the replica holds before streaming (its tables, workers, metrics) depends on the
    // machine; what streaming adds must not grow with the body.
    let before_mib = f.replica.rss_kib() / 1024;
    let upload = http::Request::post(f.replica.web("/upload"))
        .header("host", "app.example")
        .body(support::upstream::Repeat { left: BIG, chunk: Bytes::from(vec![b'u'; 256 * 1024]) })
        .unwrap();
    let response = client.request(upload).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, BIG.to_string().as_bytes(), "the upstream received every byte");

    let download = http::Request::get(f.replica.web(&format!("/bytes/{BIG}")))
        .header("host", "app.example")
        .body(support::upstream::Repeat { left: 0, chunk: Bytes::new() })
        .unwrap();
    let mut body = client.request(download).await.unwrap().into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, BIG);

    let peak_mib = f.replica.peak_rss_kib() / 1024;
    eprintln!("RSS before streaming: {before_mib} MiB; peak while streaming: {peak_mib} MiB");
    assert!(
        peak_mib < before_mib + 32,
        "Pylon grew from {before_mib} MiB to a peak of {peak_mib} MiB while streaming 2 × 256 MiB"
    );
}
