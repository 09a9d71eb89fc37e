//! The dynamic configuration decoded one owner at a time (a router, a service, a middleware, or
//! the rest: `tls/...`), and kept decoded: when one key changes, only its owner is decoded again,
//! and [`Parts::assemble`] checks the references between owners. This is what keeps a change
//! cheap in a table of 10,000 routers.

use std::collections::BTreeMap;

use crate::config::{tree::Origin, Checker, Diagnostic, Node};

use super::file::{RawCertificate, RawRouter, RawService, RawTlsStore};
use super::{certificate, drop_broken_references, router, service, unqualified, DynamicConfig, Router, Service};

/// Whose settings a dynamic key holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Router(String),
    Service(String),
    Middleware(String),
    /// `tls/...` and anything else.
    Rest,
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
            _ => Owner::Rest,
        }
    }
}

/// One owner's decoded settings with what its decoding said.
#[derive(Debug)]
struct Decoded<T> {
    value: Option<T>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Where a broken reference of this owner is reported (a router's `service` key).
    origin: Origin,
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
    middlewares: BTreeMap<String, Decoded<()>>,
    rest: Option<Decoded<Rest>>,
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
                Owner::Rest => self.rest = None,
            }
            return;
        };
        let (value, origins) = tree.into_value();
        let mut c = Checker::new(origins);
        let raw = match &owner {
            Owner::Router(name) => value.get("http").and_then(|h| h.get("routers")).and_then(|r| r.get(name)),
            Owner::Service(name) => value.get("http").and_then(|h| h.get("services")).and_then(|s| s.get(name)),
            Owner::Middleware(name) => value.get("http").and_then(|h| h.get("middlewares")).and_then(|m| m.get(name)),
            Owner::Rest => Some(&value),
        };
        match raw {
            Some(raw) => self.decode(owner, raw, &mut c),
            None => self.update(owner, None),
        }
    }

    fn decode(&mut self, owner: Owner, raw: &toml::Value, c: &mut Checker) {
        match owner {
            Owner::Router(name) => {
                let path = format!("http.routers.{name}");
                let value = c.deserialize::<RawRouter>(raw.clone(), &path).and_then(|raw| router(&raw, &path, c));
                if value.is_none() {
                    c.error(&path, format!("router {name:?} rejected"));
                }
                let origin = c.locate(&format!("{path}.service"));
                self.routers.insert(name, decoded(value, origin, c));
            }
            Owner::Service(name) => {
                let path = format!("http.services.{name}");
                let value = c.deserialize::<RawService>(raw.clone(), &path).and_then(|raw| service(&raw, &path, c));
                if value.is_none() {
                    c.error(&path, format!("service {name:?} rejected"));
                }
                let origin = c.locate(&path);
                self.services.insert(name, decoded(value, origin, c));
            }
            Owner::Middleware(name) => {
                let path = format!("http.middlewares.{name}");
                c.warn(
                    &path,
                    format!(
                        "middleware {name:?}: middlewares are not supported yet; routers that use it route without it"
                    ),
                );
                let origin = c.locate(&path);
                self.middlewares.insert(name, decoded(Some(()), origin, c));
            }
            Owner::Rest => {
                let rest = rest(raw, c);
                self.rest = Some(decoded(Some(rest), Origin::Default, c));
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
            .chain(self.rest.iter().map(Decoded::diagnostics));
        for (errors, warnings) in all {
            out.rejected.extend(errors.iter().cloned());
            out.warnings.extend(warnings.iter().cloned());
        }
        out.services = self.services.iter().filter_map(|(name, d)| Some((name.clone(), d.value.clone()?))).collect();
        let origin_of = |name: &str| self.services.get(name).map_or(Origin::Default, |d| d.origin.clone());
        out.rejected.extend(drop_broken_references(&mut out.services, origin_of));
        for (name, d) in &self.routers {
            let Some(router) = &d.value else { continue };
            if out.services.contains_key(unqualified(&router.service)) {
                out.routers.insert(name.clone(), router.clone());
            } else {
                out.rejected.push(Diagnostic {
                    origin: d.origin.clone(),
                    message: format!(
                        "router {name:?} rejected: its service {:?} does not exist or was rejected",
                        router.service
                    ),
                });
            }
        }
        if let Some(rest) = self.rest.as_ref().and_then(|r| r.value.as_ref()) {
            out.certificates = rest.certificates.clone();
            out.default_certificate = rest.default_certificate.clone();
        }
        out
    }
}

impl<T> Decoded<T> {
    fn diagnostics(&self) -> (&[Diagnostic], &[Diagnostic]) {
        (&self.errors, &self.warnings)
    }
}

fn decoded<T>(value: Option<T>, origin: Origin, c: &mut Checker) -> Decoded<T> {
    let (errors, warnings) = c.take();
    Decoded { value, errors, warnings, origin }
}

/// `tls/certificates` and `tls/stores/default`.
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
