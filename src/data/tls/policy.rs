//! A set of TLS options (`minVersion`, `maxVersion`, `cipherSuites`, `curvePreferences`,
//! `alpnProtocols`, `sniStrict`, client certificates, session tickets): Traefik's names read
//! into a policy, policies merged so that none is weakened, and a policy turned into the rustls
//! configuration that enforces it.

use std::sync::Arc;

use rustls::{crypto::CryptoProvider, ServerConfig, SupportedCipherSuite};

/// What an entrypoint enforces on every TLS handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// TLS 1.2 is refused.
    pub min_tls13: bool,
    /// The TLS 1.2 suites offered, by IANA name; `None` offers all that rustls has. TLS 1.3
    /// suites are not configurable (as in Go, hence Traefik).
    pub tls12_suites: Option<Vec<String>>,
    /// A handshake without SNI, or naming no certificate, fails instead of getting the default.
    pub sni_strict: bool,
    /// What a client must show (`ClientCA`, `clientAuth`); `None` asks for nothing.
    pub client_auth: Option<super::client_auth::ClientAuth>,
    /// TLS 1.3 is not offered (`maxVersion = "VersionTLS12"`).
    pub max_tls12: bool,
    /// The key exchange groups offered, best first; `None` offers all that rustls has.
    pub curves: Option<Vec<Curve>>,
    /// The ALPN protocols offered, best first; `None` offers h2 then HTTP/1.1.
    pub alpn: Option<Vec<String>>,
    /// No session resumption (`disableSessionTickets`).
    pub no_session_tickets: bool,
}

/// A key exchange group rustls offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    X25519,
    P256,
    P384,
}

impl Curve {
    fn group(self) -> &'static dyn rustls::crypto::SupportedKxGroup {
        use rustls::crypto::ring::kx_group;
        match self {
            Curve::X25519 => kx_group::X25519,
            Curve::P256 => kx_group::SECP256R1,
            Curve::P384 => kx_group::SECP384R1,
        }
    }
}

/// What a `curvePreferences` entry means here: Go's names (`CurveP256`, `X25519`) and the
/// IANA ones (`secp256r1`, `x25519`), as Traefik reads them. `Ok(None)` for a group Go knows
/// that rustls does not offer (P-521, the hybrid post-quantum ones): never negotiated.
pub fn curve(name: &str) -> Result<Option<Curve>, String> {
    match name {
        "X25519" | "x25519" => Ok(Some(Curve::X25519)),
        "CurveP256" | "secp256r1" | "P256" | "P-256" => Ok(Some(Curve::P256)),
        "CurveP384" | "secp384r1" | "P384" | "P-384" => Ok(Some(Curve::P384)),
        "CurveP521" | "secp521r1" | "P521" | "P-521" | "X25519MLKEM768" | "X25519Kyber768Draft00" => Ok(None),
        other => Err(format!("{other:?} is not a curve; Pylon offers X25519, CurveP256 and CurveP384")),
    }
}

/// What an `alpnProtocols` entry means here: `Ok(None)` for `acme-tls/1`, which is answered
/// before any option applies (TLS-ALPN-01 validations).
pub fn alpn_protocol(name: &str) -> Result<Option<String>, String> {
    match name {
        "h2" | "http/1.1" => Ok(Some(name.to_string())),
        "acme-tls/1" => Ok(None),
        other => Err(format!("{other:?}: Pylon speaks h2 and http/1.1 over TLS (and acme-tls/1 for ACME)")),
    }
}

/// What a `minVersion` value means here; `Err` for a value Traefik does not know.
pub fn min_version(text: &str) -> Result<MinVersion, String> {
    version(text)
}

/// What a `maxVersion` value means here (the same names as `minVersion`).
pub fn max_version(text: &str) -> Result<MinVersion, String> {
    version(text)
}

