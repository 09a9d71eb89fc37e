//! Distributed ACME against a real Pebble: replicas on one store order, answer and serve
//! certificates together.

mod support;

use std::time::Duration;

use support::{
    eventually, free_port,
    pebble::{Options, Pebble},
    replica::Replica,
    tls::fetch,
    Consul, Etcd,
};

#[tokio::test(flavor = "multi_thread")]
async fn on_etcd_one_replica_orders_another_answers_and_all_three_serve_within_a_second() {
    let etcd = Etcd::start().await;
    one_orders_another_answers_all_serve(etcd.flags(), etcd.spec()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_consul_one_replica_orders_another_answers_and_all_three_serve_within_a_second() {
    let consul = Consul::start().await;
    one_orders_another_answers_all_serve(consul.flags(), consul.spec()).await;
}

async fn one_orders_another_answers_all_serve(flags: Vec<String>, spec: pylon::control::store::StoreSpec) {
    let b_web = free_port();
    let pebble = Pebble::start(Options { http_port: b_web, ..Options::default() }).await;
    // Only A wants the name; Pebble validates on B's plain port.
    let b = Replica::start_with_web(&flags, &pebble.acme_section(""), b_web).await;
    let c = Replica::start(&flags, &pebble.acme_section("")).await;
    let a = Replica::start(
        &flags,
        &pebble.acme_section("[[acme.domains]]\nmain = \"a.pylon.test\"\nsans = [\"www.a.pylon.test\"]"),
    )
    .await;

    let store = pylon::control::store::open(&spec).await.unwrap();
    let key = "traefik/acme/certs/a.pylon.test";
    eventually("the certificate is stored", Duration::from_secs(60), || async {
        store.get(key).await.unwrap().is_some()
    })
    .await;
    let root = pebble.issuing_root().await;
    for (name, replica) in [("A", &a), ("B", &b), ("C", &c)] {
        eventually(&format!("replica {name} serves it"), Duration::from_secs(1), || async {
            fetch(replica.websecure, "a.pylon.test", &root).await.is_ok()
                && fetch(replica.websecure, "www.a.pylon.test", &root).await.is_ok()
        })
        .await;
    }
    assert_eq!(a.events("certificate.issued").len(), 1, "A ordered:\n{}", a.log());
    assert!(b.events("certificate.issued").is_empty() && c.events("certificate.issued").is_empty());
    assert_eq!(pebble.orders(), 1, "one order reached Pebble:\n{}", pebble.log());
    let accounts = store.list("traefik/acme/account/").await.unwrap();
    assert_eq!(accounts.kvs.len(), 1, "one account");
    let challenges = store.list("traefik/acme/challenges/").await.unwrap();
    assert!(challenges.kvs.is_empty(), "tokens are deleted when the order ends");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_with_the_same_20_host_rules_make_20_orders_on_one_account() {
    let etcd = Etcd::start().await;
    let web = free_port();
    let pebble = Pebble::start(Options { http_port: web, ..Options::default() }).await;
    let flags = etcd.flags();
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("h{i}.pylon.test")).collect();
    for name in &names {
        let router = format!("traefik/http/routers/{name}");
        store.put(&format!("{router}/rule"), format!("Host(`{name}`)")).await.unwrap();
        store.put(&format!("{router}/service"), "app").await.unwrap();
        store.put(&format!("{router}/tls/certresolver"), "default").await.unwrap();
    }
    store.put("traefik/http/services/app/loadbalancer/servers/0/url", "http://127.0.0.1:9").await.unwrap();
    let section = pebble.acme_section("onHostRule = true");
    // Pebble validates on A's plain port only, so A listens before B and C, which may then take
    // the orders (on a slow machine, B once ordered before A had bound it and every
    // validation was refused).
    let a = Replica::start_with_web(&flags, &section, web).await;
    let (b, c) = tokio::join!(Replica::start(&flags, &section), Replica::start(&flags, &section));
    let start = std::time::Instant::now();
    while store.list("traefik/acme/certs/").await.unwrap().kvs.len() < 20 {
        let problems = |r: &Replica| {
            r.log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect::<Vec<_>>().join("\n")
        };
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "20 certificates stored within 90 s; A:\n{}\nB:\n{}\nC:\n{}",
            problems(&a),
            problems(&b),
            problems(&c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let root = pebble.issuing_root().await;
    for replica in [&a, &b, &c] {
        for name in &names {
            eventually(&format!("{name} served"), Duration::from_secs(1), || async {
                fetch(replica.websecure, name, &root).await.is_ok()
            })
            .await;
        }
    }
    assert_eq!(pebble.orders(), 20, "exactly one order per name reached Pebble");
    assert_eq!(store.list("traefik/acme/account/").await.unwrap().kvs.len(), 1, "one account");
    let registrations = pebble.log().lines().filter(|l| l.contains("POST /sign-me-up")).count();
    assert_eq!(registrations, 1, "one account registration reached Pebble");
}
