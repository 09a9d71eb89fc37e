//! Prometheus metrics end to end: two replicas on real etcd, scraped by a real Prometheus,
//! judged by Flagger's own queries; the counters checked against what the client sent; the
//! provider in every label (Consul, files); Traefik 1.7's `[web]` serving them.

mod support;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{service::service_fn, Response};
use hyper_util::rt::TokioIo;
use pylon::control::store::{self, Op, Txn};
use support::{
    fixture::on_consul, get, get_host, prometheus::Prometheus, replica::Replica, sum, upstream::Upstream, Etcd,
};

/// A canary that answers 500 to every tenth request and takes 200 ms over another tenth,
/// counting its own requests: any run of ten in a row holds one of each.
struct Canary {
    url: String,
    hits: Arc<AtomicU64>,
}

impl Canary {
    async fn start() -> Canary {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicU64::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let n = counted.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let mut response = Response::new(Full::new(Bytes::from_static(b"canary")));
                            match n % 10 {
                                0 => *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR,
                                1 => tokio::time::sleep(Duration::from_millis(200)).await,
                                _ => {}
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Canary { url, hits }
    }
}

async fn scrape(replica: &Replica) -> String {
    let (status, body) = get(&format!("http://127.0.0.1:{}/metrics", replica.admin)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Flagger's request-success-rate and request-duration queries, as it renders them for a
/// canary named `podinfo` in namespace `default` (interval 1m), with the `@etcd` provider.
const SUCCESS_RATE: &str = r#"sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"default-podinfo-canary-[0-9a-zA-Z-]+@etcd", code!~"5..", le="+Inf" }[1m] ) ) / sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"default-podinfo-canary-[0-9a-zA-Z-]+@etcd", le="+Inf" }[1m] ) ) * 100"#;
const DURATION_P99: &str = r#"histogram_quantile( 0.99, sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"default-podinfo-canary-[0-9a-zA-Z-]+@etcd" }[1m] ) ) by (le) ) * 1000"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaggers_queries_judge_a_canary_from_two_replicas() {
    let etcd = Etcd::start().await;
    let kv = store::open(&etcd.spec()).await.unwrap();
    let extra = "[metrics.prometheus]\nentryPoint = \"traefik\"\naddRoutersLabels = true\n";
    let replicas = [Replica::start(&etcd.flags(), extra).await, Replica::start(&etcd.flags(), extra).await];
    let primary = Upstream::start("primary").await;
    let canary = Canary::start().await;
    let pairs = [
        ("http/routers/podinfo/rule", "PathPrefix(`/`)".to_string()),
        ("http/routers/podinfo/entryPoints/0", "web".into()),
        ("http/routers/podinfo/entryPoints/1", "websecure".into()),
        ("http/routers/podinfo/service", "podinfo".into()),
        ("http/services/podinfo/weighted/services/0/name", "default-podinfo-primary-80".into()),
        ("http/services/podinfo/weighted/services/0/weight", "1".into()),
        ("http/services/podinfo/weighted/services/1/name", "default-podinfo-canary-80".into()),
        ("http/services/podinfo/weighted/services/1/weight", "1".into()),
        ("http/services/default-podinfo-primary-80/loadBalancer/servers/0/url", primary.url()),
        ("http/services/default-podinfo-canary-80/loadBalancer/servers/0/url", canary.url.clone()),
    ];
    let ops = pairs.iter().map(|(k, v)| Op::put(format!("traefik/{k}"), v.as_bytes())).collect();
    kv.txn(Txn { compares: vec![], ops }).await.unwrap();
    let mut sent = 0u64;
    for replica in &replicas {
        support::eventually("the replica routes to the service", Duration::from_secs(10), || {
            sent += 1;
            let url = replica.web("/");
            async move { matches!(get(&url).await, Ok((200, _))) }
        })
        .await;
    }
    let targets: Vec<String> = replicas.iter().map(|r| format!("127.0.0.1:{}", r.admin)).collect();
    let prometheus = Prometheus::start(&targets).await;

    // Warm-up: every series exists and has been scraped once before the measured traffic, so
    // that no increase is lost to a series' first sample.
    let request = |i: u64| {
        let url = replicas[(i % 2) as usize].web(&format!("/item/{i}"));
        async move { get(&url).await.map(|(status, _)| status) }
    };
    for i in 0..40 {
        request(i).await.unwrap();
    }
    sent += 40;
    prometheus.scraped_after(unix_now(), Duration::from_secs(10)).await;

    let (before, mut failures) = (canary.hits.load(Ordering::SeqCst), 0);
    for i in 0..400 {
        if request(i).await.unwrap() == 500 {
            failures += 1;
        }
    }
    sent += 400;
    assert_eq!(canary.hits.load(Ordering::SeqCst) - before, 200, "each replica's weights split its requests evenly");
    assert_eq!(failures, 20, "one canary request in ten failed");
    prometheus.scraped_after(unix_now(), Duration::from_secs(10)).await;

    let success = prometheus.query(SUCCESS_RATE).await;
    assert_eq!(success.len(), 1, "Flagger's success rate has one value: {success:?}");
    assert!((success[0] - 90.0).abs() <= 2.0, "success rate {} is 90 ± 2", success[0]);
    let p99 = prometheus.query(DURATION_P99).await;
    assert_eq!(p99.len(), 1, "Flagger's p99 has one value: {p99:?}");
    assert!(p99[0] > 100.0 && p99[0] <= 300.0, "p99 {} ms lies in the (0.1 s, 0.3 s] bucket that holds 200 ms", p99[0]);

    // Straight from the replicas: the counters add up to what the client sent.
    let expositions = [scrape(&replicas[0]).await, scrape(&replicas[1]).await];
    let total = |family: &str, labels: &[&str]| expositions.iter().map(|e| sum(e, family, labels)).sum::<f64>();
    assert_eq!(total("traefik_entrypoint_requests_total", &["entrypoint=\"web\""]), sent as f64);
    // Requests before the first table got 404 from the entrypoint, and reached no router.
    let routed = sent as f64 - total("traefik_entrypoint_requests_total", &["entrypoint=\"web\"", "code=\"404\""]);
    assert!(routed >= 440.0, "warm-up and measured traffic were routed");
    assert_eq!(
        total("traefik_router_requests_total", &["router=\"podinfo@etcd\"", "service=\"podinfo@etcd\""]),
        routed
    );
    let per_service = total("traefik_service_requests_total", &["service=\"default-podinfo-primary-80@etcd\""])
        + total("traefik_service_requests_total", &["service=\"default-podinfo-canary-80@etcd\""]);
    assert_eq!(per_service, routed, "each routed request was one upstream attempt");
    assert_eq!(
        total("traefik_service_requests_total", &["service=\"default-podinfo-canary-80@etcd\"", "code=\"500\""]),
        (canary.hits.load(Ordering::SeqCst).div_ceil(10)) as f64,
        "the canary's 500s, labelled with their code"
    );
    let bucket = total(
        "traefik_entrypoint_request_duration_seconds_bucket",
        &["entrypoint=\"web\"", "le=\"+Inf\"", "method=\"GET\"", "protocol=\"http\""],
    );
    assert_eq!(bucket, sent as f64, "the +Inf bucket holds every request");
    assert!(total("traefik_entrypoint_responses_bytes_total", &["entrypoint=\"web\""]) > 0.0);
    assert!(total("traefik_config_reloads_total", &[]) >= 2.0, "each replica applied the configuration");
    // Prometheus scraped the traefik entrypoint every second, and /ping was asked: neither counts.
    assert_eq!(
        total("traefik_entrypoint_requests_total", &["entrypoint=\"traefik\""]),
        0.0,
        "internal requests are not counted"
    );

    // The scrape's own connection is open on the traefik entrypoint.
    let open =
        sum(&scrape(&replicas[0]).await, "traefik_open_connections", &["entrypoint=\"traefik\"", "protocol=\"TCP\""]);
    assert!(open >= 1.0, "open connections: {open}");

    // Over TLS (curl, TLS 1.3 to the websecure entrypoint's default certificate): the TLS
    // counters name the version and Go's cipher name.
    let url = format!("https://127.0.0.1:{}/tls", replicas[0].websecure);
    let curl = std::process::Command::new("curl")
        .args(["-sk", "--tlsv1.3", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&curl.stdout).to_string();
    assert!(code == "200" || code == "500", "routed over TLS to the primary or the canary: {code}");
    let exposition = scrape(&replicas[0]).await;
    let tls =
        sum(&exposition, "traefik_entrypoint_requests_tls_total", &["tls_version=\"1.3\"", "entrypoint=\"websecure\""]);
    assert_eq!(tls, 1.0, "{exposition}");
    assert!(
        exposition
            .lines()
            .any(|l| l.starts_with("traefik_entrypoint_requests_tls_total{") && l.contains("tls_cipher=\"TLS_AES_")),
        "{exposition}"
    );
    assert_eq!(
        sum(&exposition, "traefik_router_requests_tls_total", &["router=\"podinfo@etcd\"", "tls_version=\"1.3\""]),
        1.0
    );

    // A router removed from the store: its series go at the next scrape.
    kv.delete_prefix("traefik/http/routers/podinfo/").await.unwrap();
    support::eventually("the removed router's series are dropped", Duration::from_secs(5), || async {
        let exposition = scrape(&replicas[0]).await;
        !exposition.contains("router=\"podinfo@etcd\"") && exposition.contains("entrypoint=\"web\"")
    })
    .await;
}

/// `buckets` replaces Traefik's default bounds in every duration histogram: a quick request
/// falls in the lowest bucket, one slower than 150 ms only in the upper ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_buckets_bound_every_duration_histogram() {
    let etcd = Etcd::start().await;
    let kv = store::open(&etcd.spec()).await.unwrap();
    let extra = "[metrics.prometheus]\nbuckets = [0.15, 2.5]\naddRoutersLabels = true\n";
    let replica = Replica::start(&etcd.flags(), extra).await;
    let canary = Canary::start().await;
    let pairs = [
        ("http/routers/app/rule", "PathPrefix(`/`)".to_string()),
        ("http/routers/app/service", "app".into()),
        ("http/services/app/loadBalancer/servers/0/url", canary.url.clone()),
    ];
    let ops = pairs.iter().map(|(k, v)| Op::put(format!("traefik/{k}"), v.as_bytes())).collect();
    kv.txn(Txn { compares: vec![], ops }).await.unwrap();
    support::eventually("the router is served", Duration::from_secs(10), || async {
        get(&replica.web("/")).await.is_ok_and(|(status, _)| status == 500)
    })
    .await;
    // The canary's second request sleeps 200 ms; the third is quick.
    for _ in 0..2 {
        get(&replica.web("/")).await.unwrap();
    }
    assert_eq!(canary.hits.load(Ordering::SeqCst), 3);
    let exposition = scrape(&replica).await;
    for family in ["entrypoint", "router", "service"] {
        let name = format!("traefik_{family}_request_duration_seconds_bucket");
        let bounds: Vec<&str> = exposition
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("code=\"200\""))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(bounds, ["0.15", "2.5", "+Inf"], "{family}: {exposition}");
        let count = |le: &str| sum(&exposition, &name, &["code=\"200\"", &format!("le=\"{le}\"")]);
        assert_eq!((count("0.15"), count("2.5"), count("+Inf")), (1.0, 2.0, 2.0), "{family}: {exposition}");
    }
}

/// Each object's series carry its provider, as Traefik qualifies them (`app@consul`,
/// `files@file`), in the metrics and the API alike; a router and service removed from the
/// store take their series with them, while the file's stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_are_labelled_with_their_provider_and_removed_objects_take_theirs_away() {
    let files = Upstream::start("files").await;
    let dir = tempfile::tempdir().unwrap();
    let dynamic = format!(
        "[http.routers.files]\nrule = \"Host(`files.pylon.test`)\"\nservice = \"files\"\n\
         [http.services.files.loadBalancer]\nservers = [{{ url = \"{}\" }}]\n",
        files.url()
    );
    std::fs::write(dir.path().join("files.toml"), dynamic).unwrap();
    let extra = format!(
        "[api]\ninsecure = true\n[metrics.prometheus]\naddRoutersLabels = true\n[file]\ndirectory = \"{}\"\n",
        dir.path().display()
    );
    let f = on_consul(&extra).await;
    let _app = f.serve_app("Host(`app.pylon.test`)", "app.pylon.test", "/").await;
    f.within_a_second("files.pylon.test", "/", "the file's route", |r| r.body.starts_with("files ")).await;

