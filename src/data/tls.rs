//! Certificates and the rustls resolver over them. Certificates come from sources (the static
//! file's entrypoint certificates, the store's `tls/certificates`, and ACME); each source is
//! replaced whole, and the merged name [`Index`] is published in the data plane's snapshot
//! (see [`crate::data::plane`]), so a handshake never waits for a reload. Names no certificate
//! covers get the default certificate: the configured one, or one generated at start.

mod accept;
pub mod client_auth;
pub mod handshakes;
pub mod policy;

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
};

pub use accept::{accept, Accepted, ACME_TLS};
pub use client_auth::ClientCertificates;
pub use handshakes::{Handshakes, Session};
pub use policy::TlsPolicy;

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::data::plane::Plane;

/// The ALPN protocols every TLS entrypoint offers, best first.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate holds no PEM CERTIFICATE block")]
    NoCertificate,
    #[error("the certificate's PEM is damaged: {0}")]
    BadCertificate(String),
    #[error("the key holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("the private key is not usable: {0}")]
    BadKey(String),
    #[error("the leaf certificate names no DNS name in its subject alternative names")]
    NoNames,
    #[error("cannot generate the default certificate: {0}")]
    Generate(String),
}

/// One certificate with the names it serves, ready for rustls.
#[derive(Clone)]
pub struct Loaded {
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded").field("names", &self.names).finish_non_exhaustive()
    }
}

impl Loaded {
    /// Parses a PEM chain (leaf first) and its PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Loaded, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        let leaf = chain.first().ok_or(TlsError::NoCertificate)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::NoKey)?;
        let names = names_of(leaf)?;
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::BadKey(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|e| TlsError::BadKey(format!("it does not match the certificate ({e})")))?;
        Ok(Loaded { names, key: Arc::new(certified) })
    }

    /// A self-signed certificate for `names`, its subject `CN=PYLON DEFAULT CERT` (as
    /// Traefik's is `TRAEFIK DEFAULT CERT`), served to clients that name no known host.
    pub fn self_signed(names: &[&str]) -> Result<Loaded, TlsError> {
        let failed = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "PYLON DEFAULT CERT");
        let key = rcgen::KeyPair::generate().map_err(failed)?;
        let cert = params.self_signed(&key).map_err(failed)?;
        Loaded::from_pem(&cert.pem(), &key.serialize_pem())
    }
}

/// A PEM value as Traefik accepts it: the PEM text itself, or the path of a file holding it.
pub fn pem_or_file(value: &str) -> std::io::Result<String> {
    if value.contains("-----BEGIN") {
        Ok(value.to_string())
    } else {
        std::fs::read_to_string(value)
    }
}

/// The certificates of a PEM file (or PEM text); an error when it cannot be read or holds none.
pub fn certificates_in(value: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let text = pem_or_file(value).map_err(|e| e.to_string())?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".to_string());
    }
    Ok(certs)
}

/// The DNS names of a leaf certificate's subject alternative names, lowercased.
fn names_of(leaf: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    let parsed = webpki::EndEntityCert::try_from(leaf).map_err(|e| TlsError::BadCertificate(format!("{e:?}")))?;
    let names: Vec<String> = parsed.valid_dns_names().map(str::to_ascii_lowercase).collect();
    if names.is_empty() {
        return Err(TlsError::NoNames);
    }
    Ok(names)
}

/// Where a group of certificates comes from; each source is replaced as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `[[entryPoints.<name>.tls.certificates]]` in the static configuration.
    Static,
    /// `tls/certificates` in the store (or the dynamic file).
    Dynamic,
    /// Certificates obtained by ACME.
    Acme,
}

