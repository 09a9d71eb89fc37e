//! The dynamic model from KV pairs and from a file-provider file.

use super::*;
use crate::config::{Diagnostic, Origin};

/// KV pairs as the store holds them, below the prefix: `http/routers/web/rule`.
fn from_kv(pairs: &[(&str, &str)]) -> DynamicConfig {
    let tree = Node::from_pairs(
        pairs.iter().map(|(k, v)| {
            let path = k.split('/').map(String::from).collect();
            (path, v.to_string(), Origin::Store(format!("traefik/{k}")))
        }),
        DYNAMIC_NAMES,
    );
    build(tree.unwrap())
}

const GOOD: &[(&str, &str)] = &[
    ("http/routers/Web/rule", "Host(`a.example`) && PathPrefix(`/api`)"),
    ("http/routers/Web/service", "app"),
    ("http/routers/Web/entrypoints/0", "websecure"),
    ("http/routers/Web/tls/certresolver", "le"),
    ("http/routers/Web/tls/domains/0/main", "a.example"),
    ("http/routers/Web/tls/domains/0/sans/0", "www.a.example"),
    ("http/services/app/loadbalancer/servers/0/url", "http://127.0.0.1:8081"),
    ("http/services/app/loadbalancer/servers/1/url", "http://127.0.0.1:8082"),
    ("http/services/app/loadbalancer/servers/1/weight", "3"),
    ("http/services/app/loadbalancer/passhostheader", "false"),
    ("http/services/app/loadbalancer/healthcheck/path", "/health"),
    ("http/services/app/loadbalancer/healthcheck/interval", "2s"),
    ("http/services/app/loadbalancer/healthcheck/headers/X-Probe", "pylon"),
    ("http/services/app/loadbalancer/sticky/cookie/name", "lb"),
    ("http/services/canary/weighted/services/0/name", "app"),
    ("http/services/canary/weighted/services/0/weight", "95"),
    ("http/services/canary/weighted/services/1/name", "app-canary"),
    ("http/services/canary/weighted/services/1/weight", "5"),
    ("http/services/app-canary/loadbalancer/servers/0/url", "http://127.0.0.1:8083"),
    ("http/services/shadow/mirroring/service", "app"),
    ("http/services/shadow/mirroring/mirrors/0/name", "app-canary"),
    ("http/services/shadow/mirroring/mirrors/0/percent", "10"),
    ("http/services/safe/failover/service", "app"),
    ("http/services/safe/failover/fallback", "app-canary"),
    ("tls/certificates/0/certfile", "-----BEGIN CERTIFICATE-----"),
    ("tls/certificates/0/keyfile", "-----BEGIN PRIVATE KEY-----"),
];

#[test]
fn traefik_v3_kv_keys_load() {
    let d = from_kv(GOOD);
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    let web = &d.routers["Web"];
    assert_eq!(web.service, "app");
    assert_eq!(web.entry_points, ["websecure"]);
    assert_eq!(web.priority, "Host(`a.example`) && PathPrefix(`/api`)".len() as u64);
    let tls = web.tls.as_ref().unwrap();
    assert_eq!(tls.cert_resolver.as_deref(), Some("le"));
    assert_eq!(tls.domains[0].sans, ["www.a.example"]);
    let Service::LoadBalancer(lb) = &d.services["app"] else { panic!("app is a load balancer") };
    assert_eq!(lb.servers.iter().map(|s| s.weight).collect::<Vec<_>>(), [1, 3]);
    assert!(!lb.pass_host_header);
    let hc = lb.health_check.as_ref().unwrap();
    assert_eq!((hc.path.as_str(), hc.interval), ("/health", Duration::from_secs(2)));
    assert_eq!(hc.headers, [("X-Probe".to_string(), "pylon".to_string())]);
    assert_eq!(lb.sticky.as_ref().unwrap().name, "lb");
    assert_eq!(
        d.services["canary"],
        Service::Weighted(Weighted { services: vec![("app".into(), 95), ("app-canary".into(), 5)], sticky: None })
    );
    assert!(matches!(&d.services["shadow"], Service::Mirroring(m) if m.mirrors == [("app-canary".to_string(), 10)]));
    assert!(matches!(&d.services["safe"], Service::Failover(f) if f.fallback == "app-canary"));
    assert_eq!(d.certificates.len(), 1);
}

