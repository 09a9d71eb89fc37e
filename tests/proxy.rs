//! Pylon as a reverse proxy, end to end: routes written to real etcd and real Consul in
//! Traefik's KV layout, a `pylon` replica serving them, real upstream servers, real clients.

mod support;

use std::time::{Duration, Instant};

use support::{
    fixture::{on_consul, on_etcd, router, servers, Fixture},
    get_host, send,
    upstream::Upstream,
};

/// Every matcher, `&&`, `||`, `!`, and the default priority (the longer rule wins).
async fn every_matcher_routes(f: Fixture) {
    let mut pairs = Vec::new();
    let cases: &[(&str, &str)] = &[
        ("host", "Host(`a.example`)"),
        ("hostregexp", "HostRegexp(`^[a-z]+\\.regexp\\.example$`)"),
        ("path", "Host(`m.example`) && Path(`/exact`)"),
        ("prefix", "Host(`m.example`) && PathPrefix(`/pre`)"),
        ("pathregexp", "Host(`m.example`) && PathRegexp(`^/re/[0-9]+$`)"),
        ("method", "Host(`m.example`) && Method(`DELETE`)"),
        ("header", "Host(`m.example`) && Header(`X-Canary`, `yes`)"),
        ("headerregexp", "Host(`m.example`) && HeaderRegexp(`X-Tier`, `^gold|silver$`)"),
        ("query", "Host(`m.example`) && Query(`debug`, `1`)"),
        ("queryregexp", "Host(`m.example`) && QueryRegexp(`id`, `^[0-9]+$`)"),
        ("clientip", "Host(`ip.example`) && ClientIP(`127.0.0.0/8`)"),
        ("notlocal", "Host(`ip2.example`) && !ClientIP(`127.0.0.1`)"),
        ("either", "Host(`b.example`) || Host(`c.example`)"),
        ("v2hosts", "Host(`v2a.example`, `v2b.example`)"),
    ];
    let mut upstreams = Vec::new();
    for (name, rule) in cases {
        upstreams.push(Upstream::start(name).await);
        pairs.extend(router(name, rule, name));
    }
    for (u, (name, _)) in upstreams.iter().zip(cases) {
        pairs.extend(servers(name, &[u]));
    }
    f.write(&pairs).await;
    f.within_a_second("a.example", "/", "first table", |r| r.body.starts_with("host ")).await;

    let expect = |reply: support::Reply, name: &str, what: &str| {
        assert!(reply.body.starts_with(&format!("{name} ")), "{what}: got {} {:?}", reply.status, reply.body);
    };
    let url = |p: &str| f.replica.web(p);
    expect(get_host(&url("/"), "A.Example:80").await, "host", "Host, case and port ignored");
    expect(get_host(&url("/"), "x.regexp.example").await, "hostregexp", "HostRegexp");
    expect(get_host(&url("/exact"), "m.example").await, "path", "Path");
    expect(get_host(&url("/prefix/x"), "m.example").await, "prefix", "PathPrefix");
    expect(get_host(&url("/re/42"), "m.example").await, "pathregexp", "PathRegexp");
    expect(send("DELETE", &url("/x"), &[("host", "m.example")]).await.unwrap(), "method", "Method");
    expect(send("GET", &url("/x"), &[("host", "m.example"), ("x-canary", "yes")]).await.unwrap(), "header", "Header");
    expect(
        send("GET", &url("/x"), &[("host", "m.example"), ("x-tier", "gold")]).await.unwrap(),
        "headerregexp",
        "HeaderRegexp",
    );
    expect(get_host(&url("/x?debug=1"), "m.example").await, "query", "Query");
    expect(get_host(&url("/x?id=7"), "m.example").await, "queryregexp", "QueryRegexp");
    expect(get_host(&url("/"), "ip.example").await, "clientip", "ClientIP");
    expect(get_host(&url("/"), "c.example").await, "either", "||");
    expect(get_host(&url("/"), "v2b.example").await, "v2hosts", "v2 multi-value Host");
    assert_eq!(get_host(&url("/"), "ip2.example").await.status, 404, "! excludes the client");
    assert_eq!(get_host(&url("/x?id=x7"), "m.example").await.status, 404, "QueryRegexp must not match");
    assert_eq!(get_host(&url("/"), "unknown.example").await.status, 404);
    let reply = get_host(&url("/prefix?debug=1"), "m.example").await;
    expect(reply, "query", "both PathPrefix (39 characters) and Query (41) match: the longer rule wins");
}

