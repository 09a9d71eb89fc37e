//! The dashboard in a real browser: headless Chromium (driven over its DevTools protocol by
//! `support/browser.py`) opens `/ops/` on one of three replicas on real etcd, a router to
//! `api@internal` behind a stripPrefix, and follows its redirect to `/ops/dashboard/`. With one
//! certificate issued by Pebble and two stored near their end, it shows the routers, the three
//! replicas and each certificate's days left, coloured as Traefik's (none for a fresh one, a
//! warning under a third of the lifetime, an error under 7 days); its search box and status
//! filter narrow the routers; it logs no console error, asks no other host, and shows a router
//! added to the store while it is open, and 540 more, past the API's first page. The screenshot
//! it takes is `target/tmp/dashboard.png`.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use pylon::control::{
    acme::record::CertRecord,
    store::{self, Op, Txn},
};
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
const DAY: i64 = 86_400;

/// A stored certificate for `name`, self-signed, valid from `since` days ago for `left` more.
fn stored_certificate(name: &str, since: i64, left: i64) -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (not_before, not_after) = (now - since * DAY, now + left * DAY);
    let at = |unix: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix as u64);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    (params.not_before, params.not_after) = (at(not_before), at(not_after));
    let cert = params.self_signed(&key).unwrap();
    let record = CertRecord {
        main: name.into(),
        names: vec![name.into()],
        chain: cert.pem(),
        key: key.serialize_pem(),
        not_before,
        not_after,
        issuer: "Pylon test CA".into(),
        ca: "https://ca.invalid/directory".into(),
        on_demand: false,
    };
    record.encode()
}

/// The routers listed are exactly `names`.
fn routers_are(names: &[&str]) -> Value {
    let listed = "[...document.querySelectorAll('#routers tbody tr')].map(r => r.dataset.name).join(',')";
    json!({ "until": format!("{listed} === {}", json!(names.join(","))) })
}

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
        // The dashboard as operators publish it: under a prefix, through a router.
        ("http/routers/ops/rule".into(), "PathPrefix(`/ops`)".into()),
        ("http/routers/ops/service".into(), "api@internal".into()),
        ("http/routers/ops/middlewares/0".into(), "strip".into()),
        ("http/middlewares/strip/stripPrefix/prefixes/0".into(), "/ops".into()),
    ])
    .await
    .unwrap();
    // Two certificates stored near their end: 20 of 80 days left (a warning), 3 of 90 (an error).
    let ops = [("warn.example", 60, 20), ("soon.example", 87, 3)].map(|(name, since, left)| {
        Op::put(format!("traefik/acme/certs/{name}"), stored_certificate(name, since, left))
    });
    kv.txn(Txn { compares: vec![], ops: ops.into() }).await.unwrap();
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
    let routed = send("GET", &first.web("/ops/"), &[]).await.unwrap();
    assert_eq!(
        (routed.status, routed.headers["location"].to_str().unwrap()),
        (302, "/ops/dashboard/"),
        "through a router, a 302 under the stripped prefix (X-Forwarded-Prefix), as Traefik"
    );
    let (_, overview) = get(&format!("http://127.0.0.1:{}/api/overview", first.admin)).await.unwrap();
    let overview: Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(overview["certificates"], json!({ "total": 3, "warnings": 2, "errors": 0 }), "none has expired");

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/browser.py");
    let url = first.web("/ops/");
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
    assert_eq!(dom["location"], "/ops/dashboard/", "the browser followed the redirect under the prefix");
    assert_eq!(
        dom["cards"]["overview-certificates"], "CERTIFICATES 3 2 warnings 0 errors",
        "the overview counts the served certificates: {dom}"
    );
    // Pebble's certificates live for years: far from a third of their lifetime, no warning.
    assert_eq!(
        dom["levels"],
        json!({ NAME: "", "warn.example": "days-warning", "soon.example": "days-error" }),
        "each certificate's days left are coloured by how close its end is"
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

    // Traefik's search box and status filter: a disabled router (its middleware is missing).
    put(vec![
        ("http/routers/broken/rule".into(), "Host(`broken.example`)".into()),
        ("http/routers/broken/service".into(), "shop".into()),
        ("http/routers/broken/middlewares/0".into(), "missing".into()),
    ])
    .await
    .unwrap();
    let all = ["blog@etcd", "broken@etcd", "late@etcd", "ops@etcd", "shop@etcd"];
    for (command, routers) in [
        (None, &all[..]),
        (Some(json!({ "set": "status", "value": "disabled" })), &["broken@etcd"][..]),
        (Some(json!({ "set": "status", "value": "enabled" })), &["blog@etcd", "late@etcd", "ops@etcd", "shop@etcd"]),
        (Some(json!({ "set": "search", "value": "SHOP" })), &["shop@etcd"]),
        (Some(json!({ "set": "status", "value": "" })), &["shop@etcd"]),
        (Some(json!({ "set": "search", "value": "" })), &all),
    ] {
        if let Some(command) = command {
            writeln!(stdin, "{command}").unwrap();
            assert_eq!(tokio::task::block_in_place(&mut next)["event"], "set");
        }
        writeln!(stdin, "{}", routers_are(routers)).unwrap();
        let listed = tokio::task::block_in_place(&mut next);
        assert_eq!(listed["ok"], true, "{routers:?} listed: {listed}");
    }

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
    let origin = format!("http://127.0.0.1:{}/", first.web);
    let foreign: Vec<&Value> =
        done["requests"].as_array().unwrap().iter().filter(|u| !u.as_str().unwrap().starts_with(&origin)).collect();
    assert!(foreign.is_empty(), "the page asks no other host: {foreign:?}");
    assert!(done["requests"].as_array().unwrap().len() >= 7, "the page and its API calls were seen: {done}");
    let _ = browser.wait();
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "a screenshot was saved ({size} bytes)");
    drop(others);
}