/// The name index handshakes read: exact names, `*.parent` wildcards, and the default
/// certificate for every other name. Part of the data plane's snapshot.
pub struct Index {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain: `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl Index {
    pub fn empty(default: Arc<CertifiedKey>) -> Index {
        Index { exact: HashMap::new(), wildcard: HashMap::new(), default }
    }

    /// Every certificate served by name, each once (not the default).
    pub fn certificates(&self) -> Vec<Arc<CertifiedKey>> {
        let mut all: Vec<Arc<CertifiedKey>> = Vec::new();
        for key in self.exact.values().chain(self.wildcard.values()) {
            if !all.iter().any(|k| Arc::ptr_eq(k, key)) {
                all.push(key.clone());
            }
        }
        all
    }

    /// The certificate for `server_name`, if one covers it exactly or by wildcard.
    pub fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }
}

/// The certificates' sources (control plane): each replaced whole, merged into an [`Index`]
/// and published on the [`Plane`].
pub struct CertStore {
    plane: Arc<Plane>,
    /// Each source's certificates and the configured default, rebuilt into the index on every
    /// change, off the handshake path.
    sources: Mutex<Sources>,
    generated: Arc<CertifiedKey>,
}

struct Sources {
    by_source: Vec<(Source, Vec<Loaded>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// An empty store whose default is a freshly generated self-signed certificate, and the
    /// plane it publishes to.
    pub fn new() -> Result<(Arc<CertStore>, Arc<Plane>), TlsError> {
        let generated = Loaded::self_signed(&["pylon.default.invalid"])?.key;
        let plane = Plane::new(generated.clone());
        let sources = Mutex::new(Sources { by_source: Vec::new(), default: None });
        Ok((Arc::new(CertStore { plane: plane.clone(), sources, generated }), plane))
    }

    /// Replaces every certificate of `source`. Sources are applied in order, so a name present
    /// in several is served from the last (ACME wins over the store, the store over the file).
    pub fn replace(&self, source: Source, certs: Vec<Loaded>) {
        self.update(|sources| {
            sources.by_source.retain(|(s, _)| *s != source);
            sources.by_source.push((source, certs));
            sources.by_source.sort_by_key(|(s, _)| *s);
        });
    }

    /// Sets the default certificate; `None` goes back to the generated one.
    pub fn set_default(&self, default: Option<Loaded>) {
        self.update(|sources| sources.default = default.map(|l| l.key));
    }

    fn update(&self, change: impl FnOnce(&mut Sources)) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut sources);
        let default = sources.default.clone().unwrap_or_else(|| self.generated.clone());
        let mut index = Index::empty(default);
        for loaded in sources.by_source.iter().flat_map(|(_, certs)| certs) {
            for name in &loaded.names {
                match name.strip_prefix("*.") {
                    Some(parent) => index.wildcard.insert(parent.to_string(), loaded.key.clone()),
                    None => index.exact.insert(name.clone(), loaded.key.clone()),
                };
            }
        }
        self.plane.publish(|snapshot| snapshot.certs = Arc::new(index));
    }

    /// The certificate now served for `server_name`, if one covers it.
    pub fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        self.plane.load().certs.lookup(server_name)
    }
}

/// rustls' view of the certificates: SNI first, the default certificate otherwise (unless
/// `sniStrict`, where a handshake naming no stored certificate fails). It holds the plane
/// weakly: the configurations it serves are themselves part of the plane's snapshot.
struct Resolver {
    plane: std::sync::Weak<Plane>,
    sni_strict: bool,
    /// Settings that cannot be enforced together: no certificate, so every handshake fails.
    refuse: bool,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if self.refuse {
            return None;
        }
        let plane = self.plane.upgrade()?;
        let snapshot = plane.load();
        let found = hello.server_name().and_then(|name| snapshot.certs.lookup(name));
        if self.sni_strict {
            return found;
        }
        found.or_else(|| Some(snapshot.certs.default.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_win_over_wildcards_and_unknown_names_fall_through() {
        let (store, _plane) = CertStore::new().unwrap();
        let wild = Loaded::self_signed(&["*.example.com"]).unwrap();
        let exact = Loaded::self_signed(&["a.example.com"]).unwrap();
        store.replace(Source::Dynamic, vec![wild.clone(), exact.clone()]);
        assert!(Arc::ptr_eq(&store.lookup("A.Example.com").unwrap(), &exact.key));
        assert!(Arc::ptr_eq(&store.lookup("b.example.com").unwrap(), &wild.key));
        assert!(store.lookup("example.com").is_none());
        assert!(store.lookup("x.b.example.com").is_none());
    }

    #[test]
    fn later_sources_win_and_replacing_a_source_drops_its_names() {
        let (store, _plane) = CertStore::new().unwrap();
        let from_file = Loaded::self_signed(&["a.example"]).unwrap();
        let from_store = Loaded::self_signed(&["a.example", "b.example"]).unwrap();
        store.replace(Source::Dynamic, vec![from_store.clone()]);
        store.replace(Source::Static, vec![from_file.clone()]);
        assert!(Arc::ptr_eq(&store.lookup("a.example").unwrap(), &from_store.key));
        store.replace(Source::Dynamic, vec![]);
        assert!(Arc::ptr_eq(&store.lookup("a.example").unwrap(), &from_file.key));
        assert!(store.lookup("b.example").is_none());
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let err = Loaded::from_pem(&a.cert.pem(), &b.signing_key.serialize_pem()).unwrap_err();
        assert!(matches!(err, TlsError::BadKey(_)), "{err}");
        assert!(matches!(Loaded::from_pem("junk", "junk"), Err(TlsError::NoCertificate)));
    }
}