#[test]
fn an_invalid_router_is_rejected_alone_naming_its_key() {
    let mut pairs = GOOD.to_vec();
    pairs.push(("http/routers/bad/rule", "Host(`b.example`) &&"));
    pairs.push(("http/routers/bad/service", "app"));
    pairs.push(("http/routers/slow/rule", "Path(`/`)"));
    pairs.push(("http/routers/slow/service", "app"));
    pairs.push(("http/routers/slow/priority", "high"));
    let d = from_kv(&pairs);
    assert_eq!(d.routers.keys().collect::<Vec<_>>(), ["Web"]);
    let text: Vec<String> = d.rejected.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|t| t.starts_with("KV key traefik/http/routers/bad/rule:") && t.contains("column 21")),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.starts_with("KV key traefik/http/routers/slow/priority:")), "{text:?}");
}

#[test]
fn a_broken_service_takes_down_only_what_depends_on_it() {
    let mut pairs = GOOD.to_vec();
    pairs.retain(|(k, _)| !k.starts_with("http/services/app-canary/"));
    pairs.push(("http/services/app-canary/loadbalancer/servers/0/url", "ftp://nope"));
    let d = from_kv(&pairs);
    // app-canary is invalid; canary, shadow and safe refer to it; Web only needs app.
    assert_eq!(d.services.keys().collect::<Vec<_>>(), ["app"]);
    assert!(d.routers.contains_key("Web"));
    let text: Vec<String> = d.rejected.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.contains("traefik/http/services/app-canary/loadbalancer/servers/0/url")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("\"canary\" rejected: it refers to \"app-canary\"")), "{text:?}");
}

#[test]
fn reference_cycles_are_rejected() {
    let d = from_kv(&[
        ("http/services/a/weighted/services/0/name", "b"),
        ("http/services/b/failover/service", "a"),
        ("http/services/b/failover/fallback", "c"),
        ("http/services/c/loadbalancer/servers/0/url", "http://127.0.0.1:1"),
        ("http/routers/r/rule", "Path(`/`)"),
        ("http/routers/r/service", "a@kv"),
    ]);
    assert_eq!(d.services.keys().collect::<Vec<_>>(), ["c"]);
    assert!(d.routers.is_empty());
}

#[test]
fn the_file_provider_format_loads_the_same_model() {
    let text = r#"
[http.routers.Web]
  rule = "Host(`a.example`)"
  service = "app"
  priority = 10
  [http.routers.Web.tls]

[[http.services.app.loadBalancer.servers]]
  url = "http://127.0.0.1:8081"
[[http.services.app.loadBalancer.servers]]
  url = "http://127.0.0.1:8082"
  weight = 2
[http.services.app.loadBalancer.healthCheck]
  path = "/health"
  interval = "500ms"

[tls.stores.default.defaultCertificate]
  certFile = "/etc/pylon/default.crt"
  keyFile = "/etc/pylon/default.key"
"#;
    let d = build(Node::from_toml("dynamic.toml", text, DYNAMIC_NAMES).unwrap());
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert_eq!(d.routers["Web"].priority, 10);
    assert!(d.routers["Web"].tls.is_some());
    let Service::LoadBalancer(lb) = &d.services["app"] else { panic!() };
    assert_eq!(lb.servers[1].weight, 2);
    assert_eq!(lb.health_check.as_ref().unwrap().interval, Duration::from_millis(500));
    assert_eq!(d.default_certificate.as_ref().unwrap().cert, "/etc/pylon/default.crt");

    let typo = build(
        Node::from_toml("dynamic.toml", "[http.routers.x]\nrule = \"Path(`/`)\"\nservise = \"app\"\n", DYNAMIC_NAMES)
            .unwrap(),
    );
    assert!(typo.warnings.iter().any(|w| w.to_string().starts_with("dynamic.toml:3:")), "{:?}", typo.warnings);
    assert!(typo.rejected.iter().any(|r| r.message.contains("needs a service")));
}

