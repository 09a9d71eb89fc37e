//! ACME at the TLS handshake, against a real Pebble: TLS-ALPN-01 answered by whichever replica
//! Pebble reaches, and onDemand certificates under their policy (allow-list, ask URL, rate).

mod support;

use std::time::Duration;

use support::{
    eventually, free_port, get,
    pebble::{Options, Pebble},
    replica::Replica,
    sum,
    tls::fetch,
    Etcd,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn_01_is_answered_by_another_replica_and_both_serve_the_certificate() {
    let etcd = Etcd::start().await;
    let b_tls = free_port();
    let pebble = Pebble::start(Options { http_port: free_port(), tls_port: Some(b_tls), ..Options::default() }).await;
    let flags = etcd.flags();
    let tls_challenge = "[acme.tlsChallenge]\n";
    // B's TLS entrypoint is where Pebble validates; only A wants the name.
    let b = Replica::start_tls_at(&flags, &format!("{}{tls_challenge}", pebble.acme_base("")), b_tls).await;
    let a = Replica::start(
        &flags,
        &format!("{}{tls_challenge}", pebble.acme_base("[[acme.domains]]\nmain = \"alpn.pylon.test\"")),
    )
    .await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    eventually("the certificate is stored", Duration::from_secs(60), || async {
        store.get("traefik/acme/certs/alpn.pylon.test").await.unwrap().is_some()
    })
    .await;
    let root = pebble.issuing_root().await;
    for replica in [&a, &b] {
        eventually("served", Duration::from_secs(1), || async {
            fetch(replica.websecure, "alpn.pylon.test", &root).await.is_ok()
        })
        .await;
    }
    assert!(b.log().contains("answered a TLS-ALPN-01 validation"), "B answered:\n{}", b.log());
    assert!(!a.log().contains("answered a TLS-ALPN-01"), "A did not");
    assert!(store.list("traefik/acme/alpn/").await.unwrap().kvs.is_empty(), "challenge certificates are deleted");
    assert_eq!(pebble.orders(), 1);
}

/// An `ask` endpoint: 200 for names starting with `yes`, 403 otherwise.
async fn ask_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let status = if request.contains("domain=yes") { "200 OK" } else { "403 Forbidden" };
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn on_demand_orders_allowed_names_during_their_first_handshake_and_nothing_else() {
    let etcd = Etcd::start().await;
    let web = free_port();
    let pebble = Pebble::start(Options { http_port: web, ..Options::default() }).await;
    let ask = ask_server().await;
    let policy = format!(
        "onDemand = true\n[acme.onDemandPolicy]\nallow = [\"*.ok.pylon.test\", \"*.asked.test\"]\n\
         ask = \"http://127.0.0.1:{ask}/check\"\nratePerMinute = 2\ntimeout = \"30s\"\n"
    );
    let extra = format!("[metrics.prometheus]\n{}", pebble.acme_section(&policy));
    let replica = Replica::start_with_web(&etcd.flags(), &extra, web).await;
    let root = pebble.issuing_root().await;

    let served = fetch(replica.websecure, "yes.ok.pylon.test", &root).await;
    assert!(served.is_ok(), "the first handshake gets a valid certificate: {:?}\n{}", served.err(), replica.log());
    assert_eq!(pebble.orders(), 1);

    // Not on the allow-list; on it but refused by `ask`.
    for refused in ["yes.other.test", "no.asked.test"] {
        let err = fetch(replica.websecure, refused, &root).await.err();
        assert!(err.is_some_and(|e| e.contains("handshake")), "{refused} gets the default certificate");
    }
    assert_eq!(pebble.orders(), 1, "names outside the policy never reach Pebble");

    assert!(fetch(replica.websecure, "yes.asked.test", &root).await.is_ok(), "the second new name this minute");
    assert_eq!(pebble.orders(), 2);
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let record = store.get("traefik/acme/certs/yes.asked.test").await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&record.value).contains("\"on_demand\":true"), "kept for renewal");

    // Two new names per minute: a third allowed name is not ordered now.
    let err = fetch(replica.websecure, "yes3.ok.pylon.test", &root).await.err();
    assert!(err.is_some_and(|e| e.contains("handshake")), "over the rate, the default certificate");
    assert!(replica.log().contains("rate limit reached"), "{}", replica.log());
    assert_eq!(pebble.orders(), 2, "the rate limit holds");
    assert!(fetch(replica.websecure, "yes.ok.pylon.test", &root).await.is_ok(), "obtained names keep working");
    let (_, metrics) = get(&format!("http://127.0.0.1:{}/metrics", replica.admin)).await.unwrap();
    assert_eq!(
        sum(&metrics, "pylon_acme_on_demand_refused_total", &[]),
        3.0,
        "two names outside the policy and one over the rate:\n{metrics}"
    );
    assert_eq!(sum(&metrics, "pylon_acme_orders_total", &["result=\"issued\""]), 2.0, "{metrics}");
    assert_eq!(sum(&metrics, "pylon_acme_order_duration_seconds_count", &[]), 2.0, "{metrics}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for name in ["yes.ok.pylon.test", "yes.asked.test"] {
        let not_after = sum(&metrics, "traefik_tls_certs_not_after", &[name]);
        assert!(not_after > now + 86_400.0, "traefik_tls_certs_not_after for {name}:\n{metrics}");
    }
}
