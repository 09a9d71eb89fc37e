//! The dynamic configuration decoded one owner at a time (a router, a service, a middleware, a
//! set of TLS options, or the rest: `tls/certificates`, `tls/stores`), and kept decoded: when one key changes, only its owner is decoded again,
//! and [`Parts::assemble`] checks the references between owners. This is what keeps a change
//! cheap in a table of 10,000 routers.

use std::collections::BTreeMap;

use crate::{
    config::{tree::Origin, Checker, Diagnostic, Node},
    data::middleware::{self, Spec},
};

use super::file::{RawCertificate, RawRouter, RawService, RawTlsStore};
use super::runtime::{Info, Runtime};
use super::{certificate, drop_broken_references, router, service, unqualified, DynamicConfig, Router, Service};
use crate::{config::file::RawTls, data::tls::TlsPolicy};

/// Whose settings a dynamic key holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Router(String),
    Service(String),
    Middleware(String),
    /// `tls/options/<name>/...`.
    TlsOptions(String),
    /// `tls/...` and anything else.
    Rest,
    /// The file provider's `tls.certificates` and `tls.stores`, every file's together.
    FileRest,
}

impl Owner {
    /// The owner of a key path below the prefix (`["http", "routers", "web", "rule"]`).
    pub fn of(path: &[String]) -> Owner {
        match path {
            [http, kind, name, ..] if http.eq_ignore_ascii_case("http") => match kind.to_ascii_lowercase().as_str() {
                "routers" => Owner::Router(name.clone()),
                "services" => Owner::Service(name.clone()),
                "middlewares" => Owner::Middleware(name.clone()),
                _ => Owner::Rest,
            },
            [tls, options, name, ..] if tls.eq_ignore_ascii_case("tls") && options.eq_ignore_ascii_case("options") => {
                Owner::TlsOptions(name.clone())
            }
            _ => Owner::Rest,
        }
    }
}

/// One owner's decoded settings with what its decoding said.
#[derive(Debug)]
struct Decoded<T> {
    /// The settings in force: the ones just decoded, or, when they are invalid, the last good
    /// ones (and an error saying so); `None` when the owner never had a good version.
    value: Option<T>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Where a broken reference of this owner is reported (a router's `service` key).
    origin: Origin,
    /// Where a router's `middlewares` list came from.
    middlewares_at: Origin,
    /// Its keys as JSON, for the API; `Null` when they could not be read as a tree.
    raw: serde_json::Value,
}

#[derive(Debug, Default)]
struct Rest {
    certificates: Vec<super::Certificate>,
    default_certificate: Option<super::Certificate>,
}

/// Every owner's decoded settings.
#[derive(Default)]
pub struct Parts {
    routers: BTreeMap<String, Decoded<Router>>,
    services: BTreeMap<String, Decoded<Service>>,
    middlewares: BTreeMap<String, Decoded<Spec>>,
    tls_options: BTreeMap<String, Decoded<TlsPolicy>>,
    rest: Option<Decoded<Rest>>,
    file_rest: Option<Decoded<Rest>>,
}

impl Parts {
    /// Decodes a whole tree (a file, or a full listing).
    pub fn from_tree(tree: Node) -> Parts {
        let (value, origins) = tree.into_value();
        let mut c = Checker::new(origins);
        let mut parts = Parts::default();
        let http = value.get("http").and_then(|v| v.as_table());
        for (kind, owner) in [
            ("routers", Owner::Router as fn(String) -> Owner),
            ("services", Owner::Service),
            ("middlewares", Owner::Middleware),
        ] {
            for (name, raw) in http.and_then(|h| h.get(kind)).and_then(|v| v.as_table()).into_iter().flatten() {
                parts.decode(owner(name.clone()), raw, &mut c);
            }
        }
        let options = value.get("tls").and_then(|t| t.get("options")).and_then(|v| v.as_table());
        for (name, raw) in options.into_iter().flatten() {
            parts.decode(Owner::TlsOptions(name.clone()), raw, &mut c);
        }
        parts.decode(Owner::Rest, &value, &mut c);
        parts
    }

