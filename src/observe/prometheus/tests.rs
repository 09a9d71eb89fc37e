//! The exposition's own rules: escaping, Go's TLS names, histogram buckets.

use std::sync::Arc;

use super::*;
use crate::data::metrics::{intern, Kind, Sample, Settings};

#[test]
fn label_values_are_escaped_and_tls_names_are_gos() {
    assert_eq!(tls_version(0x0304), "1.3");
    assert_eq!(tls_version(0x0303), "1.2");
    assert_eq!(cipher_name(0x1301), "TLS_AES_128_GCM_SHA256");
    assert_eq!(cipher_name(0xc02b), "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    assert_eq!(per_bucket(&[0.1, 0.3], &[2, 5], 9), vec![(0.1, 2), (0.3, 3), (f64::MAX, 4)]);

    let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new(Settings {
        entry_points: true,
        routers: true,
        services: true,
        buckets: Arc::from([0.1, 0.3, 1.2, 5.0]),
    })));
    let (router, service) = (intern(Kind::Router, "we\"ird\\name\nx"), intern(Kind::Service, "svc"));
    metrics.request(Level::Router, router, service, &Sample { code: 200, ..Sample::default() });
    let default = crate::data::tls::Loaded::self_signed(&["t.invalid"]).unwrap().key;
    let plane = Plane::new(default);
    // The table serves both names, so the scrape keeps their series.
    let mut table = crate::data::routing::Table::default();
    table.live.extend([router, service]);
    plane.publish(|s| s.table = Arc::new(table));
    let status = tokio::sync::watch::channel(crate::control::watcher::Status::default()).1;
    let exposition =
        Exposition { metrics: Some(metrics), plane, provider: "etcd", control: Arc::default(), status, locks: None };
    let text = Scrape::new(exposition).render().unwrap();
    let line = text.lines().find(|l| l.starts_with("traefik_router_requests_total{")).expect(&text);
    assert!(line.contains(r#"router="we\"ird\\name\nx@etcd""#), "escaped: {line}");
    assert!(line.contains(r#"service="svc@etcd""#) && line.ends_with(" 1"), "{line}");
    assert!(text.contains("traefik_router_request_duration_seconds_bucket{"), "{text}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    assert!(text.contains("pylon_config_rejected{kind=\"router\"} 0"), "{text}");
}
