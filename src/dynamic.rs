//! Dynamic configuration: routers, services and certificates, validated into an immutable model.
//! It comes from the store (Traefik v3's KV layout) or a file-provider file, through the same
//! located source tree as the static configuration. A router or service with an invalid key is
//! rejected alone, with a diagnostic naming the key; so are routers and services that refer to
//! a rejected or missing service. Everything else is kept.

pub mod file;
pub mod from_file;
mod parts;
pub mod runtime;

pub use parts::{Owner, Parts};

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use crate::{
    config::{
        model::Domain,
        tree::{NamedTables, Origin},
        Checker, Diagnostic, Node,
    },
    data::routing::rule::Rule,
};
use file::*;

/// Tables of user-chosen names in the dynamic configuration.
pub const DYNAMIC_NAMES: NamedTables = &[
    &["http", "routers"],
    &["http", "services"],
    &["http", "middlewares"],
    &["tls", "stores"],
    &["tls", "options"],
    &["http", "services", "*", "loadbalancer", "healthcheck", "headers"],
    &["http", "middlewares", "*", "errors", "statusrewrites"],
];

#[derive(Debug, Default)]
pub struct DynamicConfig {
    pub routers: BTreeMap<String, Router>,
    pub services: BTreeMap<String, Service>,
    /// The valid middlewares; routers that name one that is not here were disabled.
    pub middlewares: BTreeMap<String, crate::data::middleware::Spec>,
    /// PEM contents or file paths, as given.
    pub certificates: Vec<Certificate>,
    pub default_certificate: Option<Certificate>,
    /// `tls.options.<name>`: each set of TLS options, `None` when it is invalid (and had no
    /// last good version): a router that would be served under it is not served over TLS.
    pub tls_options: BTreeMap<String, Option<crate::data::tls::TlsPolicy>>,
    /// What was left out, and why: one diagnostic per rejected router or service.
    pub rejected: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// Every router, service and middleware, served or not, with its status: the API's view.
    pub runtime: runtime::Runtime,
}