    /// Decodes one owner again from the tree of its own keys; `None` when it has no key left.
    pub fn update(&mut self, owner: Owner, tree: Option<Node>) {
        let Some(tree) = tree else {
            match owner {
                Owner::Router(name) => drop(self.routers.remove(&name)),
                Owner::Service(name) => drop(self.services.remove(&name)),
                Owner::Middleware(name) => drop(self.middlewares.remove(&name)),
                Owner::TlsOptions(name) => drop(self.tls_options.remove(&name)),
                Owner::Rest => self.rest = None,
                Owner::FileRest => self.file_rest = None,
            }
            return;
        };
        let (value, origins) = tree.into_value();
        let mut c = Checker::new(origins);
        let raw = match &owner {
            Owner::Router(name) => value.get("http").and_then(|h| h.get("routers")).and_then(|r| r.get(name)),
            Owner::Service(name) => value.get("http").and_then(|h| h.get("services")).and_then(|s| s.get(name)),
            Owner::Middleware(name) => value.get("http").and_then(|h| h.get("middlewares")).and_then(|m| m.get(name)),
            Owner::TlsOptions(name) => value.get("tls").and_then(|t| t.get("options")).and_then(|o| o.get(name)),
            Owner::Rest | Owner::FileRest => Some(&value),
        };
        match raw {
            Some(raw) => self.decode(owner, raw, &mut c),
            None => self.update(owner, None),
        }
    }

    /// Records that one owner's keys could not be read as a tree (`diagnostic` says why): it
    /// keeps its last good version, if it had one.
    pub fn reject(&mut self, owner: Owner, diagnostic: Diagnostic) {
        let at = diagnostic.origin.clone();
        match owner {
            Owner::Router(name) => keep_last_good(&mut self.routers, name, Decoded::failed(diagnostic), "router", at),
            Owner::Service(name) => {
                keep_last_good(&mut self.services, name, Decoded::failed(diagnostic), "service", at)
            }
            Owner::Middleware(name) => {
                keep_last_good(&mut self.middlewares, name, Decoded::failed(diagnostic), "middleware", at)
            }
            Owner::TlsOptions(name) => {
                keep_last_good(&mut self.tls_options, name, Decoded::failed(diagnostic), "TLS options", at)
            }
            Owner::Rest => self.rest = Some(Decoded::failed(diagnostic)),
            Owner::FileRest => self.file_rest = Some(Decoded::failed(diagnostic)),
        }
    }

    fn decode(&mut self, owner: Owner, raw: &toml::Value, c: &mut Checker) {
        match owner {
            Owner::Router(name) => {
                let path = format!("http.routers.{name}");
                let value = c.deserialize::<RawRouter>(raw.clone(), &path).and_then(|raw| router(&raw, &path, c));
                let (at, origin) = (c.locate(&path), c.locate(&format!("{path}.service")));
                let mut d = decoded(value, origin, c);
                d.middlewares_at = c.locate(&format!("{path}.middlewares"));
                d.raw = super::runtime::json_of(raw);
                keep_last_good(&mut self.routers, name, d, "router", at);
            }
            Owner::Service(name) => {
                let path = format!("http.services.{name}");
                let value = c.deserialize::<RawService>(raw.clone(), &path).and_then(|raw| service(&raw, &path, c));
                let origin = c.locate(&path);
                let d = Decoded { raw: super::runtime::json_of(raw), ..decoded(value, origin.clone(), c) };
                keep_last_good(&mut self.services, name, d, "service", origin);
            }
            Owner::Middleware(name) => {
                let path = format!("http.middlewares.{name}");
                let kinds: Vec<(&String, &toml::Value)> =
                    raw.as_table().map(|t| t.iter().collect()).unwrap_or_default();
                let spec = match kinds.as_slice() {
                    [(kind, raw)] => Spec::decode(kind, (*raw).clone(), &format!("{path}.{kind}"), c),
                    [] => {
                        c.error(&path, format!("middleware {name:?} has no type"));
                        None
                    }
                    many => {
                        let many: Vec<&str> = many.iter().map(|(k, _)| k.as_str()).collect();
                        c.error(
                            &path,
                            format!("middleware {name:?} has several types ({}); it needs one", many.join(", ")),
                        );
                        None
                    }
                };
                let origin = c.locate(&path);
                let d = Decoded { raw: super::runtime::json_of(raw), ..decoded(spec, origin.clone(), c) };
                keep_last_good(&mut self.middlewares, name, d, "middleware", origin);
            }
            Owner::TlsOptions(name) => {
                let path = format!("tls.options.{name}");
                let value = c.deserialize::<RawTls>(raw.clone(), &path).and_then(|raw| {
                    if !raw.certificates.is_empty() {
                        let at = format!("{path}.certificates");
                        c.warn(&at, "certificates are not a TLS option (use tls.certificates); ignored");
                    }
                    // Each owner starts with an empty checker (`decoded` takes what it collected).
                    let policy = crate::config::tls_options::tls_options(&raw, &path, c);
                    c.ok().then_some(policy)
                });
                let origin = c.locate(&path);
                keep_last_good(&mut self.tls_options, name, decoded(value, origin.clone(), c), "TLS options", origin);
            }
            Owner::Rest => {
                let rest = rest(raw, c);
                self.rest = Some(decoded(Some(rest), Origin::Default, c));
            }
            Owner::FileRest => {
                let rest = rest(raw, c);
                self.file_rest = Some(decoded(Some(rest), Origin::Default, c));
            }
        }
    }

