//! Challenge answers on every replica, from local caches that the ACME watch keeps in step with
//! the store and, on a miss (the CA's request can arrive before the watch event), from a direct
//! read of the store:
//! - HTTP-01: `GET /.well-known/acme-challenge/<token>` from `<prefix>/acme/challenges/`;
//! - TLS-ALPN-01: a handshake offering only `acme-tls/1` gets the challenge certificate for its
//!   SNI from `<prefix>/acme/alpn/` (RFC 8737).

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::AcmeError;
use crate::store::{keys::Keys, Store};

pub const PATH_PREFIX: &str = "/.well-known/acme-challenge/";

pub struct Challenges {
    tokens: ArcSwap<HashMap<String, String>>,
    alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    store: Store,
    keys: Keys,
}

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

impl Challenges {
    pub fn new(store: Store, keys: Keys) -> Arc<Challenges> {
        Arc::new(Challenges { tokens: ArcSwap::default(), alpn: ArcSwap::default(), store, keys })
    }

    /// Replaces the cached tokens (token → key authorization).
    pub fn replace(&self, tokens: HashMap<String, String>) {
        self.tokens.store(Arc::new(tokens));
    }

    /// Replaces the cached TLS-ALPN-01 certificates (name → certificate).
    pub fn replace_alpn(&self, certs: HashMap<String, Arc<CertifiedKey>>) {
        self.alpn.store(Arc::new(certs));
    }

    /// The key authorization for `token`, if an order of this cluster is waiting for it.
    pub async fn answer(&self, token: &str) -> Option<String> {
        if token.is_empty() || token.contains('/') {
            return None;
        }
        if let Some(found) = self.tokens.load().get(token) {
            return Some(found.clone());
        }
        let kv = self.store.get(&self.keys.acme_challenge(token)).await.ok()??;
        Some(String::from_utf8_lossy(&kv.value).into_owned())
    }

    /// The TLS-ALPN-01 certificate for `name`, if an order of this cluster is waiting for it.
    pub async fn alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if name.is_empty() || name.contains('/') {
            return None;
        }
        if let Some(found) = self.alpn.load().get(name) {
            return Some(found.clone());
        }
        let key = self.keys.acme_alpn(name);
        let kv = self.store.get(&key).await.ok()??;
        load_alpn(&key, &kv.value).map_err(|e| tracing::warn!("{e}")).ok()
    }
}
