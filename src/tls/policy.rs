//! An entrypoint's TLS settings (`minVersion`, `cipherSuites`, `sniStrict`, client
//! certificates): Traefik's names parsed into a policy, and the policy turned into the rustls
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
}

/// What a `minVersion` value means here; `Err` for a value Traefik does not know.
pub fn min_version(text: &str) -> Result<MinVersion, String> {
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
            out.sni_strict |= p.sni_strict;
            out.tls12_suites = match (out.tls12_suites.take(), &p.tls12_suites) {
                (None, theirs) => theirs.clone(),
                (mine, None) => mine,
                (Some(mine), Some(theirs)) => Some(mine.into_iter().filter(|s| theirs.contains(s)).collect()),
            };
        }
        out.client_auth = super::client_auth::ClientAuth::strictest(auths);
        out
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
        let versions: &[&rustls::SupportedProtocolVersion] =
            if self.tls13_only() { &[&rustls::version::TLS13] } else { rustls::DEFAULT_VERSIONS };
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .expect("a TLS 1.3 suite is always left, and TLS 1.2 only with a TLS 1.2 suite");
        match &self.client_auth {
            None => builder.with_no_client_auth().with_cert_resolver(resolver),
            Some(auth) => builder.with_client_cert_verifier(auth.verifier(&provider)).with_cert_resolver(resolver),
        }
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
}
