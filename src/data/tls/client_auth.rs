//! Client-certificate authentication on a TLS entrypoint: Traefik's `clientAuthType` modes,
//! the CAs that verify a client's chain, and the rustls verifier that enforces them; and the
//! chain a client presented, which the proxy hands to each of the connection's requests
//! (`passTLSClientCert` reads it).

use std::sync::Arc;

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        WebPkiClientVerifier,
    },
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

/// What a client must show, by Traefik's `clientAuthType` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// `RequestClientCert`: asked for, taken unverified when given.
    Request,
    /// `RequireAnyClientCert`: required, taken unverified.
    RequireAny,
    /// `VerifyClientCertIfGiven`: optional, verified against the CAs when given.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: required and verified (the default with CAs).
    RequireAndVerify,
}

impl Mode {
    /// Reads a `clientAuthType`; `Ok(None)` for `NoClientCert`.
    pub fn parse(text: &str) -> Result<Option<Mode>, String> {
        Ok(Some(match text {
            "NoClientCert" => return Ok(None),
            "RequestClientCert" => Mode::Request,
            "RequireAnyClientCert" => Mode::RequireAny,
            "VerifyClientCertIfGiven" => Mode::VerifyIfGiven,
            "RequireAndVerifyClientCert" => Mode::RequireAndVerify,
            other => {
                return Err(format!(
                    "{other:?} is not a client auth type; use NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ))
            }
        }))
    }

    pub fn verifies(self) -> bool {
        self >= Mode::VerifyIfGiven
    }

    fn mandatory(self) -> bool {
        matches!(self, Mode::RequireAny | Mode::RequireAndVerify)
    }
}

/// An entrypoint's client-certificate requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    pub mode: Mode,
    /// The CAs a verifying mode checks chains against (DER).
    pub cas: Vec<CertificateDer<'static>>,
}

/// The chain a client presented on its connection, leaf first; in every request's extensions
/// when there was one.
#[derive(Clone, Debug)]
pub struct ClientCertificates(pub Arc<[CertificateDer<'static>]>);

impl ClientAuth {
    /// The requirement that honours all of `auths`: a certificate is required if any requires
    /// one, verified if any verifies, and then against the CAs they all trust (none in common
    /// lets no client in).
    pub fn strictest<'a>(auths: impl IntoIterator<Item = &'a ClientAuth>) -> Option<ClientAuth> {
        let auths: Vec<&ClientAuth> = auths.into_iter().collect();
        let first = *auths.first()?;
        let mandatory = auths.iter().any(|a| a.mode.mandatory());
        let verifying: Vec<&&ClientAuth> = auths.iter().filter(|a| a.mode.verifies()).collect();
        let mode = match (verifying.is_empty(), mandatory) {
            (true, false) => Mode::Request,
            (true, true) => Mode::RequireAny,
            (false, false) => Mode::VerifyIfGiven,
            (false, true) => Mode::RequireAndVerify,
        };
        let cas = match verifying.split_first() {
            None => first.cas.clone(),
            Some((head, rest)) => {
                head.cas.iter().filter(|ca| rest.iter().all(|a| a.cas.contains(ca))).cloned().collect()
            }
        };
        Some(ClientAuth { mode, cas })
    }

    /// The verifier that enforces this requirement.
    pub(super) fn verifier(&self, provider: &Arc<CryptoProvider>) -> Arc<dyn ClientCertVerifier> {
        if !self.mode.verifies() {
            return Arc::new(Unverified { mandatory: self.mode.mandatory(), provider: provider.clone() });
        }
        let mut roots = RootCertStore::empty();
        for ca in &self.cas {
            // The configuration checked each CA; one rustls refuses only narrows who gets in.
            let _ = roots.add(ca.clone());
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let builder = if self.mode.mandatory() { builder } else { builder.allow_unauthenticated() };
        match builder.build() {
            Ok(verifier) => verifier,
            // No CA left: no client certificate can verify, so none is let in.
            Err(_) => Arc::new(NoneVerify { provider: provider.clone() }),
        }
    }
}

/// Takes any chain unverified (`RequestClientCert`, `RequireAnyClientCert`); the handshake's
/// own signature is still checked, so the client holds the key of the certificate it sent.
#[derive(Debug)]
struct Unverified {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for Unverified {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Requires a certificate and refuses every one: verification with no CA to verify against.
#[derive(Debug)]
struct NoneVerify {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for NoneVerify {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Err(no_issuer())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_issuer())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_issuer())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why [`NoneVerify`] refuses: no CA it trusts issued the certificate.
fn no_issuer() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(n: u8) -> CertificateDer<'static> {
        CertificateDer::from(vec![n])
    }

    #[test]
    fn modes_are_read_by_traefiks_names() {
        assert_eq!(Mode::parse("NoClientCert"), Ok(None));
        assert_eq!(Mode::parse("RequireAndVerifyClientCert"), Ok(Some(Mode::RequireAndVerify)));
        assert!(Mode::parse("requireandverifyclientcert").unwrap_err().contains("VerifyClientCertIfGiven"));
    }

    #[test]
    fn the_strictest_requirement_requires_verifies_and_trusts_only_common_cas() {
        let a = ClientAuth { mode: Mode::VerifyIfGiven, cas: vec![ca(1), ca(2)] };
        let b = ClientAuth { mode: Mode::RequireAny, cas: vec![] };
        let c = ClientAuth { mode: Mode::RequireAndVerify, cas: vec![ca(2), ca(3)] };
        assert_eq!(
            ClientAuth::strictest([&a, &b]),
            Some(ClientAuth { mode: Mode::RequireAndVerify, cas: vec![ca(1), ca(2)] })
        );
        assert_eq!(ClientAuth::strictest([&a, &c]).unwrap().cas, vec![ca(2)]);
        assert_eq!(ClientAuth::strictest([&b]).unwrap().mode, Mode::RequireAny);
        assert_eq!(ClientAuth::strictest([]), None);
    }
}
