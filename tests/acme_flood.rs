//! A flood of ACME challenge requests for tokens no order of the cluster is waiting for: each
//! is answered 404 from the replica's memory, without a store read (counted on etcd's own
//! metrics), and at once even while etcd is frozen.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use support::{fixture::Fixture, get, replica::Replica, Etcd};

/// `[acme]` with a CA nobody listens on: the replica answers challenges, and orders nothing.
const ACME: &str = r#"
[acme]
email = "ops@pylon.test"
caServer = "https://127.0.0.1:9/directory"
entryPoint = "websecure"
[acme.httpChallenge]
entryPoint = "web"
"#;

const RANGES: &str = "etcd_debugging_mvcc_range_total";

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tokens_cost_the_store_nothing_and_never_wait_for_it() {
    let etcd = Etcd::start().await;
    let store = pylon::store::open(&etcd.spec()).await.unwrap();
    let replica = Replica::start(&etcd.flags(), ACME).await;
    let f = Fixture { store, replica, flags: etcd.flags(), server: Box::new(()) };
    f.write(&[("acme/challenges/known-token", "known-token.thumbprint".into())]).await;
    let known = f.replica.web("/.well-known/acme-challenge/known-token");
    support::eventually("the stored token is answered", Duration::from_secs(5), || async {
        matches!(get(&known).await, Ok((200, body)) if body == "known-token.thumbprint")
    })
    .await;

    let before = etcd.counter(RANGES).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut flood = tokio::task::JoinSet::new();
    for connection in 0..8 {
        let (client, base) = (client.clone(), f.replica.web("/.well-known/acme-challenge/"));
        flood.spawn(async move {
            for i in 0..250 {
                let uri: http::Uri = format!("{base}random-{connection}-{i}").parse().unwrap();
                let response = client.get(uri).await.expect("a challenge request");
                assert_eq!(response.status(), 404);
                let _ = response.into_body().collect().await;
            }
        });
    }
    let flooded = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = flood.join_next().await {
            done.unwrap();
        }
    });
    flooded.await.expect("2,000 requests within a minute");
    assert!(before > 0.0, "etcd counts the replica's own range calls");
    let reads = etcd.counter(RANGES).await - before;
    eprintln!("2,000 unknown tokens made {reads} etcd range calls");
    assert!(reads < 20.0, "2,000 unknown tokens made {reads} etcd range calls");

    etcd.freeze();
    let started = Instant::now();
    let answer = get(&f.replica.web("/.well-known/acme-challenge/while-frozen")).await;
    let took = started.elapsed();
    etcd.thaw();
    assert!(matches!(answer, Ok((404, _))), "{answer:?}");
    assert!(took < Duration::from_millis(500), "an unknown token waited {took:?} for a frozen store");
    assert!(matches!(get(&known).await, Ok((200, _))), "the known token is still answered");
}