/// Routers added, changed and removed while the replica serves, each visible within a second;
/// an invalid key rejects its router alone.
async fn live_changes_and_rejections(f: Fixture) {
    let (one, two) = (Upstream::start("one").await, Upstream::start("two").await);
    let mut pairs = router("live", "Host(`live.example`)", "s1");
    pairs.extend(servers("s1", &[&one]));
    pairs.extend(servers("s2", &[&two]));
    pairs.extend(router("steady", "Host(`steady.example`)", "s2"));
    f.write(&pairs).await;
    f.within_a_second("live.example", "/", "router added", |r| r.body.starts_with("one ")).await;

    f.write(&[("http/routers/live/service", "s2".into())]).await;
    f.within_a_second("live.example", "/", "router changed", |r| r.body.starts_with("two ")).await;

    f.write(&[("http/routers/live/rule", "Host(`live.example`) && Bogus(`x`)".into())]).await;
    let start = Instant::now();
    while !f.replica.log().contains("traefik/http/routers/live/rule") {
        assert!(start.elapsed() < Duration::from_secs(2), "the rejection names its key:\n{}", f.replica.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = get_host(&f.replica.web("/"), "live.example").await;
    assert!(live.body.starts_with("two "), "an invalid rule keeps the router's last good version: {}", live.body);
    assert!(f.replica.log().contains("router \"live\": its keys are invalid; serving its last good version"));
    let steady = get_host(&f.replica.web("/"), "steady.example").await;
    assert!(steady.body.starts_with("two "), "the other router keeps working: {}", steady.body);

    f.write(&[("http/routers/live/rule", "Host(`live.example`)".into())]).await;
    f.within_a_second("live.example", "/", "router fixed", |r| r.body.starts_with("two ")).await;
    f.delete_prefix("http/routers/live/").await;
    f.within_a_second("live.example", "/", "router removed", |r| r.status == 404).await;
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod etcd {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name(super::on_etcd("").await).await }
            )*
        }
        mod consul {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() { super::$name(super::on_consul("").await).await }
            )*
        }
    };
}

/// `pylon storeconfig --dynamic FILE` bootstraps routes; a second file replaces the first
/// (its routers gone, the new ones served); a file with an invalid router writes nothing.
async fn storeconfig_dynamic_replaces_the_routes(f: Fixture) {
    let (one, two) = (Upstream::start("one").await, Upstream::start("two").await);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let first = file(
        "first.toml",
        format!(
            r#"
[http.routers.Old]
rule = "Host(`old.example`)"
service = "one"
[http.routers.Kept]
rule = "Host(`kept.example`)"
service = "one"
[http.services.one.loadBalancer]
servers = [{{ url = "{}" }}]
"#,
            one.url()
        ),
    );
    // The second file is YAML, as Traefik's file provider also reads it.
    let second = file(
        "second.yml",
        format!(
            r#"
http:
  routers:
    Kept:
      rule: Host(`kept.example`)
      service: two
    New:
      rule: "Host(`new.example`)"
      service: two
  services:
    two:
      loadBalancer:
        servers:
          - url: "{}"
"#,
            two.url()
        ),
    );
    let broken = file("broken.toml", "[http.routers.Bad]\nrule = \"Host(`x`\"\nservice = \"two\"\n".into());
    let storeconfig = |path: &str| {
        let mut args: Vec<&str> = vec!["storeconfig", "--dynamic", path];
        args.extend(f.flags.iter().map(String::as_str));
        support::pylon_output(&args, dir.path())
    };

    let (code, out, err) = storeconfig(&first);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote"), "{out}");
    f.within_a_second("old.example", "/", "first file served", |r| r.body.starts_with("one ")).await;
    let (code, out, err) = storeconfig(&second);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed"), "{out}");
    f.within_a_second("new.example", "/", "second file served", |r| r.body.starts_with("two ")).await;
    f.within_a_second("kept.example", "/", "changed router", |r| r.body.starts_with("two ")).await;
    assert_eq!(get_host(&f.replica.web("/"), "old.example").await.status, 404, "the first file's router is gone");
    let listed = f.store.list("traefik/http/services/").await.unwrap();
    assert!(listed.kvs.iter().all(|kv| !kv.key.contains("/one/")), "the first file's service keys are gone");

    let (code, _, err) = storeconfig(&broken);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("broken.toml:2:"), "the error names file and line: {err}");
    f.within_a_second("new.example", "/", "the broken file wrote nothing", |r| r.body.starts_with("two ")).await;
}

on_both_stores!(every_matcher_routes, live_changes_and_rejections, storeconfig_dynamic_replaces_the_routes);

