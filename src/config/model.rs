//! The validated static configuration: the domain model the rest of Pylon reads, with no serde
//! in it, and the checks that turn [`super::file::RawConfig`] into it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

pub use super::acme::{Acme, Domain, OnDemandPolicy, LETS_ENCRYPT};
use super::{
    entrypoint::{allowed_upgrades, default_upgrades, path_policy, router_tls_defaults},
    file::*,
    tls_options::tls_options,
    transport::Transport,
    Checker,
};
use crate::data::proxy::path::PathPolicy;

/// The name of the entrypoint that Traefik 1.x's `[web]`, `[api]`, `[ping]` and `[metrics]`
/// use unless told otherwise; created on `:8080` when they need it and it is not declared.
pub const INTERNAL_ENTRYPOINT: &str = "traefik";

#[derive(Clone, Debug, PartialEq)]
pub struct StaticConfig {
    /// A tracing filter directive: "debug", "info", "warn" or "error".
    pub log_level: &'static str,
    pub default_entry_points: Vec<String>,
    pub entry_points: BTreeMap<String, EntryPoint>,
    pub lifecycle: Lifecycle,
    /// The entrypoint that answers `GET /ping`, if any.
    pub ping: Option<String>,
    /// The entrypoint that serves the API (and the dashboard when `dashboard` is set).
    pub api: Option<Api>,
    /// The entrypoint that serves Prometheus metrics at `/metrics`.
    pub metrics: Option<Prometheus>,
    pub access_log: Option<AccessLog>,
    /// The certificate resolvers: v3's `certificatesResolvers`, or v1.7's one `[acme]`.
    pub resolvers: Vec<Acme>,
    /// The file provider, if the configuration names one.
    pub file: Option<super::providers::FileProvider>,
    pub transport: Transport,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EntryPoint {
    pub address: SocketAddr,
    /// Where plain requests are sent: the target entrypoint's name and whether the redirect is
    /// permanent (308) or not (302).
    pub redirect: Option<Redirect>,
    pub tls: Option<Tls>,
    /// `http.tls`: every router on the entrypoint is a TLS router, with this resolver and these
    /// domains unless it names its own.
    pub router_tls: Option<RouterTlsDefaults>,
    /// Whose `X-Forwarded-*` headers are kept (`forwardedHeaders`); others' are replaced.
    pub forwarded_trust: ForwardedTrust,
    /// `proxyProtocol`: whose PROXY headers name the client; `None`: no header is read.
    pub proxy_protocol: Option<ForwardedTrust>,
    /// How request paths are made canonical (`http.sanitizePath`, `http.encodedCharacters`).
    pub path: PathPolicy,
    /// The `Upgrade` protocols tunnelled to upstreams (`http.allowedUpgrades`).
    pub upgrades: Vec<String>,
    /// `http.middlewares`: run before every router's own on this entrypoint.
    pub middlewares: Vec<String>,
}

impl StaticConfig {
    /// The resolver a router's `tls.certResolver` names (v1.7's `[acme]` answers to any name).
    pub fn resolver(&self, name: &str) -> Option<&Acme> {
        let exact = self.resolvers.iter().find(|r| r.name == name);
        exact.or_else(|| self.resolvers.iter().find(|r| r.any_resolver))
    }

