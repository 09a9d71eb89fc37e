//! Which TLS options a handshake gets, as Traefik chooses them: on each entrypoint, the
//! options a host's routers name (`tls.options`, matched by their `Host` rules) for a
//! ClientHello whose SNI is that host, the `default` options for every other name; each set
//! merged with the entrypoint's own settings, which options can only make stricter. Then, per
//! request, the check that the `Host` asks for the options its connection was made under
//! (`421 Misdirected Request` otherwise), so that an SNI cannot open a host's routers under
//! another host's weaker options. Built by the control plane, read from the snapshot.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use rustls::ServerConfig;

use super::{Resolver, TlsPolicy};
use crate::data::plane::Plane;

/// The name of the options routers get when they name none.
pub const DEFAULT: &str = "default";

/// Per entrypoint, per host: the option names its TLS routers ask for (only hosts with a name
/// other than `default`; every other host gets `default`).
pub type WantedOptions = HashMap<String, HashMap<String, BTreeSet<String>>>;

/// Every entrypoint's handshake configurations.
#[derive(Default)]
pub struct Handshakes {
    by_entry_point: HashMap<String, Choice>,
}

struct Choice {
    default: Arc<Chosen>,
    by_host: HashMap<String, Arc<Chosen>>,
}

/// One configuration a handshake can get.
pub struct Chosen {
    /// The option names it enforces, `+`-joined (`default`, `mtls`, `a+b`): what a request's
    /// host is compared with.
    pub key: Arc<str>,
    pub config: Arc<ServerConfig>,
}

/// What a served TLS connection was made under, for the check of each of its requests.
#[derive(Clone)]
pub struct Session {
    /// The SNI, lowercase without a trailing dot; empty when the client sent none.
    pub server_name: Box<str>,
    pub key: Arc<str>,
}

impl Handshakes {
    /// Builds every entrypoint's configurations: `floors` are the entrypoints' own settings,
    /// `options` the valid named options, `wanted` what each host's routers name. Returns a
    /// warning for each host whose routers name different options (it gets all of them).
    pub fn build(
        plane: &Arc<Plane>,
        floors: &BTreeMap<String, TlsPolicy>,
        options: &BTreeMap<String, TlsPolicy>,
        wanted: &WantedOptions,
    ) -> (Handshakes, Vec<String>) {
        let mut warnings = Vec::new();
        let mut out = Handshakes::default();
        let none = HashMap::new();
        for (ep, floor) in floors {
            let mut made: HashMap<Vec<String>, Arc<Chosen>> = HashMap::new();
            let mut make = |names: Vec<String>| {
                made.entry(names)
                    .or_insert_with_key(|names| {
                        let policies = names.iter().map(|n| options.get(n).unwrap_or(&NO_OPTIONS));
                        let policy = TlsPolicy::strictest(std::iter::once(floor).chain(policies));
                        Arc::new(chosen(plane, names, policy))
                    })
                    .clone()
            };
            let default = make(vec![DEFAULT.to_string()]);
            let mut by_host = HashMap::new();
            for (host, names) in wanted.get(ep).unwrap_or(&none) {
                let names: Vec<String> = names.iter().cloned().collect();
                if names.len() > 1 {
                    warnings.push(format!(
                        "entrypoint {ep:?}: routers on host {host:?} name different TLS options ({}); the host gets all of them at once",
                        names.join(", ")
                    ));
                }
                by_host.insert(host.clone(), make(names));
            }
            out.by_entry_point.insert(ep.clone(), Choice { default, by_host });
        }
        (out, warnings)
    }

    /// The configuration for a ClientHello on `entry_point` naming `server_name` (lowercase,
    /// no trailing dot); `None` before the control plane built any.
    pub fn choose(&self, entry_point: &str, server_name: Option<&str>) -> Option<&Arc<Chosen>> {
        let choice = self.by_entry_point.get(entry_point)?;
        Some(server_name.and_then(|n| choice.by_host.get(n)).unwrap_or(&choice.default))
    }