    /// The configuration of every owner, with references checked: services that refer to a
    /// missing service or sit on a cycle are rejected, then routers whose service is missing.
    pub fn assemble(&self) -> DynamicConfig {
        let mut out = DynamicConfig::default();
        let all =
            self.routers.values().map(Decoded::diagnostics).chain(self.services.values().map(Decoded::diagnostics));
        let all = all
            .chain(self.middlewares.values().map(Decoded::diagnostics))
            .chain(self.tls_options.values().map(Decoded::diagnostics))
            .chain(self.rest.iter().chain(&self.file_rest).map(Decoded::diagnostics));
        for (errors, warnings) in all {
            out.rejected.extend(errors.iter().cloned());
            out.warnings.extend(warnings.iter().cloned());
        }
        out.services = self.services.iter().filter_map(|(name, d)| Some((name.clone(), d.value.clone()?))).collect();
        let origin_of = |name: &str| self.services.get(name).map_or(Origin::Default, |d| d.origin.clone());
        out.rejected.extend(drop_broken_references(&mut out.services, origin_of));
        out.middlewares =
            self.middlewares.iter().filter_map(|(name, d)| Some((name.clone(), d.value.clone()?))).collect();
        let services: std::collections::BTreeSet<String> = out.services.keys().cloned().collect();
        out.tls_options = self.tls_options.iter().map(|(name, d)| (name.clone(), d.value.clone())).collect();
        for (name, d) in &self.routers {
            let Some(router) = &d.value else { continue };
            let options = router.tls.as_ref().and_then(|t| t.options.as_deref());
            if let Some(why) = options.and_then(|o| self.unusable_options(o)) {
                out.rejected.push(Diagnostic {
                    origin: d.origin.clone(),
                    message: format!("router {name:?} disabled: {why}; it is not served under weaker TLS"),
                });
            } else if !out.services.contains_key(unqualified(&router.service))
                && crate::data::proxy::internal::Endpoint::named(&router.service).is_none()
            {
                out.rejected.push(Diagnostic {
                    origin: d.origin.clone(),
                    message: format!(
                        "router {name:?} rejected: its service {:?} does not exist or was rejected",
                        router.service
                    ),
                });
            } else if let Err(why) = middleware::chain::resolve(&router.middlewares, &|m| self.usable(m, &services)) {
                out.rejected.push(Diagnostic {
                    origin: d.middlewares_at.clone(),
                    message: format!("router {name:?} disabled: {why}; it is not routed without it"),
                });
            } else {
                out.routers.insert(name.clone(), router.clone());
            }
        }
        // The store's certificates, then the files'; the store's default certificate first.
        for rest in [&self.rest, &self.file_rest].into_iter().flatten().filter_map(|r| r.value.as_ref()) {
            out.certificates.extend(rest.certificates.iter().cloned());
            if out.default_certificate.is_none() {
                out.default_certificate = rest.default_certificate.clone();
            }
        }
        out.runtime = self.runtime(&out);
        out
    }

    /// Every owner with its status and errors, for the API: served or not, and why.
    fn runtime(&self, out: &DynamicConfig) -> Runtime {
        let errors = |what: &str, name: &str, d: &[Diagnostic]| -> Vec<String> {
            let prefix = format!("{what} {name:?}");
            let mut all: Vec<String> = d.iter().map(ToString::to_string).collect();
            for rejected in out.rejected.iter().filter(|r| r.message.starts_with(&prefix)) {
                let line = rejected.to_string();
                if !all.contains(&line) {
                    all.push(line);
                }
            }
            all
        };
        let mut runtime = Runtime::default();
        for (name, d) in &self.routers {
            let served = out.routers.contains_key(name);
            runtime.routers.insert(name.clone(), Info::new(d.raw.clone(), served, errors("router", name, &d.errors)));
        }
        for (name, d) in &self.services {
            let served = out.services.contains_key(name);
            runtime.services.insert(name.clone(), Info::new(d.raw.clone(), served, errors("service", name, &d.errors)));
        }
        for (name, d) in &self.middlewares {
            let mut errors = errors("middleware", name, &d.errors);
            let served = match &d.value {
                Some(Spec::Unimplemented(kind)) => {
                    errors.push(format!("{}: a {kind}, which Pylon does not implement yet", d.origin));
                    false
                }
                value => value.is_some(),
            };
            runtime.middlewares.insert(name.clone(), Info::new(d.raw.clone(), served, errors));
        }
        runtime
    }
}

impl Parts {
    /// Why a router cannot be served under the TLS options it names, if it cannot: they do not
    /// exist (a missing `default` is Pylon's defaults), or are invalid.
    fn unusable_options(&self, name: &str) -> Option<String> {
        match self.tls_options.get(name) {
            None if name == crate::data::tls::handshakes::DEFAULT => None,
            None => Some(format!("its TLS options {name:?} do not exist")),
            Some(Decoded { value: None, origin, .. }) => {
                Some(format!("its TLS options {name:?} ({origin}) are invalid"))
            }
            Some(_) => None,
        }
    }