#[derive(Debug, Clone)]
pub struct Router {
    pub rule: Rule,
    pub rule_text: String,
    pub service: String,
    /// Empty: the static configuration's default entrypoints.
    pub entry_points: Vec<String>,
    pub middlewares: Vec<String>,
    /// Higher wins; defaults to the rule's length, as in Traefik.
    pub priority: u64,
    pub tls: Option<RouterTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouterTls {
    pub cert_resolver: Option<String>,
    /// The TLS options it is served under, unqualified; `None`: the entrypoint's, or `default`.
    pub options: Option<String>,
    pub domains: Vec<Domain>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Service {
    LoadBalancer(LoadBalancer),
    Weighted(Weighted),
    Mirroring(Mirroring),
    Failover(Failover),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancer {
    pub servers: Vec<Server>,
    pub pass_host_header: bool,
    pub health_check: Option<HealthCheck>,
    pub sticky: Option<Cookie>,
    pub flush_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub url: http::Uri,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub port: Option<u16>,
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub method: http::Method,
    /// The status that means healthy; any 2xx or 3xx when `None`.
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cookie {
    pub name: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<String>,
    pub path: String,
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Weighted {
    pub services: Vec<(String, u32)>,
    pub sticky: Option<Cookie>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mirroring {
    pub service: String,
    /// (service, percent of requests mirrored)
    pub mirrors: Vec<(String, u32)>,
    pub max_body_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    pub service: String,
    pub fallback: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
}

impl Service {
    /// The services this one sends requests to.
    pub fn references(&self) -> Vec<&str> {
        match self {
            Service::LoadBalancer(_) => vec![],
            Service::Weighted(w) => w.services.iter().map(|(n, _)| n.as_str()).collect(),
            Service::Mirroring(m) => {
                std::iter::once(m.service.as_str()).chain(m.mirrors.iter().map(|(n, _)| n.as_str())).collect()
            }
            Service::Failover(f) => vec![f.service.as_str(), f.fallback.as_str()],
        }
    }
}

/// The key Pylon keeps an object under. Traefik qualifies names with their provider
/// (`web@etcd`, `api@file`): the store's objects are kept by their plain name, whichever store
/// name qualifies them, and the file provider's as `name@file` (see [`from_file`]).
pub fn unqualified(name: &str) -> &str {
    match name.split_once('@') {
        Some((_, "file")) | None => name,
        Some((plain, _)) => plain,
    }
}

/// Validates a source tree (keys as `http.routers.<r>...`, `tls.certificates...`).
pub fn build(tree: Node) -> DynamicConfig {
    Parts::from_tree(tree).assemble()
}

fn certificate(raw: RawCertificate) -> Option<Certificate> {
    Some(Certificate { cert: raw.certfile.filter(|s| !s.is_empty())?, key: raw.keyfile.filter(|s| !s.is_empty())? })
}

fn router(raw: &RawRouter, path: &str, c: &mut Checker) -> Option<Router> {
    let Some(rule_text) = raw.rule.clone() else {
        c.error(path, "a router needs a rule");
        return None;
    };
    let rule = match Rule::parse(&rule_text) {
        Ok(rule) => rule,
        Err(err) => {
            c.error(&format!("{path}.rule"), format!("rule {}: {err}", crate::limits::shown(&rule_text)));
            return None;
        }
    };
    let Some(service) = raw.service.clone().filter(|s| !s.is_empty()) else {
        c.error(path, "a router needs a service");
        return None;
    };
    let tls = raw.tls.as_ref().map(|t| RouterTls {
        cert_resolver: t.certresolver.clone(),
        options: t.options.as_deref().map(unqualified).filter(|o| !o.is_empty()).map(String::from),
        domains: t
            .domains
            .iter()
            .filter_map(|d| {
                Some(Domain { main: d.main.clone()?.to_ascii_lowercase(), sans: d.sans.clone().unwrap_or_default() })
            })
            .collect(),
    });
    Some(Router {
        priority: raw.priority.unwrap_or(rule_text.chars().count() as u64),
        rule,
        rule_text,
        service,
        entry_points: raw.entrypoints.clone().unwrap_or_default(),
        middlewares: raw.middlewares.clone().unwrap_or_default(),
        tls,
    })
}

fn service(raw: &RawService, path: &str, c: &mut Checker) -> Option<Service> {
    let kinds = [raw.loadbalancer.is_some(), raw.weighted.is_some(), raw.mirroring.is_some(), raw.failover.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        c.error(path, "a service needs exactly one of loadBalancer, weighted, mirroring or failover");
        return None;
    }
    let named = |name: &Option<String>, at: &str, c: &mut Checker| match name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => Some(unqualified(n).to_string()),
        None => {
            c.error(at, "needs a service name");
            None
        }
    };
    if let Some(lb) = &raw.loadbalancer {
        return load_balancer(lb, &format!("{path}.loadbalancer"), c).map(Service::LoadBalancer);
    }
    if let Some(w) = &raw.weighted {
        let mut services = Vec::new();
        for (i, s) in w.services.iter().enumerate() {
            let at = format!("{path}.weighted.services.{i}");
            services.push((named(&s.name, &at, c)?, weight(s.weight, &at, c)?));
        }
        let sticky = w.sticky.as_ref().and_then(|s| s.cookie.as_ref()).map(cookie);
        return Some(Service::Weighted(Weighted { services, sticky }));
    }
    if let Some(m) = &raw.mirroring {
        let at = format!("{path}.mirroring");
        let service = named(&m.service, &format!("{at}.service"), c)?;
        let mut mirrors = Vec::new();
        for (i, mirror) in m.mirrors.iter().enumerate() {
            let at = format!("{at}.mirrors.{i}");
            let percent = mirror.percent.unwrap_or(0);
            if percent > 100 {
                c.error(&format!("{at}.percent"), format!("percent {percent} is over 100"));
                return None;
            }
            mirrors.push((named(&mirror.name, &at, c)?, percent as u32));
        }
        return Some(Service::Mirroring(Mirroring { service, mirrors, max_body_size: m.maxbodysize }));
    }
    let f = raw.failover.as_ref()?;
    let service = named(&f.service, &format!("{path}.failover.service"), c)?;
    let fallback = named(&f.fallback, &format!("{path}.failover.fallback"), c)?;
    Some(Service::Failover(Failover { service, fallback }))
}

fn weight(raw: Option<u64>, at: &str, c: &mut Checker) -> Option<u32> {
    match u32::try_from(raw.unwrap_or(1)) {
        Ok(w) => Some(w),
        Err(_) => {
            c.error(&format!("{at}.weight"), "weight is too large");
            None
        }
    }
}

fn cookie(raw: &RawCookie) -> Cookie {
    Cookie {
        name: raw.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "_pylon_sticky".to_string()),
        secure: raw.secure.unwrap_or(false),
        http_only: raw.httponly.unwrap_or(false),
        same_site: raw.samesite.clone(),
        path: raw.path.clone().unwrap_or_else(|| "/".to_string()),
        max_age: raw.maxage,
    }
}

fn load_balancer(raw: &RawLoadBalancer, path: &str, c: &mut Checker) -> Option<LoadBalancer> {
    let mut servers = Vec::new();
    for (i, s) in raw.servers.iter().enumerate() {
        let at = format!("{path}.servers.{i}");
        let text = s.url.clone().unwrap_or_default();
        let url = match text.parse::<http::Uri>() {
            Ok(url) if matches!(url.scheme_str(), Some("http" | "https" | "h2c")) && url.host().is_some() => url,
            _ => {
                c.error(
                    &format!("{at}.url"),
                    format!("{} is not an http://, https:// or h2c:// URL", crate::limits::shown(&text)),
                );
                return None;
            }
        };
        servers.push(Server { url, weight: weight(s.weight, &at, c)? });
    }
    let health_check = match &raw.healthcheck {
        None => None,
        Some(h) => Some(health_check(h, &format!("{path}.healthcheck"), c)?),
    };
    Some(LoadBalancer {
        servers,
        pass_host_header: raw.passhostheader.unwrap_or(true),
        health_check,
        sticky: raw.sticky.as_ref().and_then(|s| s.cookie.as_ref()).map(cookie),
        flush_interval: raw.responseforwarding.as_ref().and_then(|r| r.flushinterval),
    })
}

fn health_check(raw: &RawHealthCheck, path: &str, c: &mut Checker) -> Option<HealthCheck> {
    let check_path = raw.path.clone().unwrap_or_default();
    if !check_path.starts_with('/') {
        c.error(&format!("{path}.path"), format!("health check path {check_path:?} must start with /"));
        return None;
    }
    let port = match raw.port.map(u16::try_from) {
        Some(Err(_)) => {
            c.error(&format!("{path}.port"), "port is out of range");
            return None;
        }
        other => other.and_then(Result::ok),
    };
    let method = raw.method.as_deref().unwrap_or("GET");
    let Ok(method) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        c.error(&format!("{path}.method"), format!("invalid method {method:?}"));
        return None;
    };
    Some(HealthCheck {
        path: check_path,
        interval: raw.interval.unwrap_or(Duration::from_secs(30)),
        timeout: raw.timeout.unwrap_or(Duration::from_secs(5)),
        port,
        scheme: raw.scheme.clone(),
        hostname: raw.hostname.clone(),
        method,
        status: raw.status.and_then(|s| u16::try_from(s).ok()),
        headers: raw.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

/// Removes services that refer to missing services or sit on a reference cycle, until none do;
/// one diagnostic per removed service, located by `origin_of`.
fn drop_broken_references(
    services: &mut BTreeMap<String, Service>,
    origin_of: impl Fn(&str) -> Origin,
) -> Vec<Diagnostic> {
    let mut rejected = Vec::new();
    loop {
        let names: BTreeSet<String> = services.keys().cloned().collect();
        let broken: Vec<(String, String)> = services
            .iter()
            .filter_map(|(name, s)| {
                let missing = s.references().into_iter().find(|r| !names.contains(*r))?;
                Some((
                    name.clone(),
                    format!(
                        "service {name:?} rejected: it refers to {missing:?}, which does not exist or was rejected"
                    ),
                ))
            })
            .chain(
                cycles(services)
                    .into_iter()
                    .map(|name| (name.clone(), format!("service {name:?} rejected: its references form a cycle"))),
            )
            .collect();
        if broken.is_empty() {
            return rejected;
        }
        for (name, message) in broken {
            if services.remove(&name).is_some() {
                rejected.push(Diagnostic { origin: origin_of(&name), message });
            }
        }
    }
}

/// Services from which following references leads back to themselves.
fn cycles(services: &BTreeMap<String, Service>) -> Vec<String> {
    let reaches_itself = |start: &str| {
        let mut stack: Vec<&str> = services.get(start).map(Service::references).unwrap_or_default();
        let mut seen = BTreeSet::new();
        while let Some(name) = stack.pop() {
            if name == start {
                return true;
            }
            if seen.insert(name) {
                stack.extend(services.get(name).map(Service::references).unwrap_or_default());
            }
        }
        false
    };
    services.keys().filter(|n| reaches_itself(n)).cloned().collect()
}

#[cfg(test)]
mod tests;