    /// Whether a request for `host` (lowercase, port stripped) may be served on a connection
    /// made under `session`: the same name, or a host whose options are the same (Traefik's
    /// SNI check, which also lets `host.` stand for `host`).
    pub fn allows(&self, entry_point: &str, session: &Session, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        if host == &*session.server_name {
            return true;
        }
        match self.choose(entry_point, Some(host)) {
            Some(chosen) => chosen.key == session.key,
            None => true,
        }
    }
}

/// What the options a router names but nobody defined mean: `default` with no keys.
static NO_OPTIONS: TlsPolicy = TlsPolicy {
    min_tls13: false,
    tls12_suites: None,
    sni_strict: false,
    client_auth: None,
    max_tls12: false,
    curves: None,
    alpn: None,
    no_session_tickets: false,
};

fn chosen(plane: &Arc<Plane>, names: &[String], mut policy: TlsPolicy) -> Chosen {
    if policy.impossible().is_some() {
        // Only a ceiling can make a merge impossible (floors win over ceilings): drop it.
        policy.max_tls12 = false;
    }
    let resolver = Arc::new(Resolver { plane: Arc::downgrade(plane), sni_strict: policy.sni_strict });
    Chosen { key: names.join("+").into(), config: Arc::new(policy.server_config(resolver)) }
}

/// The configuration an entrypoint serves before the control plane has built any: its own
/// settings with the default options.
pub fn fallback(plane: &Arc<Plane>, floor: &TlsPolicy) -> Arc<ServerConfig> {
    chosen(plane, &[DEFAULT.to_string()], floor.clone()).config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(hosts: &[(&str, &[&str])]) -> WantedOptions {
        let by_host = hosts.iter().map(|(h, names)| (h.to_string(), names.iter().map(|n| n.to_string()).collect()));
        HashMap::from([("websecure".to_string(), by_host.collect())])
    }

    #[test]
    fn each_host_gets_its_routers_options_and_other_names_the_default() {
        let plane = Plane::new(super::super::Loaded::self_signed(&["default.example"]).unwrap().key);
        let floors = BTreeMap::from([("websecure".to_string(), TlsPolicy::default())]);
        let modern = TlsPolicy { min_tls13: true, ..TlsPolicy::default() };
        let options = BTreeMap::from([("modern".to_string(), modern)]);
        let wanted = wanted(&[("s.example", &["modern"]), ("b.example", &["default", "modern"])]);
        let (h, warnings) = Handshakes::build(&plane, &floors, &options, &wanted);
        let key = |sni: Option<&str>| h.choose("websecure", sni).map(|c| c.key.to_string());
        assert_eq!(key(Some("s.example")).as_deref(), Some("modern"));
        assert_eq!(key(Some("b.example")).as_deref(), Some("default+modern"));
        assert!(warnings[0].contains("b.example") && warnings[0].contains("default, modern"), "{warnings:?}");
        assert_eq!(key(Some("other.example")).as_deref(), Some("default"));
        assert_eq!(key(None).as_deref(), Some("default"));
        assert!(h.choose("web", None).is_none(), "only entrypoints with a floor");
        let modern_config = &h.choose("websecure", Some("s.example")).unwrap().config;
        assert!(modern_config.alpn_protocols.iter().any(|p| p == b"h2"));

        let on = |sni: &str, key: &str| Session { server_name: sni.into(), key: key.into() };
        assert!(!h.allows("websecure", &on("other.example", "default"), "s.example"), "fronting refused");
        assert!(h.allows("websecure", &on("s.example", "modern"), "s.example."), "a trailing dot is the same host");
        assert!(h.allows("websecure", &on("other.example", "default"), "third.example"), "same options");
        assert!(h.allows("websecure", &on("", "default"), "other.example"), "no SNI: the default options");
        assert!(!h.allows("websecure", &on("", "default"), "s.example"));
    }
}