fn version(text: &str) -> Result<MinVersion, String> {
    match text {
        "VersionTLS13" => Ok(MinVersion::Tls13),
        "VersionTLS12" => Ok(MinVersion::Tls12),
        "VersionTLS10" | "VersionTLS11" => Ok(MinVersion::Raised),
        other => Err(format!(
            "{other:?} is not a TLS version; use VersionTLS12 or VersionTLS13 (or VersionTLS10, VersionTLS11)"
        )),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
    /// TLS 1.0 or 1.1 asked for: rustls never speaks them, so TLS 1.2 is the floor.
    Raised,
}

/// What a `cipherSuites` entry means here.
#[derive(Debug, PartialEq, Eq)]
pub enum Suite {
    /// A TLS 1.2 suite rustls offers, by its IANA name.
    Tls12(String),
    /// A TLS 1.3 suite: always on, whatever the list says (as in Traefik).
    Tls13,
    /// A suite Go knows and rustls does not offer (CBC, RC4, 3DES): never negotiated.
    Unavailable,
}

/// Reads one `cipherSuites` entry (Go's names, which are IANA's plus a few aliases).
pub fn cipher_suite(name: &str) -> Result<Suite, String> {
    let iana = match name {
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        other => other,
    };
    if ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"].contains(&iana) {
        return Ok(Suite::Tls13);
    }
    if provider().cipher_suites.iter().any(|s| s.suite().as_str() == Some(iana)) {
        return Ok(Suite::Tls12(iana.to_string()));
    }
    let go_knows = iana.starts_with("TLS_RSA_WITH_")
        || iana.starts_with("TLS_ECDHE_ECDSA_WITH_")
        || iana.starts_with("TLS_ECDHE_RSA_WITH_");
    if go_knows && (iana.contains("_CBC_") || iana.contains("_RC4_") || iana.contains("_GCM_")) {
        return Ok(Suite::Unavailable);
    }
    Err(format!("{name:?} is not a cipher suite; Pylon offers {}", tls12_names().join(", ")))
}

/// The TLS 1.2 suites rustls offers, by IANA name.
pub fn tls12_names() -> Vec<&'static str> {
    provider()
        .cipher_suites
        .iter()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
        .filter_map(|s| s.suite().as_str())
        .collect()
}