    /// The middleware a router names, or why it cannot use it: it is missing, invalid, or of a
    /// type Pylon does not implement yet.
    fn usable(&self, name: &str, services: &std::collections::BTreeSet<String>) -> Result<&Spec, String> {
        match self.middlewares.get(name) {
            Some(Decoded { value: Some(Spec::Errors(e)), origin, .. }) if !services.contains(&e.service) => Err(format!(
                "its middleware {name:?} ({origin}) sends errors to the service {:?}, which does not exist or was rejected",
                e.service
            )),
            None => Err(format!("its middleware {name:?} does not exist")),
            Some(Decoded { value: None, origin, .. }) => Err(format!("its middleware {name:?} ({origin}) is invalid")),
            Some(Decoded { value: Some(Spec::Unimplemented(kind)), origin, .. }) => {
                Err(format!("its middleware {name:?} ({origin}) is a {kind}, which Pylon does not implement yet"))
            }
            Some(Decoded { value: Some(spec), .. }) => Ok(spec),
        }
    }
}

/// Puts an owner's new decoding in place. When it failed, the owner's last good version, if it
/// had one, stays in force; either way a closing error at `at` says which it was.
fn keep_last_good<T: Clone>(
    map: &mut BTreeMap<String, Decoded<T>>,
    name: String,
    mut new: Decoded<T>,
    what: &str,
    at: Origin,
) {
    if new.value.is_none() {
        let message = match map.get(&name).and_then(|old| old.value.clone()) {
            Some(old) => {
                new.value = Some(old);
                format!("{what} {name:?}: its keys are invalid; serving its last good version until they are fixed or deleted")
            }
            None => format!("{what} {name:?} rejected"),
        };
        new.errors.push(Diagnostic { origin: at, message });
    }
    map.insert(name, new);
}

impl<T> Decoded<T> {
    /// An owner whose keys could not be read, `diagnostic` saying why.
    fn failed(diagnostic: Diagnostic) -> Decoded<T> {
        let origin = diagnostic.origin.clone();
        Decoded {
            value: None,
            errors: vec![diagnostic],
            warnings: Vec::new(),
            middlewares_at: origin.clone(),
            origin,
            raw: serde_json::Value::Null,
        }
    }

    fn diagnostics(&self) -> (&[Diagnostic], &[Diagnostic]) {
        (&self.errors, &self.warnings)
    }
}

fn decoded<T>(value: Option<T>, origin: Origin, c: &mut Checker) -> Decoded<T> {
    let (errors, warnings) = c.take();
    Decoded { value, errors, warnings, middlewares_at: origin.clone(), origin, raw: serde_json::Value::Null }
}

/// `tls/certificates` and `tls/stores/default` (`tls/options` are owners of their own).
fn rest(value: &toml::Value, c: &mut Checker) -> Rest {
    let mut out = Rest::default();
    let Some(tls) = value.get("tls") else { return out };
    if let Some(list) = tls.get("certificates").cloned() {
        if let Some(certs) = c.deserialize::<Vec<RawCertificate>>(list, "tls.certificates") {
            for (i, cert) in certs.into_iter().enumerate() {
                match certificate(cert) {
                    Some(cert) => out.certificates.push(cert),
                    None => c.error(&format!("tls.certificates.{i}"), "a certificate needs both certFile and keyFile"),
                }
            }
        }
    }
    if let Some(store) = tls.get("stores").and_then(|s| s.get("default")).cloned() {
        if let Some(store) = c.deserialize::<RawTlsStore>(store, "tls.stores.default") {
            out.default_certificate = store.defaultcertificate.and_then(certificate);
        }
    }
    out
}