#[test]
fn yaml_and_toml_files_load_the_same_model() {
    let toml = r#"
[http.routers.Web]
  rule = "Host(`a.example`)"
  service = "app"
  entryPoints = ["websecure"]
  [http.routers.Web.tls]
[http.services.app.loadBalancer]
  passHostHeader = false
  [[http.services.app.loadBalancer.servers]]
    url = "http://127.0.0.1:8081"
    weight = 3
  [http.services.app.loadBalancer.sticky.cookie]
    name = "lb"
"#;
    let yaml = r#"
http:
  routers:
    Web:
      rule: Host(`a.example`)
      service: app
      entryPoints: [websecure]
      tls: {}
  services:
    app:
      loadBalancer:
        passHostHeader: false
        servers:
          - url: http://127.0.0.1:8081
            weight: 3
        sticky:
          cookie:
            name: lb
"#;
    let from_toml = build(Node::from_toml("d.toml", toml, DYNAMIC_NAMES).unwrap());
    let from_yaml = build(Node::from_yaml("d.yml", yaml, DYNAMIC_NAMES).unwrap());
    assert!(from_yaml.rejected.is_empty() && from_yaml.warnings.is_empty(), "{:?}", from_yaml.warnings);
    assert_eq!(format!("{:?}", from_yaml.routers), format!("{:?}", from_toml.routers));
    assert_eq!(format!("{:?}", from_yaml.services), format!("{:?}", from_toml.services));

    let typo = build(
        Node::from_yaml(
            "d.yml",
            "http:\n  routers:\n    x:\n      rule: Path(`/`)\n      servise: app\n",
            DYNAMIC_NAMES,
        )
        .unwrap(),
    );
    assert!(typo.warnings.iter().any(|w| w.to_string().starts_with("d.yml:5:")), "{:?}", typo.warnings);
}

fn tree(pairs: &[(&str, &str)]) -> Node {
    let pairs = pairs
        .iter()
        .map(|(k, v)| (k.split('/').map(String::from).collect(), v.to_string(), Origin::Store(format!("traefik/{k}"))));
    Node::from_pairs(pairs, DYNAMIC_NAMES).unwrap()
}

#[test]
fn a_router_whose_middleware_cannot_run_is_disabled_not_routed_around() {
    let d = from_kv(&[
        ("http/routers/guarded/rule", "Host(`a.example`)"),
        ("http/routers/guarded/service", "app"),
        ("http/routers/guarded/middlewares/0", "auth@kv"),
        ("http/routers/limited/rule", "Host(`b.example`)"),
        ("http/routers/limited/service", "app"),
        ("http/routers/limited/middlewares/0", "auth"),
        ("http/routers/limited/middlewares/1", "limit@kv"),
        ("http/routers/typo/rule", "Host(`c.example`)"),
        ("http/routers/typo/service", "app"),
        ("http/routers/typo/middlewares/0", "nope"),
        ("http/routers/broken/rule", "Host(`d.example`)"),
        ("http/routers/broken/service", "app"),
        ("http/routers/broken/middlewares/0", "both"),
        ("http/routers/open/rule", "Host(`e.example`)"),
        ("http/routers/open/service", "app"),
        ("http/middlewares/auth/basicAuth/users/0", "u:$apr1$x$y"),
        ("http/middlewares/limit/plugin/demo/level", "2"),
        ("http/middlewares/both/basicAuth/users/0", "u:$apr1$x$y"),
        ("http/middlewares/both/stripPrefix/prefixes/0", "/x"),
        ("http/services/app/loadbalancer/servers/0/url", "http://127.0.0.1:1"),
    ]);
    assert_eq!(d.routers.keys().collect::<Vec<_>>(), ["guarded", "open"], "{:?}", d.rejected);
    let text: Vec<String> = d.rejected.iter().map(ToString::to_string).collect();
    let line = |router: &str| text.iter().find(|t| t.contains(&format!("router {router:?} disabled"))).cloned();
    let limited = line("limited").unwrap_or_else(|| panic!("{text:?}"));
    assert!(limited.starts_with("KV key traefik/http/routers/limited/middlewares/"), "{limited}");
    assert!(limited.contains("\"limit\" (KV key traefik/http/middlewares/limit/"), "{limited}");
    assert!(limited.contains(") is a plugin, which Pylon does not implement yet"), "{limited}");
    assert!(line("typo").is_some_and(|t| t.contains("\"nope\" does not exist")), "{text:?}");
    let broken = line("broken").unwrap_or_else(|| panic!("{text:?}"));
    assert!(broken.contains("\"both\" (KV key traefik/http/middlewares/both/"), "{broken}");
    assert!(broken.contains(") is invalid"), "{broken}");
    assert!(text.iter().any(|t| t.contains("\"both\" has several types")), "{text:?}");
    assert!(d.warnings.iter().any(|w| w.to_string().contains("plugin is not implemented yet")), "{:?}", d.warnings);
}

