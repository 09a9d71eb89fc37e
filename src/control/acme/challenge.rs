//! The stored form of challenge responses: what an order writes to `<prefix>/acme/challenges/`
//! and `<prefix>/acme/alpn/`, and how the follower turns a stored TLS-ALPN-01 value into the
//! certificate the data plane serves (see [`crate::data::plane::Answers`]).

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::AcmeError;

/// A TLS-ALPN-01 challenge certificate as stored: a throwaway key, so it is not sealed.
#[derive(Serialize, Deserialize)]
struct AlpnResponse {
    cert: String,
    key: String,
}

/// The stored value answering TLS-ALPN-01 for `name`: a self-signed certificate for it carrying
/// the critical `acmeIdentifier` extension with the key authorization's SHA-256.
pub fn alpn_response(name: &str, digest: &[u8]) -> Result<Vec<u8>, AcmeError> {
    let failed = |e: rcgen::Error| AcmeError::Setup(format!("TLS-ALPN-01 certificate for {name}: {e}"));
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(failed)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(failed)?;
    let response = AlpnResponse { cert: cert.pem(), key: key.serialize_pem() };
    Ok(serde_json::to_vec(&response).expect("serializes"))
}

/// A stored TLS-ALPN-01 value, ready for a handshake. Not checked as a serving certificate is:
/// its critical `acmeIdentifier` extension is unknown to certificate validators by design.
pub fn load_alpn(key: &str, value: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let bad = |what: &dyn std::fmt::Display| format!("KV key {key}: not a TLS-ALPN-01 certificate: {what}");
    let response: AlpnResponse = serde_json::from_slice(value).map_err(|e| bad(&e))?;
    let cert = CertificateDer::from_pem_slice(response.cert.as_bytes()).map_err(|e| bad(&e))?;
    let private = PrivateKeyDer::from_pem_slice(response.key.as_bytes()).map_err(|e| bad(&e))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| bad(&e))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert], signer)))
}
