//! Distributed ACME against a real Pebble: replicas on one store order, answer and serve
//! certificates together.

mod support;

use std::{path::Path, process::Command, time::Duration};

use support::{
    eventually, free_port,
    pebble::{Options, Pebble},
    replica::Replica,
    Etcd,
};

/// Whether `port` serves `host` a certificate that verifies against `root` (curl's own check).
fn verifies(dir: &Path, port: u16, host: &str) -> bool {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "3", "--cacert", "root.pem"])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1"), &format!("https://{host}:{port}/")])
        .current_dir(dir)
        .output()
        .expect("curl");
    out.status.success()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_orders_another_answers_and_all_three_serve_within_a_second() {
    let etcd = Etcd::start().await;
    let b_web = free_port();
    let pebble = Pebble::start(Options { http_port: b_web, validity: None, nonce_reject: 0 }).await;
    let flags = etcd.flags();
    // Only A wants the name; Pebble validates on B's plain port.
    let b = Replica::start_with_web(&flags, &pebble.acme_section(""), b_web).await;
    let c = Replica::start(&flags, &pebble.acme_section("")).await;
    let a = Replica::start(
        &flags,
        &pebble.acme_section("[[acme.domains]]\nmain = \"a.pylon.test\"\nsans = [\"www.a.pylon.test\"]"),
    )
    .await;

    let store = pylon::store::open(&etcd.spec()).await.unwrap();
    let key = "traefik/acme/certs/a.pylon.test";
    eventually("the certificate is stored", Duration::from_secs(60), || async {
        store.get(key).await.unwrap().is_some()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), pebble.issuing_root().await).unwrap();
    for (name, replica) in [("A", &a), ("B", &b), ("C", &c)] {
        eventually(&format!("replica {name} serves it"), Duration::from_secs(1), || async {
            verifies(dir.path(), replica.websecure, "a.pylon.test")
                && verifies(dir.path(), replica.websecure, "www.a.pylon.test")
        })
        .await;
    }
    assert!(a.log().contains("certificate issued and stored"), "A ordered:\n{}", a.log());
    assert!(!b.log().contains("certificate issued") && !c.log().contains("certificate issued"));
    assert_eq!(pebble.orders(), 1, "one order reached Pebble:\n{}", pebble.log());
    let accounts = store.list("traefik/acme/account/").await.unwrap();
    assert_eq!(accounts.kvs.len(), 1, "one account");
    let challenges = store.list("traefik/acme/challenges/").await.unwrap();
    assert!(challenges.kvs.is_empty(), "tokens are deleted when the order ends");
}
