//! Distributed ACME. Every replica runs a [`Manager`]: it follows `<prefix>/acme/` to serve
//! every stored certificate and answer every pending HTTP-01 token, and it schedules orders for
//! the names the cluster wants (`[[acme.domains]]`, routers' `Host` rules with `onHostRule`,
//! routers' `tls.domains`). An order runs under that certificate's lock (see [`order`]), so one
//! replica orders while the others wait for the result to appear in the store.

/// Re-runs an instant-acme call while the CA answers `badNonce` (instant-acme itself retries
/// each request only three times; a CA under load may reject more nonces than that). A request
/// rejected for its nonce was not processed, so running it again is safe.
macro_rules! patiently {
    ($call:expr) => {{
        let mut attempts = 0;
        loop {
            match $call {
                Err(err) if $crate::control::acme::bad_nonce(&err) && attempts < 10 => attempts += 1,
                other => break other,
            }
        }
    }};
}

pub mod account;
pub mod admin;
mod ari;
pub mod challenge;
pub mod follow;
mod manager;
pub mod on_demand;
pub mod order;
pub mod progress;
pub mod record;
pub mod sealed;

use crate::{
    config::{model::Domain, StaticConfig},
    control::store::StoreError,
    dynamic::DynamicConfig,
};

pub use manager::Manager;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{domain}: {kind}: {detail}")]
    Problem { domain: String, kind: String, detail: String },
    #[error("{domain}: {detail}")]
    Order { domain: String, detail: String },
    #[error("lost the lock before writing {0}; another replica took over")]
    LockLost(String),
    #[error("KV key {key}: {reason}")]
    Stored { key: String, reason: String },
    #[error("{0}")]
    Setup(String),
}

impl AcmeError {
    /// An instant-acme error, with the ACME problem type when the CA sent one.
    pub fn from_acme(domain: &str, err: instant_acme::Error) -> AcmeError {
        match err {
            instant_acme::Error::Api(problem) => AcmeError::Problem {
                domain: domain.to_string(),
                kind: problem.r#type.unwrap_or_else(|| "problem".into()),
                detail: problem.detail.unwrap_or_default(),
            },
            other => AcmeError::Order { domain: domain.to_string(), detail: other.to_string() },
        }
    }
}

/// The storage keys of `acme.storageEncryptionKey`, else `PYLON_STORAGE_KEY`, else none.
pub fn keyring(acme: &crate::config::model::Acme) -> Result<sealed::Keyring, String> {
    let text = acme.storage_encryption_key.clone().or_else(|| std::env::var("PYLON_STORAGE_KEY").ok());
    sealed::Keyring::parse(text.as_deref().unwrap_or_default()).map_err(|e| format!("acme.storageEncryptionKey: {e}"))
}

/// Whether the CA rejected a request's nonce.
pub fn bad_nonce(err: &instant_acme::Error) -> bool {
    matches!(err, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The certificates the dynamic configuration asks for, by resolver name.
pub type Wanted = std::collections::BTreeMap<String, Vec<Domain>>;

/// The certificates the dynamic configuration asks for: per TLS router that uses ACME (its
/// `tls.certResolver` is set, or its entrypoint's `http.tls.certResolver`, or v1.7's
/// `onHostRule` is on), its `tls.domains`, else its entrypoint's `http.tls.domains`, else the
/// hosts of its rule, as one certificate, for the resolver it names. A router naming a resolver
/// that does not exist gets none (and a warning from [`unknown_resolvers`]).
pub fn wanted(config: &DynamicConfig, statics: &StaticConfig) -> Wanted {
    let mut out = Wanted::new();
    if statics.resolvers.is_empty() {
        return out;
    }
    for router in config.routers.values() {
        let entry_points =
            if router.entry_points.is_empty() { &statics.default_entry_points } else { &router.entry_points };
        let entry_points: Vec<_> = entry_points.iter().filter_map(|ep| statics.entry_points.get(ep)).collect();
        let on_tls_entry_point = entry_points.iter().any(|e| e.tls.is_some());
        let inherited = entry_points.iter().filter_map(|e| e.router_tls.as_ref());
        let named = match &router.tls {
            Some(tls) => tls.cert_resolver.clone(),
            None => inherited.clone().find_map(|t| t.cert_resolver.clone()),
        };
        let host_rule = statics.resolvers.iter().find(|a| a.on_host_rule);
        let resolver = match named {
            Some(name) => statics.resolver(&name),
            None => host_rule.filter(|_| router.tls.is_some() || on_tls_entry_point),
        };
        let Some(resolver) = resolver else { continue };
        let mut domains = router.tls.as_ref().map(|t| t.domains.as_slice()).filter(|d| !d.is_empty());
        if router.tls.is_none() {
            domains = inherited.map(|t| t.domains.as_slice()).find(|d| !d.is_empty());
        }
        let list = out.entry(resolver.name.clone()).or_default();
        match domains {
            Some(domains) => list.extend(domains.iter().cloned()),
            None => {
                let mut hosts = router.rule.hosts().into_iter().filter(|h| valid_name(h));
                if let Some(main) = hosts.next() {
                    list.push(Domain { main, sans: hosts.collect() });
                }
            }
        }
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| a.main.cmp(&b.main));
        list.dedup_by(|a, b| a.main == b.main);
    }
    out
}

/// `router name → resolver name` for each router whose `tls.certResolver` (own or inherited)
/// names no resolver of the static configuration.
pub fn unknown_resolvers(config: &DynamicConfig, statics: &StaticConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, router) in &config.routers {
        let Some(resolver) = router.tls.as_ref().and_then(|t| t.cert_resolver.as_ref()) else { continue };
        if statics.resolver(resolver).is_none() {
            out.push((name.to_string(), resolver.clone()));
        }
    }
    out
}