    let before = scrape(&f.replica).await;
    for (host, n) in [("app.pylon.test", 2), ("files.pylon.test", 3)] {
        for _ in 0..n {
            assert_eq!(get_host(&f.replica.web("/"), host).await.status, 200);
        }
    }
    let after = scrape(&f.replica).await;
    for (family, label, wanted) in [
        ("traefik_service_requests_total", "service=\"app@consul\"", 2.0),
        ("traefik_service_requests_total", "service=\"files@file\"", 3.0),
        ("traefik_router_requests_total", "router=\"app@consul\"", 2.0),
        ("traefik_router_requests_total", "router=\"files@file\"", 3.0),
    ] {
        let count = |exposition: &str| sum(exposition, family, &[label, "code=\"200\""]);
        assert_eq!(count(&after) - count(&before), wanted, "{family}{{{label}}}: {after}");
    }
    let admin = |path: &str| format!("http://127.0.0.1:{}{path}", f.replica.admin);
    for (path, provider) in [
        ("/api/http/routers/app@consul", "consul"),
        ("/api/http/services/app@consul", "consul"),
        ("/api/http/routers/files@file", "file"),
        ("/api/http/services/files@file", "file"),
    ] {
        let (status, body) = get(&admin(path)).await.unwrap();
        let record: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, record["provider"].as_str()), (200, Some(provider)), "{path}: {body}");
    }

    f.delete_prefix("http/").await;
    f.within_a_second("app.pylon.test", "/", "the route removed", |r| r.status == 404).await;
    let exposition = scrape(&f.replica).await;
    assert!(!exposition.contains("app@consul"), "the removed router's and service's series are dropped: {exposition}");
    assert!(exposition.contains("service=\"files@file\""), "the file's stay: {exposition}");
}