#[test]
fn invalid_keys_keep_the_last_good_version_of_their_owner() {
    let good = [
        ("http/routers/r/rule", "Host(`a.example`)"),
        ("http/routers/r/service", "app"),
        ("http/services/app/loadbalancer/servers/0/url", "http://127.0.0.1:1"),
    ];
    let mut parts = Parts::from_tree(tree(&good));
    let typo = tree(&[
        ("http/services/app/loadbalancer/servers/0/url", "http://127.0.0.1:1"),
        ("http/services/app/loadbalancer/servers/0/weight", "abc"),
    ]);
    parts.update(Owner::Service("app".into()), Some(typo));
    let d = parts.assemble();
    assert!(d.routers.contains_key("r") && d.services.contains_key("app"), "{:?}", d.rejected);
    let text: Vec<String> = d.rejected.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.contains("servers/0/weight")), "the bad key is named: {text:?}");
    assert!(text.iter().any(|t| t.contains("serving its last good version")), "{text:?}");

    parts.reject(
        Owner::Router("r".into()),
        Diagnostic { origin: Origin::Store("traefik/http/routers/r/x".into()), message: "unreadable".into() },
    );
    assert!(parts.assemble().routers.contains_key("r"), "a router whose keys cannot be read keeps serving");
    parts.update(Owner::Router("r".into()), None);
    assert!(parts.assemble().routers.is_empty(), "deleting its keys removes it");

    let mut fresh = Parts::from_tree(tree(&good[..2]));
    fresh.update(Owner::Service("app".into()), Some(tree(&[("http/services/app/loadbalancer/servers/0/weight", "x")])));
    let d = fresh.assemble();
    assert!(d.services.is_empty() && d.routers.is_empty(), "a service that never had a good version stays out");
}

#[test]
fn a_router_naming_tls_options_that_are_missing_or_invalid_is_disabled() {
    let router = [
        ("http/routers/r/rule", "Host(`a.example`)"),
        ("http/routers/r/service", "app"),
        ("http/routers/r/tls/options", "modern@etcd"),
        ("http/services/app/loadbalancer/servers/0/url", "http://127.0.0.1:1"),
    ];
    let d = from_kv(&router);
    assert!(d.routers.is_empty());
    assert!(
        d.rejected.iter().any(|r| r.to_string().contains("its TLS options \"modern\" do not exist")),
        "{:?}",
        d.rejected
    );
    let d = from_kv(&[&router[..], &[("tls/options/modern/minVersion", "VersionTLS14")]].concat());
    assert!(d.routers.is_empty());
    let text: Vec<String> = d.rejected.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.starts_with("KV key traefik/tls/options/modern/minVersion:")), "{text:?}");
    assert!(
        text.iter().any(|t| t.contains("its TLS options \"modern\" (")
            && t.ends_with("are invalid; it is not served under weaker TLS")),
        "{text:?}"
    );
    assert_eq!(d.tls_options.get("modern"), Some(&None));
}

#[test]
fn tls_options_are_read_from_their_keys() {
    let (ca, _, _) = {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.example".to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), (), ())
    };
    let d = from_kv(&[
        ("tls/options/modern/minVersion", "VersionTLS12"),
        ("tls/options/modern/maxVersion", "VersionTLS12"),
        ("tls/options/modern/cipherSuites/0", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        ("tls/options/modern/curvePreferences/0", "CurveP384"),
        ("tls/options/modern/curvePreferences/1", "X25519"),
        ("tls/options/modern/alpnProtocols/0", "http/1.1"),
        ("tls/options/modern/alpnProtocols/1", "acme-tls/1"),
        ("tls/options/modern/sniStrict", "true"),
        ("tls/options/modern/disableSessionTickets", "true"),
        ("tls/options/modern/clientAuth/caFiles/0", &ca),
        ("tls/options/modern/clientAuth/clientAuthType", "RequireAndVerifyClientCert"),
    ]);
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    let p = d.tls_options["modern"].clone().expect("valid");
    assert!(p.max_tls12 && !p.min_tls13 && p.sni_strict && p.no_session_tickets);
    assert_eq!(p.tls12_suites, Some(vec!["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".to_string()]));
    use crate::data::tls::policy::Curve;
    assert_eq!(p.curves, Some(vec![Curve::P384, Curve::X25519]));
    assert_eq!(p.alpn, Some(vec!["http/1.1".to_string()]));
    assert_eq!(p.client_auth.map(|a| a.cas.len()), Some(1));
    let d = from_kv(&[("tls/options/x/minVersion", "VersionTLS13"), ("tls/options/x/maxVersion", "VersionTLS12")]);
    assert!(d.rejected.iter().any(|r| r.to_string().contains("leave no TLS version")), "{:?}", d.rejected);
}
