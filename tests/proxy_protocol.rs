//! The PROXY protocol on an entrypoint, behind a real HAProxy sending version 1 and version 2
//! headers: the client's address reaches the upstream from a trusted balancer, is ignored from
//! any other, and a connection without a header is served as it is.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use support::{fixture, free_port, upstream::Upstream, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET for `app.example` sent from `source` (a loopback address) to `port`: the whole
/// answer, or what the connection gave before it closed.
async fn get_from(source: &str, port: u16, preamble: &[u8]) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(support::addr(port)).await.unwrap();
    stream.write_all(preamble).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "an answer or a close in time");
    String::from_utf8_lossy(&answer).into_owned()
}

fn real_ip(answer: &str) -> Option<&str> {
    answer.lines().find_map(|l| l.strip_prefix("x-real-ip: "))
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_haproxy_the_client_address_comes_from_the_proxy_protocol() {
    support::require("haproxy");
    let (trusted, untrusted) = (free_port(), free_port());
    let f = fixture::on_etcd(&format!(
        r#"
[entryPoints.pp]
address = "127.0.0.1:{trusted}"
[entryPoints.pp.proxyProtocol]
trustedIPs = ["127.0.0.1"]
[entryPoints.elsewhere]
address = "127.0.0.1:{untrusted}"
[entryPoints.elsewhere.proxyProtocol]
trustedIPs = ["10.9.9.9/32"]
"#
    ))
    .await;
    let app = Upstream::start("app").await;
    let mut pairs = fixture::router("app", "Host(`app.example`)", "app");
    pairs.extend(fixture::servers("app", &[&app]));
    pairs.extend([
        ("http/routers/app/entryPoints/0", "pp".to_string()),
        ("http/routers/app/entryPoints/1", "elsewhere".to_string()),
    ]);
    f.write(&pairs).await;

    // HAProxy relays TCP, announcing each client with a v1 or a v2 header.
    let (v1, v2, v2_elsewhere) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global\n  maxconn 500\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n\
         listen v1\n  bind 127.0.0.1:{v1}\n  server s 127.0.0.1:{trusted} send-proxy\n\
         listen v2\n  bind 127.0.0.1:{v2}\n  server s 127.0.0.1:{trusted} send-proxy-v2\n\
         listen v2_elsewhere\n  bind 127.0.0.1:{v2_elsewhere}\n  server s 127.0.0.1:{untrusted} send-proxy-v2\n"
    );
    std::fs::write(dir.path().join("haproxy.cfg"), config).unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(dir.path().join("haproxy.cfg"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _haproxy = Process { child, name: "haproxy".into() };
    support::eventually("HAProxy and the route are up", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(support::addr(v1)).await.is_ok()
            && get_from("127.0.0.1", v1, b"").await.starts_with("HTTP/1.1 200")
    })
    .await;

    for (port, version) in [(v1, "v1"), (v2, "v2")] {
        let answer = get_from("127.0.0.5", port, b"").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{version}: {answer}");
        assert_eq!(real_ip(&answer), Some("127.0.0.5"), "{version}: the client, not HAProxy: {answer}");
        assert!(answer.contains("x-forwarded-for: 127.0.0.5"), "{version}: {answer}");
    }
    // From a balancer that is not trusted, the header is read off and its address ignored.
    let answer = get_from("127.0.0.5", v2_elsewhere, b"").await;
    assert_eq!(real_ip(&answer), Some("127.0.0.1"), "HAProxy's own address: {answer}");
    // Without a header, a connection is served as it is; a malformed one is closed unanswered.
    let answer = get_from("127.0.0.6", trusted, b"").await;
    assert_eq!(real_ip(&answer), Some("127.0.0.6"), "{answer}");
    let answer = get_from("127.0.0.1", trusted, b"PROXY TCP4 10.0.0.1 10.0.0.2 99999 80\r\n").await;
    assert_eq!(answer, "", "a bad header gets no answer");
    // A client may not forge its address where its peer is not trusted.
    let answer = get_from("127.0.0.7", untrusted, b"PROXY TCP4 10.0.0.1 10.0.0.2 1234 80\r\n").await;
    assert_eq!(real_ip(&answer), Some("127.0.0.7"), "{answer}");
}