/// A Traefik 1.7 file with `[web]` and `[web.metrics.prometheus]` serves the metrics, the API and
/// `/ping` on the `[web]` address, with the buckets it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_1x_web_section_serves_metrics_on_its_address() {
    let etcd = Etcd::start().await;
    let (web, admin) = (support::free_port(), support::free_port());
    let config = format!(
        "defaultEntryPoints = [\"http\"]\n[entryPoints.http]\naddress = \"127.0.0.1:{web}\"\n\
         [web]\naddress = \"127.0.0.1:{admin}\"\n[web.metrics.prometheus]\nbuckets = [0.1, 0.3]\n"
    );
    let replica = Replica::start_v1(&etcd.flags(), &config, web, admin).await;
    let app = Upstream::start("app").await;
    let kv = store::open(&etcd.spec()).await.unwrap();
    let pairs = [
        ("http/routers/app/rule", "PathPrefix(`/`)".to_string()),
        ("http/routers/app/service", "app".into()),
        ("http/services/app/loadBalancer/servers/0/url", app.url()),
    ];
    let ops = pairs.iter().map(|(k, v)| Op::put(format!("traefik/{k}"), v.as_bytes())).collect();
    kv.txn(Txn { compares: vec![], ops }).await.unwrap();
    support::eventually("the router is served", Duration::from_secs(10), || async {
        get(&replica.web("/")).await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
    let before = scrape(&replica).await;
    for _ in 0..3 {
        assert_eq!(get(&replica.web("/")).await.unwrap().0, 200);
    }
    let after = scrape(&replica).await;
    let count = |exposition: &str, family: &str, label: &str| sum(exposition, family, &[label, "code=\"200\""]);
    for (family, label) in [
        ("traefik_entrypoint_requests_total", "entrypoint=\"http\""),
        ("traefik_service_requests_total", "service=\"app@etcd\""),
    ] {
        assert_eq!(count(&after, family, label) - count(&before, family, label), 3.0, "{family}: {after}");
    }
    let bounds: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("traefik_service_request_duration_seconds_bucket{") && l.contains("code=\"200\""))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(bounds, ["0.1", "0.3", "+Inf"], "the buckets [web.metrics.prometheus] names");
    let (status, body) = get(&format!("http://127.0.0.1:{admin}/api/http/routers/app@etcd")).await.unwrap();
    assert_eq!(status, 200, "[web] also serves the API: {body}");
}