/// A DNS name a public CA could issue for.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.contains('.')
        && name.parse::<std::net::IpAddr>().is_err()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*')
}

#[cfg(test)]
mod tests {
    use crate::config::{load, tree::STATIC_NAMES, Node};
    use crate::dynamic::{self, DYNAMIC_NAMES};

    #[test]
    fn routers_inherit_their_entrypoints_cert_resolver_and_domains() {
        let statics = r#"
            [entryPoints.websecure]
            address = ":443"
            [entryPoints.websecure.http.tls]
            certResolver = "le"
            [[entryPoints.websecure.http.tls.domains]]
            main = "example.com"
            sans = ["*.example.com"]
            [entryPoints.web]
            address = ":80"
            [acme]
            email = "ops@example.com"
            entryPoint = "websecure"
            [acme.httpChallenge]
            entryPoint = "web"
        "#;
        let statics = load(Node::from_toml("s.toml", statics, STATIC_NAMES).unwrap()).unwrap().config;
        let routers = r#"
            [http.routers.inherits]
            rule = "Host(`a.example.com`)"
            service = "s"
            entryPoints = ["websecure"]
            [http.routers.own]
            rule = "Host(`own.example.org`)"
            service = "s"
            entryPoints = ["websecure"]
            tls = { certResolver = "le" }
            [http.routers.plain]
            rule = "Host(`plain.example.net`)"
            service = "s"
            entryPoints = ["web"]
            [http.services.s.loadBalancer]
            servers = [{ url = "http://127.0.0.1:9" }]
        "#;
        let config = dynamic::build(Node::from_toml("d.toml", routers, DYNAMIC_NAMES).unwrap());
        let wanted: Vec<(String, Vec<String>)> =
            super::wanted(&config, &statics)["acme"].iter().map(|d| (d.main.clone(), d.sans.clone())).collect();
        assert_eq!(
            wanted,
            [("example.com".into(), vec!["*.example.com".to_string()]), ("own.example.org".into(), vec![])]
        );
    }

    #[test]
    fn each_router_gets_its_certificate_from_the_resolver_it_names() {
        let statics = r#"
            entryPoints:
              web: { address: ":80" }
              websecure: { address: ":443", http: { tls: { certResolver: alpn } } }
            certificatesResolvers:
              http01: { acme: { email: ops@example.com, httpChallenge: { entryPoint: web } } }
              alpn: { acme: { email: ops@example.com, tlsChallenge: {} } }
        "#;
        let statics = load(Node::from_yaml("s.yml", statics, STATIC_NAMES).unwrap()).unwrap().config;
        let routers = r#"
            [http.routers.a]
            rule = "Host(`a.example.com`)"
            service = "s"
            tls = { certResolver = "http01" }
            [http.routers.b]
            rule = "Host(`b.example.com`)"
            service = "s"
            entryPoints = ["websecure"]
            [http.routers.c]
            rule = "Host(`c.example.com`)"
            service = "s"
            tls = { certResolver = "nope" }
            [http.services.s.loadBalancer]
            servers = [{ url = "http://127.0.0.1:9" }]
        "#;
        let config = dynamic::build(Node::from_toml("d.toml", routers, DYNAMIC_NAMES).unwrap());
        let wanted = super::wanted(&config, &statics);
        let mains = |r: &str| wanted[r].iter().map(|d| d.main.clone()).collect::<Vec<_>>();
        assert_eq!(mains("http01"), ["a.example.com"]);
        assert_eq!(mains("alpn"), ["b.example.com"], "b inherits its entrypoint's resolver");
        assert_eq!(wanted.len(), 2, "no resolver is named nope");
        let unknown = super::unknown_resolvers(&config, &statics);
        assert_eq!(unknown, [("c".to_string(), "nope".to_string())]);
    }
}