    /// Each entrypoint's own TLS settings, which TLS options can only make stricter. A plain
    /// entrypoint terminates TLS for clients that start a handshake; it does so under every TLS
    /// entrypoint's settings, so that no TLS connection is weaker than one of them.
    pub fn tls_floors(&self) -> BTreeMap<String, crate::data::tls::TlsPolicy> {
        let plain = crate::data::tls::TlsPolicy::strictest(
            self.entry_points.values().filter_map(|e| Some(&e.tls.as_ref()?.policy)),
        );
        let floor = |ep: &EntryPoint| ep.tls.as_ref().map_or(&plain, |t| &t.policy).clone();
        self.entry_points.iter().map(|(name, ep)| (name.clone(), floor(ep))).collect()
    }
}

impl EntryPoint {
    /// An entrypoint with nothing but an address (the internal `traefik` one).
    fn bare(address: SocketAddr) -> EntryPoint {
        EntryPoint {
            address,
            redirect: None,
            tls: None,
            router_tls: None,
            forwarded_trust: ForwardedTrust::default(),
            proxy_protocol: None,
            path: PathPolicy::default(),
            upgrades: default_upgrades(),
            middlewares: Vec::new(),
        }
    }
}

/// `[entryPoints.<name>.forwardedHeaders]`: `insecure` trusts everyone, `trustedIPs` some.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ForwardedTrust {
    pub insecure: bool,
    pub trusted: Vec<crate::data::routing::rule::Cidr>,
}

