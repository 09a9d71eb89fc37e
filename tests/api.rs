//! Traefik's API end to end: a replica on real etcd, a configuration with an enabled router, a
//! disabled one (its middleware is missing), one with a warning (an entrypoint that does not
//! exist), a weighted service and a health-checked one; each endpoint's JSON pinned, then
//! paging, filters and sorting, and the API behind a router to `api@internal`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{fixture::on_etcd, send, upstream::Upstream};

const SHA_SECRET: &str = "sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";
/// `sha:secret`.
const SHA_CREDENTIALS: &str = "Basic c2hhOnNlY3JldA==";

async fn api(f: &support::fixture::Fixture, path: &str) -> (u16, Value, Option<String>) {
    let url = format!("http://127.0.0.1:{}{path}", f.replica.admin);
    let reply = send("GET", &url, &[]).await.unwrap();
    let next = reply.headers.get("x-next-page").map(|v| v.to_str().unwrap().to_string());
    let body = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", reply.body));
    (reply.status, body, next)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_routers_services_and_middlewares_with_their_status() {
    let f = on_etcd("[api]\ninsecure = true\n[metrics.prometheus]\n").await;
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let pairs: Vec<(&str, String)> = vec![
        ("http/routers/app/rule", "Host(`app.example`)".into()),
        ("http/routers/app/service", "app".into()),
        ("http/routers/app/middlewares/0", "auth".into()),
        ("http/routers/broken/rule", "Host(`broken.example`)".into()),
        ("http/routers/broken/service", "v1".into()),
        ("http/routers/broken/middlewares/0", "missing".into()),
        ("http/routers/odd/rule", "Host(`odd.example`)".into()),
        ("http/routers/odd/service", "v1".into()),
        ("http/routers/odd/priority", "7".into()),
        ("http/routers/odd/entryPoints/0", "web".into()),
        ("http/routers/odd/entryPoints/1", "nope".into()),
        ("http/services/app/weighted/services/0/name", "v1".into()),
        ("http/services/app/weighted/services/0/weight", "3".into()),
        ("http/services/app/weighted/services/1/name", "v2".into()),
        ("http/services/app/weighted/services/1/weight", "1".into()),
        ("http/services/v1/loadBalancer/servers/0/url", v1.url()),
        ("http/services/v1/loadBalancer/healthCheck/path", "/health".into()),
        ("http/services/v1/loadBalancer/healthCheck/interval", "100ms".into()),
        ("http/services/v2/loadBalancer/servers/0/url", v2.url()),
        ("http/middlewares/auth/basicAuth/users/0", SHA_SECRET.into()),
    ];
    f.write(&pairs).await;
    support::eventually("the API shows the three routers", Duration::from_secs(10), || async {
        api(&f, "/api/http/routers").await.1.as_array().is_some_and(|a| a.len() == 3)
    })
    .await;

    let (status, routers, next) = api(&f, "/api/http/routers").await;
    assert_eq!((status, next.as_deref()), (200, Some("1")));
    let broken_error = routers[1]["error"][0].as_str().unwrap().to_string();
    assert!(
        broken_error.contains("router \"broken\" disabled: its middleware \"missing\" does not exist"),
        "{broken_error}"
    );
    assert_eq!(
        routers,
        json!([
            {
                "rule": "Host(`app.example`)", "service": "app", "middlewares": ["auth@etcd"],
                "status": "enabled", "using": ["web", "websecure"],
                "name": "app@etcd", "provider": "etcd", "priorityStr": "0"
            },
            {
                "rule": "Host(`broken.example`)", "service": "v1", "middlewares": ["missing@etcd"],
                "error": [broken_error], "status": "disabled", "using": ["web", "websecure"],
                "name": "broken@etcd", "provider": "etcd", "priorityStr": "0"
            },
            {
                "rule": "Host(`odd.example`)", "service": "v1", "priority": 7, "entryPoints": ["web", "nope"],
                "error": ["router \"odd\": entrypoint \"nope\" does not exist"], "status": "warning", "using": ["web"],
                "name": "odd@etcd", "provider": "etcd", "priorityStr": "7"
            }
        ])
    );

    let v1_url = format!("{}/", v1.url());
    let (_, services, _) = api(&f, "/api/http/services").await;
    assert_eq!(
        services,
        json!([
            {
                "weighted": { "services": [{ "name": "v1", "weight": 3 }, { "name": "v2", "weight": 1 }] },
                "status": "enabled", "name": "app@etcd", "provider": "etcd", "type": "weighted", "usedBy": ["app@etcd"]
            },
            {
                "loadBalancer": {
                    "servers": [{ "url": v1.url() }], "healthCheck": { "path": "/health", "interval": "100ms" },
                    "passHostHeader": true, "strategy": "wrr"
                },
                "status": "enabled", "name": "v1@etcd", "provider": "etcd", "type": "loadbalancer",
                "usedBy": ["broken@etcd", "odd@etcd"], "serverStatus": { v1_url.clone(): "UP" }
            },
            {
                "loadBalancer": { "servers": [{ "url": v2.url() }], "passHostHeader": true, "strategy": "wrr" },
                "status": "enabled", "name": "v2@etcd", "provider": "etcd", "type": "loadbalancer"
            }
        ])
    );
    let (_, middlewares, _) = api(&f, "/api/http/middlewares").await;
    assert_eq!(
        middlewares,
        json!([{
            "basicAuth": { "users": [SHA_SECRET] }, "status": "enabled", "usedBy": ["app@etcd"],
            "name": "auth@etcd", "provider": "etcd", "type": "basicauth"
        }])
    );
    let (_, overview, _) = api(&f, "/api/overview").await;
    assert_eq!(
        overview["http"],
        json!({
            "routers": { "total": 3, "warnings": 1, "errors": 1 },
            "services": { "total": 3, "warnings": 0, "errors": 0 },
            "middlewares": { "total": 1, "warnings": 0, "errors": 0 }
        })
    );
    let none = json!({ "total": 0, "warnings": 0, "errors": 0 });
    assert_eq!(
        overview,
        json!({
            "http": overview["http"],
            "tcp": { "routers": none, "services": none, "middlewares": none },
            "udp": { "routers": none, "services": none },
            "certificates": none,
            "features": { "tracing": "", "metrics": "Prometheus", "accessLog": false },
            "providers": ["Etcd"]
        })
    );
    let (status, one, _) = api(&f, "/api/http/routers/odd@etcd").await;
    assert_eq!((status, &one), (200, &routers[2]));
    let (status, missing, _) = api(&f, "/api/http/routers/odd").await;
    assert_eq!((status, missing), (404, json!({ "message": "router not found: odd" })));
    let (status, version, _) = api(&f, "/api/version").await;
    let started = version["startDate"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        (status, &version),
        (200, &json!({ "Version": env!("CARGO_PKG_VERSION"), "Codename": "pylon", "startDate": started }))
    );
    assert!(started.len() == 20 && started.ends_with('Z') && started.as_bytes()[10] == b'T', "RFC 3339: {started}");
    let (_, raw, _) = api(&f, "/api/rawdata").await;
    assert_eq!(raw["routers"]["app@etcd"], routers[0]);
    assert_eq!(raw["services"]["v2@etcd"], services[2]);
    let (_, entrypoints, _) = api(&f, "/api/entrypoints").await;
    let r = &f.replica;
    // Traefik's defaults, durations in nanoseconds as its API writes them.
    let transport = json!({
        "lifeCycle": { "graceTimeOut": "10000000000ns" },
        "respondingTimeouts": { "readTimeout": "60000000000ns", "idleTimeout": "180000000000ns" }
    });
    let plain = |name: &str, port: u16| json!({ "address": format!("127.0.0.1:{port}"), "transport": transport, "forwardedHeaders": {}, "http": {}, "name": name });
    assert_eq!(
        entrypoints,
        json!([
            {
                "address": format!("127.0.0.1:{}", r.redir),
                "transport": transport,
                "forwardedHeaders": {},
                "http": { "redirections": { "entryPoint": { "to": "websecure", "permanent": true } } },
                "name": "redir"
            },
            plain("traefik", r.admin),
            plain("web", r.web),
            plain("websecure", r.websecure)
        ])
    );
    let (status, one, _) = api(&f, "/api/entrypoints/web").await;
    assert_eq!((status, &one), (200, &entrypoints[2]));
    assert_eq!(api(&f, "/api/entrypoints/nope").await.0, 404);

    // Paging, filters, sorting.
    let (_, page, next) = api(&f, "/api/http/routers?per_page=2").await;
    assert_eq!((names(&page), next.as_deref()), (vec!["app@etcd", "broken@etcd"], Some("2")));
    let (_, page, next) = api(&f, "/api/http/routers?per_page=2&page=2").await;
    assert_eq!((names(&page), next.as_deref()), (vec!["odd@etcd"], Some("1")));
    let (status, past, _) = api(&f, "/api/http/routers?per_page=2&page=3").await;
    assert_eq!((status, past), (400, json!({ "message": "invalid request: page: 3, per_page: 2" })));
    assert_eq!(api(&f, "/api/http/routers?page=0").await.0, 400);
    for (query, expected) in [
        ("status=disabled", vec!["broken@etcd"]),
        ("status=WARNING", vec!["odd@etcd"]),
        ("search=ODD", vec!["odd@etcd"]),
        ("search=broken.example", vec!["broken@etcd"]),
        ("serviceName=v1@etcd", vec!["broken@etcd", "odd@etcd"]),
        ("serviceName=app", vec!["app@etcd"]),
        ("middlewareName=auth@etcd", vec!["app@etcd"]),
        ("sortBy=priority&direction=desc", vec!["odd@etcd", "broken@etcd", "app@etcd"]),
        ("sortBy=status", vec!["broken@etcd", "app@etcd", "odd@etcd"]),
    ] {
        let (_, list, _) = api(&f, &format!("/api/http/routers?{query}")).await;
        assert_eq!(names(&list), expected, "{query}");
    }
    let (_, list, _) = api(&f, "/api/http/services?sortBy=type&direction=desc").await;
    assert_eq!(names(&list), ["app@etcd", "v2@etcd", "v1@etcd"], "ties in descending order by name, as Traefik");
    let post = send("POST", &format!("http://127.0.0.1:{}/api/overview", f.replica.admin), &[]).await.unwrap();
    assert_eq!(post.status, 405, "GET only");

    // A server failing its health check shows DOWN, in the API and in the metrics.
    let server_up = || async {
        let (_, metrics) = support::get(&format!("http://127.0.0.1:{}/metrics", f.replica.admin)).await.unwrap();
        let series = format!("traefik_service_server_up{{service=\"v1@etcd\",url=\"{v1_url}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series).map(str::to_string))
            .unwrap_or_else(|| panic!("{series}in\n{metrics}"))
    };
    assert_eq!(server_up().await, "1.0");
    let (_, metrics) = support::get(&format!("http://127.0.0.1:{}/metrics", f.replica.admin)).await.unwrap();
    assert!(
        metrics.contains("pylon_config_rejected{kind=\"router\"} 1.0"),
        "the disabled router is counted:\n{metrics}"
    );
    assert!(metrics.contains("pylon_config_rejected{kind=\"middleware\"} 0.0"), "{metrics}");
    // The event bus feeds the recent events: the applied configuration and the rejected router.
    let (status, events, _) = api(&f, "/api/pylon/events").await;
    let events = events.as_array().cloned().unwrap_or_default();
    let of = |kind: &str| events.iter().filter(|e| e["kind"] == kind).cloned().collect::<Vec<Value>>();
    assert_eq!(status, 200);
    let served: f64 = support::sum(&metrics, "pylon_config_revision", &[]);
    let newest = of("config.applied").iter().filter_map(|e| e["fields"]["revision"].as_f64()).fold(0.0, f64::max);
    assert!(served > 0.0 && newest == served, "the revision served was applied as an event: {events:?}");
    assert!(
        of("config.rejected").iter().any(|e| e["fields"]["what"].as_str().is_some_and(|w| w.contains("\"broken\""))),
        "the disabled router is an event: {events:?}"
    );
    assert!(events.iter().all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z'))), "{events:?}");
    v1.set_health(500);
    support::eventually("v1's server shows DOWN", Duration::from_secs(5), || async {
        let (_, service, _) = api(&f, "/api/http/services/v1@etcd").await;
        service["serverStatus"][&v1_url] == "DOWN"
    })
    .await;
    assert_eq!(server_up().await, "0.0", "traefik_service_server_up follows the health check");

    // The API behind a router to api@internal, with basicAuth in front.
    let pairs: Vec<(&str, String)> = vec![
        ("http/routers/dash/rule", "Host(`ops.example`) && PathPrefix(`/api`)".into()),
        ("http/routers/dash/service", "api@internal".into()),
        ("http/routers/dash/middlewares/0", "auth".into()),
    ];
    f.write(&pairs).await;
    let url = f.replica.web("/api/version");
    support::eventually("api@internal answers behind basicAuth", Duration::from_secs(5), || async {
        send("GET", &url, &[("host", "ops.example"), ("authorization", SHA_CREDENTIALS)])
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    let anonymous = send("GET", &url, &[("host", "ops.example")]).await.unwrap();
    assert_eq!(anonymous.status, 401, "the middleware in front of api@internal is enforced");
    let authed = send(
        "GET",
        &f.replica.web("/api/http/routers/dash@etcd"),
        &[("host", "ops.example"), ("authorization", SHA_CREDENTIALS)],
    )
    .await
    .unwrap();
    let dash: Value = serde_json::from_str(&authed.body).unwrap();
    assert_eq!((dash["service"].as_str(), dash["status"].as_str()), (Some("api@internal"), Some("enabled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_insecure_the_api_is_only_served_through_a_router() {
    let f = on_etcd("[api]\ndashboard = false\n").await;
    let direct = send("GET", &format!("http://127.0.0.1:{}/api/version", f.replica.admin), &[]).await.unwrap();
    assert_eq!(direct.status, 404, "not on the traefik entrypoint: {}", direct.body);
    f.write(&[
        ("http/routers/api/rule", "PathPrefix(`/api`)".into()),
        ("http/routers/api/service", "api@internal".into()),
    ])
    .await;
    let url = f.replica.web("/api/version");
    support::eventually("api@internal answers", Duration::from_secs(5), || async {
        send("GET", &url, &[]).await.is_ok_and(|r| r.status == 200 && r.body.contains("\"Codename\":\"pylon\""))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_sit_behind_the_entrypoints_middlewares() {
    // The insecure API, the dashboard and /metrics are routers on the traefik entrypoint: its
    // middlewares run in front of them, as in Traefik.
    let extra = "[api]\ninsecure = true\n[metrics.prometheus]\n[entryPoints.traefik.http]\nmiddlewares = [\"auth\"]\n";
    let f = on_etcd(extra).await;
    let admin = |path: &str| format!("http://127.0.0.1:{}{path}", f.replica.admin);
    let before = send("GET", &admin("/api/version"), &[]).await.unwrap();
    assert_eq!(before.status, 404, "the middleware does not exist yet: the internal routers are disabled, not open");
    f.write(&[("http/middlewares/auth/basicAuth/users/0", SHA_SECRET.into())]).await;
    support::eventually("the internal routers come up behind basicAuth", Duration::from_secs(5), || async {
        send("GET", &admin("/api/version"), &[]).await.is_ok_and(|r| r.status == 401)
    })
    .await;
    for path in ["/api/version", "/dashboard/", "/metrics"] {
        let anonymous = send("GET", &admin(path), &[]).await.unwrap();
        assert_eq!(anonymous.status, 401, "{path} needs the entrypoint's basicAuth");
        let authed = send("GET", &admin(path), &[("authorization", SHA_CREDENTIALS)]).await.unwrap();
        assert_eq!(authed.status, 200, "{path} with credentials");
    }
    let ping = send("GET", &admin("/ping"), &[]).await.unwrap();
    assert_eq!(ping.status, 200, "/ping stays open for load balancers' health checks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_manual_routing_metrics_are_served_only_by_the_users_router() {
    let f = on_etcd("[metrics.prometheus]\nmanualRouting = true\n").await;
    let direct = send("GET", &format!("http://127.0.0.1:{}/metrics", f.replica.admin), &[]).await.unwrap();
    assert_eq!(direct.status, 404, "not on the metrics entrypoint");
    f.write(&[
        ("http/routers/metrics/rule", "Host(`ops.example`) && Path(`/metrics`)".into()),
        ("http/routers/metrics/service", "prometheus@internal".into()),
    ])
    .await;
    let url = f.replica.web("/metrics");
    support::eventually("prometheus@internal answers", Duration::from_secs(5), || async {
        send("GET", &url, &[("host", "ops.example")])
            .await
            .is_ok_and(|r| r.status == 200 && r.body.contains("traefik_config_reloads_total"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_api_or_metrics_nothing_internal_is_served_and_a_router_to_api_internal_is_disabled() {
    let f = on_etcd("").await;
    let upstream = Upstream::start("after").await;
    let admin = |path: &str| format!("http://127.0.0.1:{}{path}", f.replica.admin);
    for path in ["/api/version", "/api/http/routers", "/dashboard/", "/metrics"] {
        let reply = send("GET", &admin(path), &[]).await.unwrap();
        assert_eq!(reply.status, 404, "{path} is not served without [api] or [metrics]");
    }
    f.write(&[
        ("http/routers/api/rule", "PathPrefix(`/api`)".into()),
        ("http/routers/api/service", "api@internal".into()),
        ("http/routers/metrics/rule", "Path(`/metrics`)".into()),
        ("http/routers/metrics/service", "prometheus@internal".into()),
        ("http/routers/after/rule", "Path(`/after`)".into()),
        ("http/routers/after/service", "after".into()),
        ("http/services/after/loadBalancer/servers/0/url", upstream.url()),
    ])
    .await;
    let after = f.replica.web("/after");
    support::eventually("the routers are applied", Duration::from_secs(5), || async {
        send("GET", &after, &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    for path in ["/api/version", "/metrics"] {
        let reply = send("GET", &f.replica.web(path), &[]).await.unwrap();
        assert_eq!(reply.status, 404, "{path}: the router to the internal service is disabled: {}", reply.body);
    }
    let log = f.replica.log();
    assert!(log.contains("api@internal"), "the disabled router is reported:\n{log}");
}
