//! Configuration an attacker or a careless operator writes to the store: values that nest past
//! any real rule, keys of 100,000 segments, megabyte regexes, bytes that are not text, routers
//! that name middlewares Pylon cannot run, typos in a live service. Every replica keeps serving,
//! says which key is wrong (once, and briefly), and never routes around a middleware.

mod support;

use std::time::Duration;

use pylon::control::store::{Op, Txn};
use support::{
    eventually,
    fixture::{on_etcd, router, servers, Fixture},
    get_host, pylon_output,
    replica::Replica,
    upstream::Upstream,
};

/// Puts raw bytes (which `Fixture::write` cannot: it writes text) under `traefik/`.
async fn put_bytes(f: &Fixture, key: &str, value: &[u8]) {
    let ops = vec![Op::put(format!("traefik/{key}"), value)];
    f.store.txn(Txn { compares: vec![], ops }).await.unwrap();
}

async fn log_says(replica: &Replica, what: &str) {
    eventually(&format!("the log says {what:?}"), Duration::from_secs(5), || async { replica.log().contains(what) })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_keys_and_values_never_take_a_replica_down() {
    let f = on_etcd("").await;
    let _app = f.serve_app("Host(`good.example`)", "good.example", "/").await;

    let parens = format!("{}Host(`x`){}", "(".repeat(10_000), ")".repeat(10_000));
    let nots = format!("{}Host(`x`)", "!".repeat(30_000));
    let huge_regex = format!("HostRegexp(`{}`)", "a".repeat((1 << 20) - 100));
    let mut poison = router("parens", &parens, "app");
    poison.extend(router("nots", &nots, "app"));
    poison.extend(router("huge", &huge_regex, "app"));
    f.write(&poison).await;
    let long_key = format!("http/routers/long/{}", vec!["a"; 100_000].join("/"));
    put_bytes(&f, &long_key, b"x").await;
    put_bytes(&f, "http/routers/binary/rule", b"Host(`\xff\xfe`)").await;
    put_bytes(&f, "http/routers//rule", b"Host(`empty.example`)").await;
    put_bytes(&f, "http/routers", b"oops").await;

    // A change written after the poison is still applied: the replica is alive and watching.
    f.write(&router("after", "Host(`after.example`)", "app")).await;
    f.within_a_second("after.example", "/", "a router written after the poison", |r| r.status == 200).await;
    assert_eq!(get_host(&f.replica.web("/"), "good.example").await.status, 200);
    let log = f.replica.log();
    assert!(!log.contains("overflow"), "{log}");
    for (key, why) in [
        ("traefik/http/routers/parens/rule", "nests deeper than 64 levels"),
        ("traefik/http/routers/nots/rule", "nests deeper than 64 levels"),
        ("traefik/http/routers/huge/rule", "the limit is 65536"),
        ("traefik/http/routers/long/a/a/a", "segments, more than 32"),
        ("traefik/http/routers/binary/rule", "the value is not valid UTF-8"),
        ("traefik/http/routers//rule", "empty segment"),
        ("traefik/http/routers:", "a value on routers itself"),
    ] {
        assert!(log.lines().any(|l| l.contains(key) && l.contains(why)), "no line names {key} with {why:?}:\n{log}");
    }
    assert!(log.len() < 64 * 1024, "rejecting a 1 MiB value wrote {} bytes of log", log.len());

    // Later rebuilds do not repeat what was already said.
    let said = |log: &str| (log.matches("a value on routers itself").count(), log.matches("routers/nots/").count());
    let before = said(&log);
    assert_eq!(before.0, 1, "{log}");
    f.write(&router("later", "Host(`later.example`)", "app")).await;
    f.within_a_second("later.example", "/", "another rebuild", |r| r.status == 200).await;
    let log = f.replica.log();
    assert_eq!(said(&log), before, "{log}");

    // A replica started with all of it stored starts, and serves the good routers.
    let fresh = Replica::start(&f.flags, "").await;
    for host in ["good.example", "after.example", "later.example"] {
        assert_eq!(get_host(&fresh.web("/"), host).await.status, 200, "{host}\n{}", fresh.log());
    }
    assert_eq!(get_host(&fresh.web("/"), "empty.example").await.status, 404, "no router named \"\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn storeconfig_refuses_a_file_whose_rule_nests_too_deep() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dynamic.toml");
    let rule = format!("{}Host(`x`){}", "(".repeat(10_000), ")".repeat(10_000));
    let text = format!(
        "[http.routers.deep]\nrule = \"{rule}\"\nservice = \"app\"\n\
         [[http.services.app.loadBalancer.servers]]\nurl = \"http://127.0.0.1:1\"\n"
    );
    std::fs::write(&file, text).unwrap();
    let data = format!("--datadir={}", dir.path().join("data").display());
    let (code, out, err) = pylon_output(&["storeconfig", "--dynamic", file.to_str().unwrap(), &data], dir.path());
    assert_ne!(code, 0, "{out}{err}");
    assert!(!err.contains("overflow"), "{err}");
    assert!(err.contains("dynamic.toml:2:") && err.contains("nests deeper"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_whose_middleware_cannot_run_is_disabled_and_its_neighbours_serve() {
    let f = on_etcd("").await;
    let app = Upstream::start("app").await;
    let mut pairs = router("guarded", "Host(`guarded.example`)", "app");
    pairs.push(("http/routers/guarded/middlewares/0", "auth".into()));
    pairs.push(("http/middlewares/auth/plugin/demo/level", "2".into()));
    pairs.extend(router("typo", "Host(`typo.example`)", "app"));
    pairs.push(("http/routers/typo/middlewares/0", "missing".into()));
    pairs.extend(router("open", "Host(`open.example`)", "app"));
    pairs.extend(servers("app", &[&app]));
    f.write(&pairs).await;
    f.within_a_second("open.example", "/", "the neighbour", |r| r.status == 200).await;
    assert_eq!(get_host(&f.replica.web("/"), "guarded.example").await.status, 404, "never served without its limit");
    assert_eq!(get_host(&f.replica.web("/"), "typo.example").await.status, 404);
    let log = f.replica.log();
    let line = log.lines().find(|l| l.contains("router \"guarded\" disabled")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("KV key traefik/http/routers/guarded/middlewares/0"), "{line}");
    assert!(line.contains("\"auth\" (KV key traefik/http/middlewares/auth"), "{line}");
    assert!(line.contains("is a plugin, which Pylon does not implement yet"), "{line}");
    assert!(log.contains("its middleware \"missing\" does not exist"), "{log}");
    assert_eq!(app.hits(), 1, "only the neighbour's request reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_typo_in_a_live_service_keeps_its_last_good_version() {
    let f = on_etcd("").await;
    let _app = f.serve_app("Host(`app.example`)", "app.example", "/").await;

    f.write(&[("http/services/app/loadBalancer/servers/0/weight", "abc".into())]).await;
    log_says(&f.replica, "serving its last good version").await;
    assert_eq!(get_host(&f.replica.web("/"), "app.example").await.status, 200, "{}", f.replica.log());
    let log = f.replica.log();
    assert!(log.contains("traefik/http/services/app/loadBalancer/servers/0/weight"), "the key is named:\n{log}");

    // A replica that never saw a good version keeps the service out.
    let fresh = Replica::start(&f.flags, "").await;
    log_says(&fresh, "servers/0/weight").await;
    assert_eq!(get_host(&fresh.web("/"), "app.example").await.status, 404);

    // Fixing the key serves it everywhere.
    f.write(&[("http/services/app/loadBalancer/servers/0/weight", "2".into())]).await;
    eventually("the fresh replica serves the fixed service", Duration::from_secs(2), || async {
        get_host(&fresh.web("/"), "app.example").await.status == 200
    })
    .await;
    assert_eq!(get_host(&f.replica.web("/"), "app.example").await.status, 200);
}