#[tokio::test(flavor = "multi_thread")]
async fn explicit_priorities_win_over_rule_length() {
    let f = on_etcd("").await;
    let (low, high) = (Upstream::start("low").await, Upstream::start("high").await);
    let mut pairs = router("specific", "Host(`p.example`) && PathPrefix(`/api`)", "low");
    pairs.extend(router("catchall", "PathPrefix(`/`)", "high"));
    pairs.push(("http/routers/catchall/priority", "1000".into()));
    pairs.extend(servers("low", &[&low]));
    pairs.extend(servers("high", &[&high]));
    f.write(&pairs).await;
    f.within_a_second("p.example", "/api", "priority 1000 wins", |r| r.body.starts_with("high ")).await;
    f.write(&[("http/routers/catchall/priority", "1".into())]).await;
    f.within_a_second("p.example", "/api", "priority 1 loses", |r| r.body.starts_with("low ")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_split_traffic_and_sticky_cookies_pin_it() {
    let f = on_etcd("").await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let mut pairs = router("canary", "Host(`canary.example`)", "app");
    pairs.extend([
        ("http/services/app/weighted/services/0/name", "v1".to_string()),
        ("http/services/app/weighted/services/0/weight", "3".into()),
        ("http/services/app/weighted/services/1/name", "v2".into()),
        ("http/services/app/weighted/services/1/weight", "1".into()),
    ]);
    pairs.extend(servers("v1", &[&v1]));
    pairs.extend(servers("v2", &[&v2]));
    pairs.extend(router("sticky", "Host(`sticky.example`)", "pair"));
    pairs.extend(servers("pair", &[&v1, &v2]));
    pairs.push(("http/services/pair/loadBalancer/sticky/cookie/name", "pin".into()));
    f.write(&pairs).await;
    f.within_a_second("canary.example", "/", "canary routed", |r| r.status == 200).await;

    let (before1, before2) = (v1.hits(), v2.hits());
    for _ in 0..400 {
        assert_eq!(get_host(&f.replica.web("/"), "canary.example").await.status, 200);
    }
    assert_eq!((v1.hits() - before1, v2.hits() - before2), (300, 100), "3:1 weights over 400 requests");

    let first = get_host(&f.replica.web("/"), "sticky.example").await;
    let cookie = first.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("pin="), "{cookie}");
    let pinned = first.body.split(' ').next().unwrap().to_string();
    for _ in 0..20 {
        let reply = send("GET", &f.replica.web("/"), &[("host", "sticky.example"), ("cookie", &cookie)]).await.unwrap();
        assert!(reply.body.starts_with(&format!("{pinned} ")), "sticky to {pinned}: {}", reply.body);
        assert!(reply.headers.get("set-cookie").is_none(), "a pinned request sets no new cookie");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_health_check_evicts_a_server_until_it_recovers() {
    let f = on_etcd("").await;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let mut pairs = router("hc", "Host(`hc.example`)", "hc");
    pairs.extend(servers("hc", &[&a, &b]));
    pairs.push(("http/services/hc/loadBalancer/healthCheck/path", "/health".into()));
    pairs.push(("http/services/hc/loadBalancer/healthCheck/interval", "100ms".into()));
    pairs.push(("http/services/hc/loadBalancer/healthCheck/timeout", "1s".into()));
    f.write(&pairs).await;
    f.within_a_second("hc.example", "/", "routed", |r| r.status == 200).await;

    b.set_health(503);
    let evicted = |reply: &support::Reply| reply.body.starts_with("a ");
    support::eventually("b leaves rotation", Duration::from_secs(3), || async {
        let mut all_a = true;
        for _ in 0..4 {
            all_a &= evicted(&get_host(&f.replica.web("/"), "hc.example").await);
        }
        all_a
    })
    .await;
    b.set_health(200);
    support::eventually("b comes back", Duration::from_secs(3), || async {
        get_host(&f.replica.web("/"), "hc.example").await.body.starts_with("b ")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_map_to_404_502_503_and_504() {
    let f = on_etcd("[forwardingTimeouts]\nresponseHeaderTimeout = \"300ms\"\n").await;
    let slow = Upstream::start("slow").await;
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let mut pairs = router("refused", "Host(`refused.example`)", "refused");
    pairs.push(("http/services/refused/loadBalancer/servers/0/url", closed));
    pairs.extend(router("down", "Host(`down.example`)", "down"));
    pairs.extend(servers("down", &[&slow]));
    pairs.push(("http/services/down/loadBalancer/servers/0/weight", "0".into()));
    pairs.extend(router("slow", "Host(`slow.example`)", "slow"));
    pairs.extend(servers("slow", &[&slow]));
    f.write(&pairs).await;
    f.within_a_second("slow.example", "/", "routed", |r| r.status == 200).await;

    let status = |host: &'static str, path: &'static str| {
        let url = f.replica.web(path);
        async move { get_host(&url, host).await }
    };
    let r = status("nobody.example", "/").await;
    assert_eq!((r.status, r.body.as_str()), (404, "404 page not found\n"));
    let r = status("refused.example", "/").await;
    assert_eq!((r.status, r.body.as_str()), (502, "Bad Gateway\n"));
    let r = status("down.example", "/").await;
    assert_eq!((r.status, r.body.as_str()), (503, "Service Unavailable\n"));
    let r = status("slow.example", "/slow/2000").await;
    assert_eq!((r.status, r.body.as_str()), (504, "Gateway Timeout\n"));
    assert_eq!(status("slow.example", "/status/418").await.status, 418, "upstream statuses pass through");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_retried_on_another_server() {
    let f = on_etcd("").await;
    let alive = Upstream::start("alive").await;
    let mut pairs = router("retry", "Host(`retry.example`)", "retry");
    pairs
        .push(("http/services/retry/loadBalancer/servers/0/url", format!("http://127.0.0.1:{}", support::free_port())));
    pairs.push(("http/services/retry/loadBalancer/servers/1/url", alive.url()));
    f.write(&pairs).await;
    f.within_a_second("retry.example", "/", "routed", |r| r.status == 200).await;
    for _ in 0..20 {
        let reply = send("POST", &f.replica.web("/"), &[("host", "retry.example")]).await.unwrap();
        assert!(reply.body.starts_with("alive POST"), "{} {}", reply.status, reply.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_hop_by_hop_and_pass_host_header() {
    let f = on_etcd("").await;
    let echo = Upstream::start("echo").await;
    let mut pairs = router("kept", "Host(`kept.example`)", "kept");
    pairs.extend(servers("kept", &[&echo]));
    pairs.extend(router("own", "Host(`own.example`)", "own"));
    pairs.extend(servers("own", &[&echo]));
    pairs.push(("http/services/own/loadBalancer/passHostHeader", "false".into()));
    f.write(&pairs).await;
    f.within_a_second("kept.example", "/", "routed", |r| r.status == 200).await;

    let port = f.replica.web.to_string();
    let headers = [("host", "kept.example"), ("x-forwarded-for", "6.6.6.6"), ("connection", "x-drop"), ("x-drop", "1")];
    let body = send("GET", &f.replica.web("/q?a=b"), &headers).await.unwrap().body;
    assert!(body.starts_with("echo GET /q?a=b\n"), "{body}");
    for line in ["host: kept.example", "x-forwarded-for: 127.0.0.1", "x-forwarded-proto: http", "x-real-ip: 127.0.0.1"]
    {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in\n{body}");
    }
    assert!(body.contains(&format!("x-forwarded-port: {port}")), "{body}");
    assert!(body.contains("x-forwarded-host: kept.example"), "{body}");
    assert!(!body.contains("x-drop") && !body.contains("6.6.6.6"), "{body}");
    let body = get_host(&f.replica.web("/"), "own.example").await.body;
    assert!(body.contains(&format!("host: {}", echo.addr)), "passHostHeader=false sends the server's host:\n{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_consul_writes_outside_the_dynamic_keys_download_no_routes() {
    let consul = support::Consul::start().await;
    let endpoint = consul.endpoint.clone();
    let relay = support::relay::Relay::to(&endpoint).await;
    let store = pylon::control::store::open(&consul.spec()).await.unwrap();
    let flags = vec!["--consul".to_string(), format!("--consul.endpoint=127.0.0.1:{}", relay.port)];
    let replica = support::replica::Replica::start(&flags, "").await;
    let f = Fixture { store, replica, flags, server: Box::new(consul) };
    let app = Upstream::start("app").await;
    let mut pairs = servers("app", &[&app]);
    for i in 0..300 {
        pairs.extend(router(&format!("r{i}"), &format!("Host(`h{i}.example`)"), "app"));
    }
    f.write(&pairs).await;
    support::eventually("300 routers served", Duration::from_secs(10), || async {
        get_host(&f.replica.web("/"), "h299.example").await.status == 200
    })
    .await;
    // What one download of the routes weighs: Consul's answer for the `http/` tree.
    let url = format!("http://{endpoint}/v1/kv/traefik/h?recurse");
    let one_download = support::get(&url).await.unwrap().1.len() as u64;
    assert!(one_download > 50_000, "a sizeable table: {one_download} bytes");

    // ACME-like writes (locks, tokens) under the prefix: the route watcher does not wake for
    // them. Then one router is added, which is one download, and awaited.
    let before = relay.received();
    for i in 0..40 {
        f.store.put(&format!("traefik/acme/tokens/t{i}"), "x").await.unwrap();
    }
    f.write(&router("late", "Host(`late.example`)", "app")).await;
    f.within_a_second("late.example", "/", "the late router", |r| r.status == 200).await;
    let during = relay.received() - before;
    assert!(
        during < 3 * one_download,
        "40 writes elsewhere and one router: {during} bytes downloaded, one download is {one_download}"
    );
}
