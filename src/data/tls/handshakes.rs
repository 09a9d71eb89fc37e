//! Which TLS options a handshake gets, as Traefik chooses them: on each entrypoint, the
//! options a host's routers name (`tls.options`, matched by their `Host` rules) for a
//! ClientHello whose SNI is that host, the `default` options for every other name; each set
//! merged with the entrypoint's own settings, which options can only make stricter. Then, per
//! request, the check that the `Host` is served under the very configuration its connection
//! was made under (`421 Misdirected Request` otherwise): an SNI cannot open a host's routers
//! under another host's weaker options, and a connection made before a host's options changed
//! is sent to make a new one. Built by the control plane, read from the snapshot.

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

/// One configuration a handshake can get. A rebuild that leaves a set of names with the same
/// policy keeps its `Chosen`, so connections made under it stay valid across reloads.
pub struct Chosen {
    /// The option names it enforces.
    pub names: Vec<String>,
    policy: TlsPolicy,
    pub config: Arc<ServerConfig>,
}

/// What a served TLS connection was made under, for the check of each of its requests.
#[derive(Clone)]
pub struct Session {
    /// The SNI, lowercase without a trailing dot; empty when the client sent none.
    pub server_name: Box<str>,
    pub chosen: Arc<Chosen>,
}

impl Chosen {
    /// True when no handshake can satisfy its settings together: every one fails.
    pub fn refuses(&self) -> bool {
        self.policy.impossible().is_some()
    }
}

