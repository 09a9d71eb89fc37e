//! Middlewares as a Traefik user configures them, in real etcd (one suite on Consul), through a
//! real replica to an echo upstream: what the client gets, what the upstream received, the
//! order they run in, routers disabled while a middleware is missing, and live changes.

mod support;

use support::{
    fixture::{leak, on_consul, on_etcd, request, routed, router, servers},
    send,
    upstream::Upstream,
};

/// `test:test` in apr1, `U*U` in bcrypt (cost 5), `secret` in `{SHA}`.
const APR1_TEST: &str = "test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/";
const BCRYPT_UU: &str = "bob:$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
const SHA_SECRET: &str = "sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_keeps_out_everyone_without_a_valid_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    std::fs::write(&file, format!("# the team\n\n{BCRYPT_UU}\n")).unwrap();
    let f = on_etcd("").await;
    let defs = [
        ("auth/basicAuth/users/0", APR1_TEST),
        ("auth/basicAuth/users/1", SHA_SECRET),
        ("auth/basicAuth/usersFile", file.to_str().unwrap()),
        ("auth/basicAuth/removeHeader", "true"),
        ("auth/basicAuth/headerField", "X-WebAuth-User"),
    ];
    let app = routed(&f, "auth.example", &["auth"], &defs).await;

    for (why, headers) in [
        ("no credentials", vec![]),
        ("a wrong password", vec![("authorization", basic("test", "nope"))]),
        ("an unknown user", vec![("authorization", basic("eve", "test"))]),
        ("not Basic", vec![("authorization", "Bearer abc".to_string())]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = request(&f, "GET", "auth.example", "/", &headers).await;
        assert_eq!(r.status, 401, "{why}");
        assert_eq!(r.headers["www-authenticate"], "Basic realm=\"traefik\"", "{why}");
        assert_eq!(r.body, "401 Unauthorized\n", "{why}");
    }
    assert_eq!(app.hits(), 0, "a refused request reached the upstream");

    for (user, password) in [("test", "test"), ("bob", "U*U"), ("sha", "secret")] {
        let auth = basic(user, password);
        let r = request(&f, "GET", "auth.example", "/in", &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{user}: {}", r.body);
        assert!(!r.body.contains("authorization:"), "removeHeader: {}", r.body);
        assert!(r.body.contains(&format!("x-webauth-user: {user}")), "{}", r.body);
    }
    assert!(!f.replica.log().contains("$apr1$"), "a password hash was logged");
}

/// `test:traefik:test` as `htdigest` writes it.
const DIGEST_TEST: &str = "test:traefik:a2688e031edb4be6a3797f3882655c05";

/// curl's answer to a Digest challenge: status and body.
fn curl_digest(port: u16, host: &str, path: &str, user: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--digest", "-u", user, "-H", &format!("Host: {host}"), "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_auth_lets_curl_in_with_the_password_and_any_replica_honours_the_nonce() {
    let f = on_etcd("").await;
    let defs = [
        ("digest/digestAuth/users/0", DIGEST_TEST),
        ("digest/digestAuth/headerField", "X-WebAuth-User"),
        ("digest/digestAuth/removeHeader", "true"),
    ];
    let app = routed(&f, "digest.example", &["digest"], &defs).await;
    let r = request(&f, "GET", "digest.example", "/", &[]).await;
    assert_eq!(r.status, 401);
    let challenge = r.headers["www-authenticate"].to_str().unwrap().to_string();
    assert!(challenge.starts_with("Digest realm=\"traefik\", nonce=\""), "{challenge}");
    assert!(challenge.ends_with(", algorithm=\"MD5\", qop=\"auth\""), "{challenge}");

    let port = f.replica.web;
    let (status, _) = curl_digest(port, "digest.example", "/in", "test:wrong");
    assert_eq!(status, "401", "a wrong password");
    assert_eq!(app.hits(), 0, "a refused request reached the upstream");
    let (status, body) = curl_digest(port, "digest.example", "/in?q=1", "test:test");
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("x-webauth-user: test") && !body.contains("authorization:"), "{body}");

    // A nonce from this replica, answered to another one, as behind a load balancer.
    let other = support::replica::Replica::start(&f.flags, "").await;
    let value = |name: &str| {
        let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        challenge[start..].split('"').next().unwrap().to_string()
    };
    let (nonce, opaque) = (value("nonce"), value("opaque"));
    use md5::Digest;
    let hex = |text: String| md5::Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let ha2 = hex("GET:/x".to_string());
    let response = hex(format!("a2688e031edb4be6a3797f3882655c05:{nonce}:00000001:abc:auth:{ha2}"));
    let answer = format!(
        r#"Digest username="test", realm="traefik", nonce="{nonce}", uri="/x", qop=auth, nc=00000001, cnonce="abc", response="{response}", opaque="{opaque}""#
    );
    let url = other.web("/x");
    let mut last = 0;
    for _ in 0..100 {
        last =
            support::send("GET", &url, &[("host", "digest.example"), ("authorization", &answer)]).await.unwrap().status;
        if last != 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last, 200, "the other replica refused the nonce:\n{}", other.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn middlewares_run_in_list_order_the_first_outermost() {
    let f = on_etcd("").await;
    let defs = [
        ("strip/stripPrefix/prefixes/0", "/api"),
        ("add/addPrefix/prefix", "/v2"),
        ("both/chain/middlewares/0", "strip@etcd"),
        ("both/chain/middlewares/1", "add"),
        ("tag/headers/customResponseHeaders/X-Outer", "tag"),
    ];
    let _strip_first = routed(&f, "one.example", &["tag", "strip", "add"], &defs).await;
    let _add_first = routed(&f, "two.example", &["add", "strip"], &[]).await;
    let _chained = routed(&f, "three.example", &["both@etcd"], &[]).await;

    let r = request(&f, "GET", "one.example", "/api/users?page=2", &[]).await;
    assert!(r.body.starts_with("app GET /v2/users?page=2\n"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-prefix: /api"), "{}", r.body);
    assert_eq!(r.headers["x-outer"], "tag");
    let r = request(&f, "GET", "two.example", "/api/users", &[]).await;
    assert!(r.body.starts_with("app GET /v2/api/users\n"), "addPrefix first: {}", r.body);
    let r = request(&f, "GET", "three.example", "/api/users", &[]).await;
    assert!(r.body.starts_with("app GET /v2/users\n"), "a chain expands in place: {}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn path_rewrites_tell_the_upstream_what_they_did_and_refuse_unclean_results() {
    let f = on_etcd("").await;
    let defs = [
        ("strip/stripPrefixRegex/regex/0", "/tenant/[a-z]+"),
        ("swap/replacePathRegex/regex", "^/old/(.*)"),
        ("swap/replacePathRegex/replacement", "/new/$1"),
        ("fixed/replacePath/path", "/replaced"),
    ];
    let _app = routed(&f, "paths.example", &["strip", "swap"], &defs).await;
    let _fixed = routed(&f, "fixed.example", &["fixed"], &[]).await;

    let r = request(&f, "GET", "paths.example", "/tenant/acme/old/report?x=1", &[]).await;
    assert!(r.body.starts_with("app GET /new/report?x=1\n"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-prefix: /tenant/acme"), "{}", r.body);
    assert!(r.body.contains("x-replaced-path: /old/report"), "{}", r.body);
    let r = request(&f, "GET", "paths.example", "/tenant/acme./etc", &[]).await;
    assert_eq!(r.status, 400, "a path stripped to /./etc: {}", r.body);
    let r = request(&f, "GET", "fixed.example", "/anything/at/all", &[]).await;
    assert!(r.body.starts_with("app GET /replaced\n"), "{}", r.body);
    assert!(r.body.contains("x-replaced-path: /anything/at/all"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_allow_lists_judge_the_peer_or_a_trusted_forwarded_entry() {
    let trusted = "[entryPoints.web.forwardedHeaders]\ntrustedIPs = [\"127.0.0.1/32\"]\n";
    let f = on_etcd(trusted).await;
    let defs = [
        ("local/ipAllowList/sourceRange/0", "127.0.0.0/8"),
        ("office/ipAllowList/sourceRange/0", "10.0.0.0/8"),
        ("office/ipAllowList/rejectStatusCode", "410"),
        ("proxied/ipAllowList/sourceRange/0", "10.0.0.0/8"),
        ("proxied/ipAllowList/ipStrategy/depth", "1"),
        ("old/ipWhiteList/sourceRange/0", "192.0.2.0/24"),
    ];
    let _local = routed(&f, "local.example", &["local"], &defs).await;
    let office = routed(&f, "office.example", &["office"], &[]).await;
    let _proxied = routed(&f, "proxied.example", &["proxied"], &[]).await;
    let _old = routed(&f, "old.example", &["old"], &[]).await;

    assert_eq!(request(&f, "GET", "local.example", "/", &[]).await.status, 200);
    let r = request(&f, "GET", "office.example", "/", &[("x-forwarded-for", "10.1.1.1")]).await;
    assert_eq!((r.status, r.body.as_str()), (410, "Gone"), "no strategy: the peer is judged, not XFF");
    assert_eq!(office.hits(), 0);
    let r = request(&f, "GET", "proxied.example", "/", &[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]).await;
    assert_eq!(r.status, 200, "depth 1 is the right-most entry: {}", r.body);
    let r = request(&f, "GET", "proxied.example", "/", &[("x-forwarded-for", "10.1.1.1, 203.0.113.9")]).await;
    assert_eq!(r.status, 403);
    assert_eq!(request(&f, "GET", "proxied.example", "/", &[]).await.status, 403, "no XFF: no IP at depth 1");
    let r = request(&f, "GET", "old.example", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "Forbidden"));
    assert!(f.replica.log().contains("ipWhiteList is deprecated"), "{}", f.replica.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_answer_with_traefiks_statuses() {
    let f = on_etcd("").await;
    let defs = [
        ("tls/redirectScheme/scheme", "https"),
        ("tls/redirectScheme/permanent", "true"),
        ("moved/redirectRegex/regex", "^http://old.example/(.*)"),
        ("moved/redirectRegex/replacement", "http://new.example/${1}"),
    ];
    let app = routed(&f, "secure.example", &["tls"], &defs).await;
    let _old = routed(&f, "old.example", &["moved"], &[]).await;

    let r = request(&f, "GET", "secure.example:8080", "/a?b=c", &[]).await;
    assert_eq!((r.status, r.headers["location"].to_str().unwrap()), (301, "https://secure.example/a?b=c"));
    assert_eq!(r.body, "Moved Permanently");
    assert_eq!(request(&f, "POST", "secure.example", "/", &[]).await.status, 308);
    let r = request(&f, "GET", "secure.example", "/", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 301, "an untrusted client's X-Forwarded-Proto is not believed");
    assert_eq!(app.hits(), 0);
    let r = request(&f, "HEAD", "old.example", "/page", &[]).await;
    assert_eq!((r.status, r.headers["location"].to_str().unwrap()), (307, "http://new.example/page"));
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_add_cors_and_security_headers_and_answer_preflights() {
    let f = on_etcd("").await;
    let defs = [
        ("h/headers/customRequestHeaders/X-Script-Name", "app"),
        ("h/headers/customRequestHeaders/X-Drop", ""),
        ("h/headers/customResponseHeaders/X-Served-By", "pylon"),
        ("h/headers/accessControlAllowMethods", "GET,PUT"),
        ("h/headers/accessControlAllowOriginList/0", "https://ui.example"),
        ("h/headers/addVaryHeader", "true"),
        ("h/headers/frameDeny", "true"),
        ("h/headers/stsSeconds", "300"),
        ("h/headers/forceSTSHeader", "true"),
        ("h/headers/allowedHosts/0", "cors.example"),
    ];
    let app = routed(&f, "cors.example", &["h"], &defs).await;
    let before = app.hits();

    let preflight = [("origin", "https://ui.example"), ("access-control-request-method", "PUT")];
    let r = request(&f, "OPTIONS", "cors.example", "/x", &preflight).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-methods"], "GET,PUT");
    assert_eq!(r.headers["access-control-allow-origin"], "https://ui.example");
    assert_eq!(app.hits(), before, "the preflight was forwarded");

    let r = request(&f, "GET", "cors.example", "/x", &[("origin", "https://ui.example"), ("x-drop", "1")]).await;
    assert!(r.body.contains("x-script-name: app") && !r.body.contains("x-drop"), "{}", r.body);
    assert_eq!(r.headers["x-served-by"], "pylon");
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert_eq!(r.headers["strict-transport-security"], "max-age=300");
    assert_eq!(r.headers["access-control-allow-origin"], "https://ui.example");
    assert_eq!(r.headers["vary"], "Origin");

    f.write(&[(leak("http/routers/cors/rule".into()), "HostRegexp(`.+`)".into())]).await;
    f.within_a_second("evil.example", "/", "a host outside allowedHosts", |r| r.status == 500).await;
    let r = request(&f, "GET", "evil.example", "/", &[]).await;
    assert_eq!(r.body, "Bad Host\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_waits_for_its_middleware_and_follows_its_changes_live() {
    let f = on_etcd("").await;
    let app = Upstream::start("app").await;
    let mut pairs = router("guarded", "Host(`guarded.example`)", "app");
    pairs.push(("http/routers/guarded/middlewares/0", "auth".into()));
    pairs.extend(router("open", "Host(`open.example`)", "app"));
    pairs.extend(servers("app", &[&app]));
    f.write(&pairs).await;
    f.within_a_second("open.example", "/", "the neighbour", |r| r.status == 200).await;
    let r = request(&f, "GET", "guarded.example", "/", &[]).await;
    assert_eq!(r.status, 404, "disabled while its middleware is missing");
    assert!(f.replica.log().contains("its middleware \"auth\" does not exist"));

    f.write(&[("http/middlewares/auth/basicAuth/users/0", APR1_TEST.into())]).await;
    f.within_a_second("guarded.example", "/", "the router with its middleware", |r| r.status == 401).await;
    let test = basic("test", "test");
    assert_eq!(request(&f, "GET", "guarded.example", "/", &[("authorization", &test)]).await.status, 200);

    f.write(&[("http/middlewares/auth/basicAuth/users/0", SHA_SECRET.into())]).await;
    let start = std::time::Instant::now();
    while request(&f, "GET", "guarded.example", "/", &[("authorization", &test)]).await.status != 401 {
        assert!(start.elapsed() < std::time::Duration::from_secs(1), "a removed user still passes (cached?)");
    }
    let sha = basic("sha", "secret");
    assert_eq!(request(&f, "GET", "guarded.example", "/", &[("authorization", &sha)]).await.status, 200);

    f.write(&[("http/middlewares/auth/basicAuth/users/0", "broken".into())]).await;
    support::eventually("the invalid change reported", std::time::Duration::from_secs(5), || async {
        f.replica.log().contains("serving its last good version")
    })
    .await;
    assert_eq!(request(&f, "GET", "guarded.example", "/", &[("authorization", &sha)]).await.status, 200);
    assert_eq!(request(&f, "GET", "guarded.example", "/", &[]).await.status, 401, "still enforced");
}

#[tokio::test(flavor = "multi_thread")]
async fn entrypoint_middlewares_run_before_the_routers_own() {
    let extra = "[entryPoints.web.http]\nmiddlewares = [\"edge@etcd\"]\n";
    let f = on_etcd(extra).await;
    let defs = [
        ("edge/headers/customRequestHeaders/X-Edge", "1"),
        ("edge/headers/customResponseHeaders/X-Layer", "edge"),
        ("own/headers/customResponseHeaders/X-Layer", "own"),
    ];
    let _app = routed(&f, "ep.example", &["own"], &defs).await;
    let r = request(&f, "GET", "ep.example", "/", &[]).await;
    assert!(r.body.contains("x-edge: 1"), "{}", r.body);
    assert_eq!(r.headers["x-layer"], "edge", "the entrypoint's is outermost: its response header is set last");

    f.delete_prefix("http/middlewares/edge/").await;
    f.within_a_second("ep.example", "/", "routers on the entrypoint disabled", |r| r.status == 404).await;
    assert!(f.replica.log().contains("disabled on entrypoint \"web\""), "{}", f.replica.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn middlewares_work_the_same_from_consul() {
    let f = on_consul("").await;
    let defs = [("auth/basicAuth/users/0", APR1_TEST), ("strip/stripPrefix/prefixes", "/api")];
    let app = routed(&f, "consul.example", &["auth", "strip"], &defs).await;
    assert_eq!(request(&f, "GET", "consul.example", "/api/x", &[]).await.status, 401);
    assert_eq!(app.hits(), 0);
    let test = basic("test", "test");
    let r = request(&f, "GET", "consul.example", "/api/x", &[("authorization", &test)]).await;
    assert!(r.body.starts_with("app GET /x\n"), "{}", r.body);
}

#[test]
fn storeconfig_writes_a_files_middlewares_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dynamic.toml");
    let good = format!(
        "[http.routers.r]\nrule = \"Host(`a.example`)\"\nservice = \"s\"\nmiddlewares = [\"auth\"]\n\
         [http.services.s.loadBalancer]\nservers = [{{ url = \"http://127.0.0.1:9\" }}]\n\
         [http.middlewares.auth.basicAuth]\nusers = [\"{APR1_TEST}\"]\n"
    );
    std::fs::write(&file, &good).unwrap();
    let args = ["storeconfig", "--dynamic", file.to_str().unwrap(), "--dry-run"];
    let (code, out, err) = support::pylon_output(&args, dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("traefik/http/middlewares/auth/basicauth/users/0 = <secret, "), "{out}");
    assert!(!out.contains("$apr1$"), "the hash was printed: {out}");

    std::fs::write(
        &file,
        good.replace("[http.middlewares.auth.basicAuth]", "[http.middlewares.auth.basicAuth]\nrealm = 7"),
    )
    .unwrap();
    let (code, out, err) = support::pylon_output(&args, dir.path());
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("dynamic.toml:8:") && err.contains("realm"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_refuse_beyond_the_burst_and_keep_their_buckets_across_unrelated_changes() {
    let f = on_etcd("").await;
    let defs = [
        ("slow/rateLimit/average", "1"),
        ("slow/rateLimit/period", "1m"),
        ("slow/rateLimit/burst", "3"),
        ("slow/rateLimit/sourceCriterion/requestHeaderName", "X-Tenant"),
    ];
    let app = Upstream::start("app").await;
    let mut pairs = router("limited", "Host(`limited.example`)", "limited");
    pairs.push(("http/routers/limited/middlewares/0", "slow".into()));
    pairs.extend(defs.iter().map(|(k, v)| (leak(format!("http/middlewares/{k}")), v.to_string())));
    pairs.extend(servers("limited", &[&app]));
    f.write(&pairs).await;
    support::eventually("the limited route", std::time::Duration::from_secs(5), || async {
        request(&f, "GET", "limited.example", "/", &[("x-tenant", "probe")]).await.status == 200
    })
    .await;

    let acme = [("x-tenant", "acme")];
    for i in 0..3 {
        assert_eq!(request(&f, "GET", "limited.example", "/", &acme).await.status, 200, "request {i} of the burst");
    }
    let r = request(&f, "GET", "limited.example", "/", &acme).await;
    assert_eq!((r.status, r.body.as_str()), (429, "Too Many Requests"));
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(r.headers.contains_key("x-retry-in"));
    assert_eq!(request(&f, "GET", "limited.example", "/", &[("x-tenant", "other")]).await.status, 200);
    let hits = app.hits();

    let _other = routed(&f, "unrelated.example", &[], &[]).await;
    assert_eq!(request(&f, "GET", "limited.example", "/", &acme).await.status, 429, "the bucket was lost");
    assert_eq!(app.hits(), hits, "a refused request reached the upstream");

    f.write(&[("http/middlewares/slow/rateLimit/burst", "5".into())]).await;
    f.within_a_second("limited.example", "/", "a changed limit starts full", |r| r.status == 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_limits_refuse_while_the_limit_is_reached() {
    let f = on_etcd("").await;
    let app = routed(&f, "busy.example", &["one"], &[("one/inFlightReq/amount", "1")]).await;
    let before = app.hits();
    let url = f.replica.web("/slow/1500");
    let slow = tokio::spawn(async move { send("GET", &url, &[("host", "busy.example")]).await.unwrap().status });
    support::eventually("the slow request upstream", std::time::Duration::from_secs(5), || async {
        app.hits() > before
    })
    .await;
    let r = request(&f, "GET", "busy.example", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (429, "max connections reached: 1"));
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(request(&f, "GET", "busy.example", "/", &[]).await.status, 200, "the place was given back");

    // A WebSocket holds its place until it closes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut ws = tokio::net::TcpStream::connect(("127.0.0.1", f.replica.web)).await.unwrap();
    ws.write_all(b"GET /ws HTTP/1.1\r\nHost: busy.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    ws.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let r = request(&f, "GET", "busy.example", "/", &[]).await;
    assert_eq!(r.status, 429, "an open WebSocket counts");
    drop(ws);
    support::eventually(
        "the place given back when the WebSocket closed",
        std::time::Duration::from_secs(5),
        || async { request(&f, "GET", "busy.example", "/", &[]).await.status == 200 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_circuit_breaker_opens_on_errors_and_closes_again() {
    let f = on_etcd("").await;
    let defs = [
        ("cb/circuitBreaker/expression", "NetworkErrorRatio() > 0.50"),
        ("cb/circuitBreaker/fallbackDuration", "500ms"),
        ("cb/circuitBreaker/recoveryDuration", "500ms"),
    ];
    let app = routed(&f, "fragile.example", &["cb"], &defs).await;
    let r = request(&f, "GET", "fragile.example", "/status/502", &[]).await;
    assert_eq!(r.status, 502, "the upstream's own answer");
    // The breaker checks at most once per 100 ms: failures trip it within a few checks.
    support::eventually("the breaker tripped", std::time::Duration::from_secs(5), || async {
        request(&f, "GET", "fragile.example", "/status/502", &[]).await.status == 503
    })
    .await;
    let hits = app.hits();
    let r = request(&f, "GET", "fragile.example", "/", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "Service Unavailable"), "open");
    assert_eq!(app.hits(), hits, "an open breaker forwarded a request");
    support::eventually("the breaker closed again", std::time::Duration::from_secs(5), || async {
        request(&f, "GET", "fragile.example", "/", &[]).await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_sends_idempotent_requests_again_on_the_statuses_named() {
    let f = on_etcd("[metrics.prometheus]\n").await;
    let defs =
        [("again/retry/attempts", "3"), ("again/retry/initialInterval", "10ms"), ("again/retry/status/0", "500-599")];
    let app = routed(&f, "flaky.example", &["again"], &defs).await;
    let before = app.hits();
    assert_eq!(request(&f, "GET", "flaky.example", "/status/503", &[]).await.status, 503, "the last try's answer");
    assert_eq!(app.hits() - before, 3, "three tries in all");
    let before = app.hits();
    assert_eq!(request(&f, "POST", "flaky.example", "/status/503", &[]).await.status, 503);
    assert_eq!(app.hits() - before, 1, "POST is not retried on its status");
    let before = app.hits();
    assert_eq!(request(&f, "GET", "flaky.example", "/status/404", &[]).await.status, 404);
    assert_eq!(app.hits() - before, 1, "a status not named");
    let (_, metrics) = support::get(&format!("http://127.0.0.1:{}/metrics", f.replica.admin)).await.unwrap();
    let retries = support::sum(&metrics, "traefik_service_retries_total", &["service=\"flaky@etcd\""]);
    assert_eq!(retries, 2.0, "the GET's two retries, and only those:\n{metrics}");
}