impl ForwardedTrust {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.insecure || self.trusted.iter().any(|c| c.contains(ip))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Redirect {
    pub entry_point: String,
    pub permanent: bool,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tls {
    pub policy: crate::data::tls::TlsPolicy,
    pub certificates: Vec<(String, String)>,
}

/// `[entryPoints.<name>.http.tls]`: what routers on the entrypoint inherit.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RouterTlsDefaults {
    pub cert_resolver: Option<String>,
    /// The TLS options its routers get when they name none (unqualified; `None`: `default`).
    pub options: Option<String>,
    pub domains: Vec<Domain>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Lifecycle {
    /// How long requests are still accepted after SIGTERM while `/ping` already answers 503.
    pub request_accept_grace: Duration,
    /// How long in-flight requests may take to finish once the listeners are closed.
    pub grace_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Api {
    pub entry_point: String,
    pub dashboard: bool,
    /// Served on `entry_point` itself (`api.insecure`, Traefik 1.x's `[api] entryPoint` and
    /// `[web]`); otherwise only through a router to `api@internal`.
    pub on_entry_point: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Prometheus {
    pub entry_point: String,
    /// What is counted, and the histograms' buckets.
    pub settings: crate::data::metrics::Settings,
    /// `manualRouting`: `/metrics` only through a router to `prometheus@internal`.
    pub manual_routing: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AccessLog {
    pub file: Option<String>,
    pub json: bool,
}

/// `http.sanitizePath` (default true) and `http.encodedCharacters.allowEncoded*` (default false).
/// Parses Traefik's address forms: `:80` (every interface), `127.0.0.1:80`, `[::1]:80`,
/// `localhost:80`.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let bad = || {
        format!("{text:?} is not an address; expected \":PORT\" or \"IP:PORT\" such as \":80\" or \"127.0.0.1:8080\"")
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip = match host.trim_start_matches('[').trim_end_matches(']') {
        "" | "0.0.0.0" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().map_err(|_| bad())?,
    };
    Ok(SocketAddr::new(ip, port))
}

pub(super) fn build(raw: RawConfig, c: &mut Checker) -> Option<StaticConfig> {
    let log_level = match raw.loglevel.as_deref().map(str::to_ascii_uppercase).as_deref() {
        _ if raw.debug == Some(true) => "debug",
        None | Some("INFO") => "info",
        Some("DEBUG") => "debug",
        Some("WARN" | "WARNING") => "warn",
        Some("ERROR" | "FATAL" | "PANIC") => "error",
        Some(other) => {
            c.error("loglevel", format!("unknown log level {other:?}; use DEBUG, INFO, WARN or ERROR"));
            "info"
        }
    };

    let mut entry_points = BTreeMap::new();
    for (name, ep) in &raw.entrypoints {
        let path = format!("entrypoints.{name}");
        let Some(address) = &ep.address else {
            c.error(&path, format!("entrypoint {name:?} has no address"));
            continue;
        };
        let address = match parse_address(address) {
            Ok(a) => a,
            Err(e) => {
                c.error(&format!("{path}.address"), e);
                continue;
            }
        };
        let redirect = ep.redirect.as_ref().and_then(|r| {
            if r.regex.is_some() || r.replacement.is_some() {
                c.warn(
                    &format!("{path}.redirect"),
                    "redirect.regex/replacement are not supported; only redirect.entryPoint is",
                );
            }
            let target = r.entrypoint.clone()?;
            Some(Redirect { entry_point: target, permanent: r.permanent.unwrap_or(true) })
        });
        let v2 = ep.http.as_ref();
        let redirect = redirect.or_else(|| {
            let to = v2?.redirections.as_ref()?.entrypoint.as_ref()?;
            let Some(target) = &to.to else {
                c.error(&format!("{path}.http.redirections.entrypoint"), "a redirection needs `to`");
                return None;
            };
            if to.scheme.as_deref().is_some_and(|s| s != "https" && s != "http") {
                c.error(&format!("{path}.http.redirections.entrypoint.scheme"), "scheme must be http or https");
            }
            Some(Redirect { entry_point: target.clone(), permanent: to.permanent.unwrap_or(true) })
        });
        let middlewares = v2.and_then(|h| h.middlewares.clone()).unwrap_or_default();
        let tls = ep.tls.as_ref().map(|t| Tls {
            policy: tls_options(t, &format!("{path}.tls"), c),
            certificates: t
                .certificates
                .iter()
                .filter_map(|cert| Some((cert.certfile.clone()?, cert.keyfile.clone()?)))
                .collect(),
        });
        let router_tls =
            v2.and_then(|h| h.tls.as_ref()).map(|t| router_tls_defaults(t, &format!("{path}.http.tls"), c));
        let tls = tls.or_else(|| router_tls.as_ref().map(|_| Tls::default()));
        let forwarded_trust = ep
            .forwardedheaders
            .as_ref()
            .map(|f| super::entrypoint::trust(f, &format!("{path}.forwardedheaders"), c))
            .unwrap_or_default();
        let proxy_protocol = ep.proxyprotocol.as_ref().map(|p| {
            let trust = super::entrypoint::trust(p, &format!("{path}.proxyprotocol"), c);
            if trust.insecure {
                c.warn(
                    &format!("{path}.proxyprotocol.insecure"),
                    "every client may claim any address with a PROXY header",
                );
            } else if trust.trusted.is_empty() {
                c.warn(&format!("{path}.proxyprotocol"), "no trustedIPs: every PROXY header is read off and ignored");
            }
            trust
        });
        if ep.compress == Some(true) {
            c.warn(&format!("{path}.compress"), "the v1.7 entrypoint compress is not implemented; responses are sent uncompressed (name a compress middleware in http.middlewares instead)");
        }
        let upgrades = match v2.and_then(|h| h.allowedupgrades.as_ref()) {
            Some(list) => allowed_upgrades(list, &format!("{path}.http.allowedupgrades"), c),
            None => default_upgrades(),
        };
        let path = path_policy(v2);
        entry_points.insert(
            name.clone(),
            EntryPoint {
                address,
                redirect,
                tls,
                router_tls,
                forwarded_trust,
                proxy_protocol,
                path,
                upgrades,
                middlewares,
            },
        );
    }

    // Traefik 1.x: [web] is the internal entrypoint at its own address.
    if let Some(web) = &raw.web {
        let address = web.address.as_deref().unwrap_or(":8080");
        match parse_address(address) {
            Ok(address) if !entry_points.contains_key(INTERNAL_ENTRYPOINT) => {
                entry_points.insert(INTERNAL_ENTRYPOINT.into(), EntryPoint::bare(address));
            }
            Ok(_) => c.error("web", "[web] and [entryPoints.traefik] both define the internal entrypoint; keep one"),
            Err(e) => c.error("web.address", e),
        }
    }
    super::unhonoured::warn(&raw, c);
    let mut wants_internal = false;
    let mut internal = |named: Option<&String>| -> String {
        let name = named.cloned().unwrap_or_else(|| INTERNAL_ENTRYPOINT.to_string());
        wants_internal |= name == INTERNAL_ENTRYPOINT;
        name
    };
    let ping = match (&raw.ping, &raw.web) {
        (Some(p), _) => Some(internal(p.entrypoint.as_ref())),
        (None, Some(_)) => Some(internal(None)),
        (None, None) => None,
    };
    let api = match (&raw.api, &raw.web) {
        (Some(a), web) => {
            // Only an API served on its entrypoint needs one (`traefik`, created on :8080).
            let on_entry_point = a.insecure == Some(true) || a.entrypoint.is_some() || web.is_some();
            let entry_point = match on_entry_point {
                true => internal(a.entrypoint.as_ref()),
                false => INTERNAL_ENTRYPOINT.to_string(),
            };
            Some(Api { entry_point, dashboard: a.dashboard.unwrap_or(true), on_entry_point })
        }
        (None, Some(_)) => Some(Api { entry_point: internal(None), dashboard: true, on_entry_point: true }),
        (None, None) => None,
    };
    let top = raw.metrics.as_ref().and_then(|m| m.prometheus.as_ref()).map(|p| ("metrics.prometheus", p));
    let web =
        raw.web.as_ref().and_then(|w| w.metrics.as_ref()?.prometheus.as_ref()).map(|p| ("web.metrics.prometheus", p));
    if top.is_some() && web.is_some() {
        c.error("web.metrics", "[web.metrics] and [metrics] both configure metrics; keep one");
    }
    let metrics = top.or(web).map(|(base, p)| Prometheus {
        entry_point: internal(p.entrypoint.as_ref()),
        settings: super::unhonoured::prometheus(base, p, c),
        manual_routing: p.manualrouting == Some(true),
    });
    if wants_internal && !entry_points.contains_key(INTERNAL_ENTRYPOINT) {
        let address = parse_address(":8080").expect("a valid literal");
        entry_points.insert(INTERNAL_ENTRYPOINT.into(), EntryPoint::bare(address));
    }

    // `to = ":443"` (Traefik v2) names the entrypoint listening on that port.
    let by_port: BTreeMap<String, String> =
        entry_points.iter().map(|(name, ep)| (format!(":{}", ep.address.port()), name.clone())).collect();
    for ep in entry_points.values_mut() {
        if let Some(r) = &mut ep.redirect {
            if let Some(name) = by_port.get(&r.entry_point) {
                r.entry_point = name.clone();
            }
        }
    }
    let exists = |name: &str| entry_points.contains_key(name);
    let known = || entry_points.keys().cloned().collect::<Vec<_>>().join(", ");
    for (name, ep) in &entry_points {
        if let Some(r) = &ep.redirect {
            if !exists(&r.entry_point) {
                let v2 = format!("entrypoints.{name}.http.redirections.entrypoint.to");
                let key =
                    if c.origins.contains_key(&v2) { v2 } else { format!("entrypoints.{name}.redirect.entrypoint") };
                c.error(
                    &key,
                    format!(
                        "redirect to entrypoint {:?}, which does not exist (entrypoints: {})",
                        r.entry_point,
                        known()
                    ),
                );
            }
        }
    }
    let mut by_address: BTreeMap<SocketAddr, &str> = BTreeMap::new();
    for (name, ep) in &entry_points {
        if let Some(other) = by_address.insert(ep.address, name) {
            c.error(
                &format!("entrypoints.{name}.address"),
                format!("entrypoints {other:?} and {name:?} both listen on {}", ep.address),
            );
        }
    }
    for (path, target) in [
        ("ping.entrypoint", ping.as_ref()),
        ("api.entrypoint", api.as_ref().map(|a| &a.entry_point)),
        ("metrics.prometheus.entrypoint", metrics.as_ref().map(|m| &m.entry_point)),
    ] {
        if let Some(target) = target {
            if !exists(target) {
                c.error(path, format!("entrypoint {target:?} does not exist (entrypoints: {})", known()));
            }
        }
    }
    let default_entry_points = match &raw.defaultentrypoints {
        Some(list) => {
            for name in list {
                if !exists(name) {
                    c.error(
                        "defaultentrypoints",
                        format!("default entrypoint {name:?} does not exist (entrypoints: {})", known()),
                    );
                }
            }
            list.clone()
        }
        None => {
            // Traefik v3: the `asDefault` entrypoints, else every one but the internal one.
            let chosen: Vec<String> =
                raw.entrypoints.iter().filter(|(_, ep)| ep.asdefault == Some(true)).map(|(n, _)| n.clone()).collect();
            match chosen.is_empty() {
                true => entry_points.keys().filter(|n| *n != INTERNAL_ENTRYPOINT).cloned().collect(),
                false => chosen,
            }
        }
    };

    let lifecycle = Lifecycle {
        request_accept_grace: raw.lifecycle.as_ref().and_then(|l| l.requestacceptgracetimeout).unwrap_or_default(),
        grace_timeout: raw
            .lifecycle
            .as_ref()
            .and_then(|l| l.gracetimeout)
            .or(raw.gracetimeout)
            .unwrap_or(Duration::from_secs(10)),
    };
    let access_log = raw.accesslog.as_ref().map(|a| AccessLog {
        file: a.filepath.clone().filter(|p| !p.is_empty()),
        json: match a.format.as_deref() {
            None | Some("common") => false,
            Some("json") => true,
            Some(other) => {
                c.error("accesslog.format", format!("unknown access log format {other:?}; use \"common\" or \"json\""));
                false
            }
        },
    });
    let resolvers = super::acme::resolvers(&raw, c, &entry_points);
    for (name, ep) in &entry_points {
        let Some(resolver) = ep.router_tls.as_ref().and_then(|t| t.cert_resolver.as_ref()) else { continue };
        if !resolvers.iter().any(|r| r.name == *resolver || r.any_resolver) {
            let names: Vec<&str> = resolvers.iter().map(|r| r.name.as_str()).collect();
            c.error(
                &format!("entrypoints.{name}.http.tls.certresolver"),
                format!("certificate resolver {resolver:?} does not exist (resolvers: {})", names.join(", ")),
            );
        }
    }
    super::providers::check(&raw, c);
    let file = super::providers::file_provider(&raw, c);
    let transport = super::transport::build(&raw, c);
    if !c.ok() {
        return None;
    }
    Some(StaticConfig {
        log_level,
        default_entry_points,
        entry_points,
        lifecycle,
        ping,
        api,
        metrics,
        access_log,
        resolvers,
        file,
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_address;
    use crate::config::{load, tree::Node, tree::STATIC_NAMES};

    #[test]
    fn traefik_v2_entrypoint_http_section_means_what_v1s_does() {
        let v1 = "[entryPoints.web]\naddress = \":80\"\n[entryPoints.web.redirect]\nentryPoint = \"websecure\"\n\
                  [entryPoints.websecure]\naddress = \":443\"\n[entryPoints.websecure.tls]\n";
        let v2 = "entryPoints:\n  web:\n    address: ':80'\n    http:\n      redirections:\n        entryPoint:\n\
                  \x20         to: ':443'\n          scheme: https\n  websecure:\n    address: ':443'\n    http:\n\
                  \x20     tls: {}\n";
        let v1 = load(Node::from_toml("t.toml", v1, STATIC_NAMES).unwrap()).unwrap().config;
        let v2 = load(Node::from_yaml("t.yml", v2, STATIC_NAMES).unwrap()).unwrap().config;
        let mut v2_entry_points = v2.entry_points.clone();
        let inherited = v2_entry_points.get_mut("websecure").unwrap().router_tls.take();
        assert_eq!(inherited, Some(super::RouterTlsDefaults::default()), "http.tls is what routers inherit");
        assert_eq!(v2_entry_points, v1.entry_points);
        assert_eq!(v2.entry_points["web"].redirect.as_ref().unwrap().entry_point, "websecure");
    }

    #[test]
    fn proxy_protocol_trusts_what_it_lists_and_a_bad_entry_is_an_error_at_its_line() {
        let file =
            "[entryPoints.web]\naddress = \":80\"\n[entryPoints.web.proxyProtocol]\ntrustedIPs = [\"10.0.0.0/8\"]\n";
        let loaded = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap();
        let trust = loaded.config.entry_points["web"].proxy_protocol.clone().expect("on");
        assert!(trust.trusts("10.1.2.3".parse().unwrap()) && !trust.trusts("192.0.2.1".parse().unwrap()));
        let bad = file.replace("10.0.0.0/8", "ten");
        let errors = load(Node::from_toml("t.toml", &bad, STATIC_NAMES).unwrap()).unwrap_err();
        assert!(errors.0.iter().any(|e| e.to_string().starts_with("t.toml:4:")), "{:?}", errors.0);
    }

    #[test]
    fn tls_settings_are_enforced_or_refused_at_their_key() {
        let file = "[entryPoints.websecure]\naddress = \":443\"\n[entryPoints.websecure.tls]\n\
                    minVersion = \"VersionTLS13\"\nsniStrict = true\n\
                    cipherSuites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\", \"TLS_RSA_WITH_AES_128_CBC_SHA\"]\n";
        let loaded = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap();
        let policy = &loaded.config.entry_points["websecure"].tls.as_ref().unwrap().policy;
        assert!(policy.min_tls13 && policy.sni_strict);
        assert_eq!(policy.tls12_suites, Some(vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()]));
        let warned: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
        assert!(warned.iter().any(|w| w.starts_with("t.toml:6:") && w.contains("never negotiated")), "{warned:?}");

        for (bad, at) in [
            ("minVersion = \"TLS13\"", "t.toml:4:"),
            ("cipherSuites = [\"TLS_FAST\"]", "t.toml:4:"),
            ("curvePreferences = [\"P-999\"]", "t.toml:4:"),
            ("alpnProtocols = [\"spdy/3\"]", "t.toml:4:"),
            ("maxVersion = \"VersionTLS12\"\nminVersion = \"VersionTLS13\"", "t.toml:3:"),
            ("[entryPoints.websecure.tls.ClientCA]\nfiles = [\"/nonexistent/ca.pem\"]", "t.toml:5:"),
            ("[entryPoints.websecure.tls.clientAuth]\nclientAuthType = \"RequireAndVerifyClientCert\"", "t.toml:4:"),
            ("[entryPoints.websecure.tls.clientAuth]\nclientAuthType = \"Verify\"", "t.toml:5:"),
        ] {
            let file = format!("[entryPoints.websecure]\naddress = \":443\"\n[entryPoints.websecure.tls]\n{bad}\n");
            let errors = load(Node::from_toml("t.toml", &file, STATIC_NAMES).unwrap()).unwrap_err();
            let errors: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
            assert!(errors.iter().any(|e| e.starts_with(at)), "{bad}: {errors:?}");
        }
    }

    #[test]
    fn traefik_address_forms_parse() {
        assert_eq!(parse_address(":80").unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(parse_address("127.0.0.2:8080").unwrap().to_string(), "127.0.0.2:8080");
        assert_eq!(parse_address("[::1]:443").unwrap().to_string(), "[::1]:443");
        assert!(parse_address("80").is_err());
        assert!(parse_address(":99999").is_err());
        assert!(parse_address("example.com:80").is_err());
    }
}