impl Handshakes {
    /// Builds every entrypoint's configurations: `floors` are the entrypoints' own settings,
    /// `options` the valid named options, `wanted` what each host's routers name; `previous`'s
    /// configurations are kept where nothing changed. Returns a warning for each host whose
    /// routers name different options (it gets all of them) and for each set that cannot be
    /// enforced (its handshakes fail).
    pub fn build(
        plane: &Arc<Plane>,
        floors: &BTreeMap<String, TlsPolicy>,
        options: &BTreeMap<String, TlsPolicy>,
        wanted: &WantedOptions,
        previous: &Handshakes,
    ) -> (Handshakes, Vec<String>) {
        let mut warnings = Vec::new();
        let mut out = Handshakes::default();
        let none = HashMap::new();
        for (ep, floor) in floors {
            let before: Vec<&Arc<Chosen>> = previous
                .by_entry_point
                .get(ep)
                .map(|c| std::iter::once(&c.default).chain(c.by_host.values()).collect())
                .unwrap_or_default();
            let mut made: HashMap<Vec<String>, Arc<Chosen>> = HashMap::new();
            let mut make = |names: Vec<String>, warnings: &mut Vec<String>| {
                if let Some(chosen) = made.get(&names) {
                    return chosen.clone();
                }
                let policies = names.iter().map(|n| options.get(n).unwrap_or(&NO_OPTIONS));
                let policy = TlsPolicy::strictest(std::iter::once(floor).chain(policies));
                let kept = before.iter().find(|c| c.names == names && c.policy == policy).map(|c| Arc::clone(c));
                let chosen = kept.unwrap_or_else(|| {
                    if let Some(why) = policy.impossible() {
                        warnings.push(format!(
                            "entrypoint {ep:?}: TLS options {} with the entrypoint's settings cannot be enforced ({why}); their handshakes fail",
                            names.join(", ")
                        ));
                    }
                    Arc::new(chosen(plane, names.clone(), policy))
                });
                made.insert(names, chosen.clone());
                chosen
            };
            let default = make(vec![DEFAULT.to_string()], &mut warnings);
            let mut by_host = HashMap::new();
            for (host, names) in wanted.get(ep).unwrap_or(&none) {
                let names: Vec<String> = names.iter().cloned().collect();
                if names.len() > 1 {
                    warnings.push(format!(
                        "entrypoint {ep:?}: routers on host {host:?} name different TLS options ({}); the host gets all of them at once",
                        names.join(", ")
                    ));
                }
                by_host.insert(host.clone(), make(names, &mut warnings));
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

    /// Whether a request for `host` (lowercase, port and trailing dot stripped) may be served
    /// on a connection made under `session`: only if the host is served under that very
    /// configuration now (Traefik's SNI check, also after a reload changed the host's options).
    pub fn allows(&self, entry_point: &str, session: &Session, host: &str) -> bool {
        match self.choose(entry_point, Some(host)) {
            Some(chosen) => Arc::ptr_eq(chosen, &session.chosen),
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

/// A configuration enforcing `policy`, or, when no handshake could satisfy it, one whose
/// handshakes all fail (no certificate is offered): refused, never served weaker.
fn chosen(plane: &Arc<Plane>, names: Vec<String>, policy: TlsPolicy) -> Chosen {
    let refuse = policy.impossible().is_some();
    let enforced = if refuse { TlsPolicy::default() } else { policy.clone() };
    let resolver = Arc::new(Resolver { plane: Arc::downgrade(plane), sni_strict: policy.sni_strict, refuse });
    Chosen { names, config: Arc::new(enforced.server_config(resolver)), policy }
}

/// The configuration an entrypoint serves before the control plane has built any: its own
/// settings with the default options.
pub fn fallback(plane: &Arc<Plane>, floor: &TlsPolicy) -> Arc<Chosen> {
    Arc::new(chosen(plane, vec![DEFAULT.to_string()], floor.clone()))
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
        let options = BTreeMap::from([("modern".to_string(), modern.clone())]);
        let wanted = wanted(&[("s.example", &["modern"]), ("b.example", &["default", "modern"])]);
        let (h, warnings) = Handshakes::build(&plane, &floors, &options, &wanted, &Handshakes::default());
        let names = |sni: Option<&str>| h.choose("websecure", sni).map(|c| c.names.join("+"));
        assert_eq!(names(Some("s.example")).as_deref(), Some("modern"));
        assert_eq!(names(Some("b.example")).as_deref(), Some("default+modern"));
        assert!(warnings[0].contains("b.example") && warnings[0].contains("default, modern"), "{warnings:?}");
        assert_eq!(names(Some("other.example")).as_deref(), Some("default"));
        assert_eq!(names(None).as_deref(), Some("default"));
        assert!(h.choose("web", None).is_none(), "only entrypoints with a floor");
        let modern_config = &h.choose("websecure", Some("s.example")).unwrap().config;
        assert!(modern_config.alpn_protocols.iter().any(|p| p == b"h2"));

        let on = |h: &Handshakes, sni: &str| Session {
            server_name: sni.into(),
            chosen: h.choose("websecure", Some(sni).filter(|s| !s.is_empty())).unwrap().clone(),
        };
        assert!(!h.allows("websecure", &on(&h, "other.example"), "s.example"), "fronting refused");
        assert!(h.allows("websecure", &on(&h, "s.example"), "s.example"));
        assert!(h.allows("websecure", &on(&h, "other.example"), "third.example"), "same options");
        assert!(h.allows("websecure", &on(&h, ""), "other.example"), "no SNI: the default options");
        assert!(!h.allows("websecure", &on(&h, ""), "s.example"));

        // A rebuild keeps what did not change; a connection made under changed options is sent
        // to make a new one.
        let session = on(&h, "s.example");
        let (same, _) = Handshakes::build(&plane, &floors, &options, &wanted, &h);
        assert!(same.allows("websecure", &session, "s.example"), "unchanged across a reload");
        let stricter = TlsPolicy { sni_strict: true, ..modern };
        let options = BTreeMap::from([("modern".to_string(), stricter)]);
        let (changed, _) = Handshakes::build(&plane, &floors, &options, &wanted, &same);
        assert!(!changed.allows("websecure", &session, "s.example"), "its options changed");
    }

    #[test]
    fn options_that_cannot_be_enforced_together_refuse_their_handshakes() {
        use super::super::policy::Curve;
        let plane = Plane::new(super::super::Loaded::self_signed(&["default.example"]).unwrap().key);
        let floor = TlsPolicy { curves: Some(vec![Curve::P384]), ..TlsPolicy::default() };
        let floors = BTreeMap::from([("websecure".to_string(), floor)]);
        let options =
            BTreeMap::from([("x".to_string(), TlsPolicy { curves: Some(vec![Curve::X25519]), ..Default::default() })]);
        let (h, warnings) =
            Handshakes::build(&plane, &floors, &options, &wanted(&[("s.example", &["x"])]), &Handshakes::default());
        assert!(warnings.iter().any(|w| w.contains("cannot be enforced")), "{warnings:?}");
        assert!(h.choose("websecure", Some("s.example")).unwrap().refuses());
        assert!(!h.choose("websecure", None).unwrap().refuses(), "default alone is fine");
    }
}