impl TlsPolicy {
    /// The policy that honours every one of `policies`: what a plain entrypoint applies when a
    /// client speaks TLS to it, so that no TLS connection is weaker than an entrypoint's setting.
    pub fn strictest<'a>(policies: impl IntoIterator<Item = &'a TlsPolicy>) -> TlsPolicy {
        let mut out = TlsPolicy::default();
        let mut auths = Vec::new();
        for p in policies {
            auths.extend(p.client_auth.as_ref());
            out.min_tls13 |= p.min_tls13;
            out.max_tls12 |= p.max_tls12;
            out.sni_strict |= p.sni_strict;
            out.no_session_tickets |= p.no_session_tickets;
            out.tls12_suites = both(out.tls12_suites.take(), &p.tls12_suites);
            out.curves = both(out.curves.take(), &p.curves);
            out.alpn = both(out.alpn.take(), &p.alpn);
        }
        // TLS 1.3 required by one and refused by another: the floor wins.
        out.max_tls12 &= !out.min_tls13;
        out.client_auth = super::client_auth::ClientAuth::strictest(auths);
        out
    }

    /// A reason this policy cannot be enforced (no version or no suite left), if it cannot.
    pub fn impossible(&self) -> Option<&'static str> {
        if self.min_tls13 && self.max_tls12 {
            return Some("minVersion VersionTLS13 and maxVersion VersionTLS12 leave no TLS version");
        }
        if self.max_tls12 && self.tls12_suites.as_ref().is_some_and(|s| s.is_empty()) {
            return Some("maxVersion VersionTLS12 with no TLS 1.2 cipher suite leaves nothing to negotiate");
        }
        if self.curves.as_ref().is_some_and(|c| c.is_empty()) {
            return Some("no curve is left that every setting allows");
        }
        None
    }

    /// True when no TLS 1.2 suite is left: only TLS 1.3 can be negotiated.
    fn tls13_only(&self) -> bool {
        self.min_tls13 || self.tls12_suites.as_ref().is_some_and(|s| s.is_empty())
    }

    /// A rustls configuration that enforces this policy, with `resolver` choosing certificates.
    pub(super) fn server_config(&self, resolver: Arc<dyn rustls::server::ResolvesServerCert>) -> ServerConfig {
        let mut provider = provider();
        if let Some(wanted) = &self.tls12_suites {
            provider.cipher_suites.retain(|s| match s {
                SupportedCipherSuite::Tls13(_) => true,
                SupportedCipherSuite::Tls12(_) => s.suite().as_str().is_some_and(|n| wanted.iter().any(|w| w == n)),
            });
        }
        if let Some(curves) = &self.curves {
            provider.kx_groups = curves.iter().map(|c| c.group()).collect();
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls13_only() {
            &[&rustls::version::TLS13]
        } else if self.max_tls12 {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .expect("readers refuse a policy that leaves no version, suite or curve");
        let mut config = match &self.client_auth {
            None => builder.with_no_client_auth().with_cert_resolver(resolver),
            Some(auth) => builder.with_client_cert_verifier(auth.verifier(&provider)).with_cert_resolver(resolver),
        };
        config.alpn_protocols = match &self.alpn {
            Some(list) => list.iter().map(|p| p.as_bytes().to_vec()).collect(),
            None => super::ALPN.iter().map(|p| p.to_vec()).collect(),
        };
        if self.no_session_tickets {
            config.send_tls13_tickets = 0;
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
        config
    }
}

/// Both restrictions: the items of `mine` that `theirs` also has, in `mine`'s order.
fn both<T: Clone + PartialEq>(mine: Option<Vec<T>>, theirs: &Option<Vec<T>>) -> Option<Vec<T>> {
    match (mine, theirs) {
        (None, theirs) => theirs.clone(),
        (mine, None) => mine,
        (Some(mine), Some(theirs)) => Some(mine.into_iter().filter(|s| theirs.contains(s)).collect()),
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_by_traefiks_names_and_a_typo_is_an_error() {
        assert_eq!(min_version("VersionTLS13"), Ok(MinVersion::Tls13));
        assert_eq!(min_version("VersionTLS10"), Ok(MinVersion::Raised));
        assert!(min_version("TLS13").unwrap_err().contains("VersionTLS13"));
        assert!(min_version("versiontls13").is_err());
    }

    #[test]
    fn suites_are_read_by_go_names() {
        assert_eq!(
            cipher_suite("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"),
            Ok(Suite::Tls12("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256".into()))
        );
        assert_eq!(cipher_suite("TLS_AES_128_GCM_SHA256"), Ok(Suite::Tls13));
        assert_eq!(cipher_suite("TLS_RSA_WITH_AES_128_CBC_SHA"), Ok(Suite::Unavailable));
        assert!(cipher_suite("TLS_ECDHE_RSA_AES").unwrap_err().contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"));
        assert_eq!(tls12_names().len(), 6);
    }

    #[test]
    fn the_strictest_policy_keeps_every_restriction() {
        let a = TlsPolicy { min_tls13: true, ..TlsPolicy::default() };
        let b = TlsPolicy { tls12_suites: Some(vec!["x".into(), "y".into()]), sni_strict: true, ..a.clone() };
        let c = TlsPolicy { tls12_suites: Some(vec!["y".into()]), ..TlsPolicy::default() };
        let s = TlsPolicy::strictest([&a, &b, &c]);
        assert!(s.min_tls13 && s.sni_strict);
        assert_eq!(s.tls12_suites, Some(vec!["y".to_string()]));
        assert_eq!(TlsPolicy::strictest([]), TlsPolicy::default());
    }

    #[test]
    fn merged_curves_and_protocols_keep_the_first_order_and_a_floor_of_tls13_beats_a_ceiling() {
        let floor = TlsPolicy { min_tls13: true, curves: Some(vec![Curve::P384, Curve::X25519]), ..Default::default() };
        let option = TlsPolicy {
            max_tls12: true,
            curves: Some(vec![Curve::X25519, Curve::P384]),
            alpn: Some(vec!["http/1.1".into()]),
            ..Default::default()
        };
        let s = TlsPolicy::strictest([&floor, &option]);
        assert_eq!(s.curves, Some(vec![Curve::P384, Curve::X25519]));
        assert_eq!(s.alpn, Some(vec!["http/1.1".to_string()]));
        assert!(s.min_tls13 && !s.max_tls12 && s.impossible().is_none());
        let disjoint = TlsPolicy { curves: Some(vec![Curve::P256]), ..Default::default() };
        let merged = TlsPolicy::strictest([&floor, &disjoint]);
        assert!(merged.impossible().is_some(), "disjoint curves leave none: refused, not widened");
        assert!(TlsPolicy { min_tls13: true, max_tls12: true, ..Default::default() }.impossible().is_some());
    }

    #[test]
    fn curves_and_protocols_are_read_by_traefiks_names() {
        assert_eq!(curve("CurveP256"), Ok(Some(Curve::P256)));
        assert_eq!(curve("secp384r1"), Ok(Some(Curve::P384)));
        assert_eq!(curve("CurveP521"), Ok(None));
        assert!(curve("P-999").unwrap_err().contains("CurveP384"));
        assert_eq!(alpn_protocol("acme-tls/1"), Ok(None));
        assert!(alpn_protocol("spdy/3").is_err());
    }
}
