//! Replicas coming and going under load: the store dies and comes back while requests keep
//! succeeding; a replica behind a real HAProxy gets SIGTERM under steady load and no request
//! is lost.

mod support;

use std::{
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use pylon::control::store::{self, Op, Store, Txn};
use support::{free_port, get_host, replica::Replica, upstream::Upstream, Etcd, Process};

async fn route(store: &Store, upstream: &Upstream) {
    let ops = vec![
        Op::put("traefik/http/routers/app/rule", "Host(`app.example`)"),
        Op::put("traefik/http/routers/app/service", "app"),
        Op::put("traefik/http/services/app/loadBalancer/servers/0/url", upstream.url()),
    ];
    store.txn(Txn { compares: vec![], ops }).await.unwrap();
}

/// Every request of a load run succeeded, and more than `at_least` went through; `context` is
/// appended to the failure message.
fn assert_none_failed(ok: usize, failures: &[String], at_least: usize, context: &str) {
    assert!(
        failures.is_empty(),
        "{} failures of {}: {:?}{context}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > at_least, "only {ok} requests went through");
}

/// Load from `clients` concurrent keep-alive clients against `url` until `stop`; returns
/// (successes, failures with their reasons).
fn load(url: String, clients: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (url, stop, ok) = (url.clone(), stop.clone(), ok.clone());
            tasks.push(tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
                let mut failures = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let req = http::Request::get(&url).header("host", "app.example").body(Empty::new()).unwrap();
                    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                        Ok(Ok(r)) if r.status() == 200 => match r.into_body().collect().await {
                            Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                failures.push(format!("body: {e}"));
                                0
                            }
                        },
                        Ok(Ok(r)) => {
                            failures.push(format!("status {}", r.status()));
                            0
                        }
                        Ok(Err(e)) => {
                            failures.push(format!("error: {e}"));
                            0
                        }
                        Err(_) => {
                            failures.push("timeout".into());
                            0
                        }
                    };
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for t in tasks {
            failures.extend(t.await.unwrap());
        }
        (ok.load(Ordering::SeqCst), failures)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn no_request_fails_while_the_store_is_down_and_changes_resume_after() {
    let mut etcd = Etcd::start().await;
    let store = store::open(&etcd.spec()).await.unwrap();
    let (app, next) = (Upstream::start("app").await, Upstream::start("next").await);
    let replica = Replica::start(&etcd.flags(), "[metrics.prometheus]\n").await;
    route(&store, &app).await;
    support::eventually("routed", Duration::from_secs(2), || async {
        get_host(&replica.web("/"), "app.example").await.status == 200
    })
    .await;
    // `pylon_store_up` follows the store's probe (every 5 s, 3 s to answer).
    let store_up = |wanted: f64| {
        let url = format!("http://127.0.0.1:{}/metrics", replica.admin);
        async move {
            let (_, metrics) = support::get(&url).await.unwrap();
            support::sum(&metrics, "pylon_store_up", &[]) == wanted
        }
    };
    support::eventually("pylon_store_up is 1", Duration::from_secs(12), || store_up(1.0)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = load(replica.web("/"), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd.kill();
    support::eventually("pylon_store_up is 0 while etcd is down", Duration::from_secs(12), || store_up(0.0)).await;
    etcd.restart().await;
    support::eventually("pylon_store_up is 1 again", Duration::from_secs(12), || store_up(1.0)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = running.await.unwrap();
    assert_none_failed(ok, &failures, 100, "");

    // The watcher re-listed: a change written after the restart is served.
    let store = store::open(&etcd.spec()).await.unwrap();
    store.put("traefik/http/services/app/loadBalancer/servers/0/url", next.url()).await.unwrap();
    support::eventually("change after the store came back", Duration::from_secs(5), || async {
        get_host(&replica.web("/"), "app.example").await.body.starts_with("next ")
    })
    .await;
}

/// HAProxy 2.6 in front of replicas, health-checking their `/ping`, retrying as the
/// documented set-up does.
fn haproxy(dir: &std::path::Path, port: u16, replicas: &[&Replica]) -> Process {
    support::require("haproxy");
    let mut config = format!(
        "global\n  maxconn 5000\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  \
         retries 3\n  option redispatch 1\n  retry-on all-retryable-errors\n  \
         default-server inter 300ms fall 2 rise 2\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  option httpchk GET /ping\n"
    );
    for (i, r) in replicas.iter().enumerate() {
        config.push_str(&format!("  server r{i} 127.0.0.1:{} check port {}\n", r.web, r.admin));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
        .spawn()
        .unwrap();
    Process { child, name: "haproxy".into() }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_behind_haproxy_loses_no_request() {
    let etcd = Etcd::start().await;
    let store = store::open(&etcd.spec()).await.unwrap();
    let app = Upstream::start("app").await;
    route(&store, &app).await;
    let lifecycle = "[lifeCycle]\nrequestAcceptGraceTimeout = \"1500ms\"\ngraceTimeOut = \"5s\"\n";
    let a = Replica::start(&etcd.flags(), lifecycle).await;
    let b = Replica::start(&etcd.flags(), lifecycle).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _haproxy = haproxy(dir.path(), port, &[&a, &b]);
    let url = format!("http://127.0.0.1:{port}/");
    support::eventually("HAProxy routes through both replicas", Duration::from_secs(5), || async {
        matches!(support::send("GET", &url, &[("host", "app.example")]).await, Ok(r) if r.status == 200)
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = load(url.clone(), 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    support::terminate(&a.child);
    let mut a = a;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "replica did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failures) = running.await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default();
    assert_none_failed(ok, &failures, 200, &format!("\nHAProxy:\n{log}"));
    eprintln!("{ok} requests through HAProxy, none failed, while a replica stopped");
}
