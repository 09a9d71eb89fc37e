//! The dashboard in a real browser: headless Chromium (driven over its DevTools protocol by
//! `support/browser.py`) loads `/dashboard/` from one of three replicas on real etcd, one
//! certificate issued by Pebble; it shows the routers, the three replicas and the certificate's
//! days left (no warning for a fresh one), logs no console error, asks no other host, and shows
//! a router added to the store while it is open, and 540 more, past the API's first page. The
//! screenshot it takes is `target/tmp/dashboard.png`.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use pylon::control::store::{self, Op, Txn};
use serde_json::{json, Value};
use support::{
    eventually, free_port, get,
    pebble::{Options, Pebble},
    replica::Replica,
    require, send,
    upstream::Upstream,
    Etcd,
};

const NAME: &str = "dash.pylon.test";
const MANY: usize = 540;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_in_chromium_and_follows_the_store() {
    require("chromium");
    let websocket = Command::new("/usr/bin/python3").args(["-c", "import websocket"]).status();
    assert!(
        websocket.is_ok_and(|s| s.success()),
        "Debian's python3-websocket is missing: run scripts/install-deps.sh (as root)"
    );
    let etcd = Etcd::start().await;
    let web = free_port();
    let pebble = Pebble::start(Options { http_port: web, ..Options::default() }).await;
    let extra =
        format!("[api]\ninsecure = true\n{}", pebble.acme_section(&format!("[[acme.domains]]\nmain = \"{NAME}\"")));
    let first = Replica::start_with_web(&etcd.flags(), &extra, web).await;
    let others = [Replica::start(&etcd.flags(), &extra).await, Replica::start(&etcd.flags(), &extra).await];
    let kv = store::open(&etcd.spec()).await.unwrap();
    let up = Upstream::start("shop").await;
    let put = |pairs: Vec<(String, String)>| {
        let ops = pairs.into_iter().map(|(k, v)| Op::put(format!("traefik/{k}"), v.into_bytes())).collect();
        kv.txn(Txn { compares: vec![], ops })
    };
    put(vec![
        ("http/routers/shop/rule".into(), "Host(`shop.example`)".into()),
        ("http/routers/shop/service".into(), "shop".into()),
        ("http/routers/blog/rule".into(), "Host(`blog.example`)".into()),
        ("http/routers/blog/service".into(), "shop".into()),
        ("http/services/shop/loadBalancer/servers/0/url".into(), up.url()),
    ])
    .await
    .unwrap();
    let cluster = format!("http://127.0.0.1:{}/api/pylon/cluster", first.admin);
    eventually("three replicas and an issued certificate", Duration::from_secs(60), || async {
        let Ok((200, body)) = get(&cluster).await else { return false };
        let view: Value = serde_json::from_str(&body).unwrap_or_default();
        view["replicas"].as_array().is_some_and(|r| r.len() == 3)
            && view["certificates"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["main"] == NAME && c["daysLeft"].is_number()))
    })
    .await;
    let root = send("GET", &format!("http://127.0.0.1:{}/", first.admin), &[]).await.unwrap();
    assert_eq!((root.status, root.headers["location"].to_str().unwrap()), (301, "/dashboard/"));

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/browser.py");
    let url = format!("http://127.0.0.1:{}/dashboard/", first.admin);
    let mut browser = Command::new("/usr/bin/python3")
        .args([script, "/usr/bin/chromium", &url, screenshot.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tests/support/browser.py (needs Debian's python3-websocket)");
    let mut stdin = browser.stdin.take().unwrap();
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let mut next = move || -> Value {
        let line = lines.next().expect("the browser script answers").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let loaded = tokio::task::block_in_place(&mut next);
    assert_eq!(loaded["event"], "loaded", "{loaded}");
    let dom = &loaded["dom"];
    for router in ["shop@etcd", "blog@etcd"] {
        assert!(dom["routers"].as_array().unwrap().iter().any(|r| r == router), "the page lists {router}: {dom}");
    }
    assert_eq!(dom["replicas"].as_array().unwrap().len(), 3, "the page shows three replicas: {dom}");
    let days: Vec<i64> = dom["days"].as_array().unwrap().iter().filter_map(|d| d.as_str()?.parse().ok()).collect();
    assert!(days.iter().any(|d| *d > 0), "the certificate's days left are shown: {dom}");
    // Pebble's certificates live for years: far from a third of their lifetime, no warning.
    let levels: Vec<&str> = dom["dayLevels"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(
        !levels.is_empty() && levels.iter().all(|c| c.split(' ').all(|c| c == "days-left" || c.is_empty())),
        "{levels:?}"
    );

    put(vec![
        ("http/routers/late/rule".into(), "Host(`late.example`)".into()),
        ("http/routers/late/service".into(), "shop".into()),
    ])
    .await
    .unwrap();
    writeln!(stdin, "{}", json!({ "expect": "late@etcd" })).unwrap();
    let shown = tokio::task::block_in_place(&mut next);
    assert_eq!(shown["ok"], true, "the page shows a router added to the store while it is open: {shown}");
    writeln!(stdin, "{}", json!({ "shot": true })).unwrap();
    assert_eq!(tokio::task::block_in_place(&mut next)["event"], "shot");

    // More routers than one page of the API holds (500 a page): the page reads every page.
    for chunk in (0..MANY).collect::<Vec<_>>().chunks(60) {
        let pairs = chunk.iter().flat_map(|i| {
            [
                (format!("http/routers/bulk{i:03}/rule"), format!("Host(`bulk{i:03}.example`)")),
                (format!("http/routers/bulk{i:03}/service"), "shop".to_string()),
            ]
        });
        put(pairs.collect()).await.unwrap();
    }
    let last = format!("bulk{:03}@etcd", MANY - 1);
    writeln!(stdin, "{}", json!({ "expect": last })).unwrap();
    let shown = tokio::task::block_in_place(&mut next);
    let routers: Vec<&str> = shown["routers"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let bulk = routers.iter().filter(|r| r.starts_with("bulk")).count();
    assert_eq!((shown["ok"].as_bool(), bulk), (Some(true), MANY), "the page follows X-Next-Page to the end");
    assert!(routers.contains(&"shop@etcd"), "the routers after the first page are shown too");

    writeln!(stdin, "{}", json!({ "finish": true })).unwrap();
    let done = tokio::task::block_in_place(&mut next);
    assert_eq!(done["errors"], json!([]), "no console error, exception or failed load");
    let origin = format!("http://127.0.0.1:{}/", first.admin);
    let foreign: Vec<&Value> =
        done["requests"].as_array().unwrap().iter().filter(|u| !u.as_str().unwrap().starts_with(&origin)).collect();
    assert!(foreign.is_empty(), "the page asks no other host: {foreign:?}");
    assert!(done["requests"].as_array().unwrap().len() >= 7, "the page and its API calls were seen: {done}");
    let _ = browser.wait();
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "a screenshot was saved ({size} bytes)");
    drop(others);
}
