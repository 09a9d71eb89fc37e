//! Challenge answers on every replica, from local caches that the ACME watch keeps in step with
//! the store. A miss reads the store while an order of this cluster is in progress (the CA's
//! request can arrive before the watch event): one read in flight per name, a bounded number of
//! names, a short timeout. With no order in view, the watch may still lag behind one that just
//! started, so a miss may read the store once per 500 ms (200 ms timeout); every other unknown
//! token or name is answered at once from memory, so a flood of random tokens costs the store
//! at most two reads a second and a frozen store delays none by more than 200 ms:
//! - HTTP-01: `GET /.well-known/acme-challenge/<token>` from `<prefix>/acme/challenges/`;
//! - TLS-ALPN-01: a handshake offering only `acme-tls/1` gets the challenge certificate for its
//!   SNI from `<prefix>/acme/alpn/` (RFC 8737).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::AcmeError;
use crate::store::{keys::Keys, Store};

pub const PATH_PREFIX: &str = "/.well-known/acme-challenge/";

/// How long a challenge lookup waits for the store.
const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How many different names may be read from the store at once; more misses are answered
/// from memory.
const MAX_READS: usize = 64;
/// With no order in view, a miss may still read the store this often (the watch can lag
/// behind another replica's order), for at most [`UNSEEN_READ_TIMEOUT`].
const UNSEEN_READ_EVERY: Duration = Duration::from_millis(500);
const UNSEEN_READ_TIMEOUT: Duration = Duration::from_millis(200);

/// One store read shared by every lookup of the same key that misses meanwhile.
type Read = Arc<tokio::sync::OnceCell<Option<Vec<u8>>>>;

pub struct Challenges {
    tokens: ArcSwap<HashMap<String, String>>,
    alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// Whether the store holds an order in progress (`<prefix>/acme/orders/`), as watched; true
    /// until the watch has listed them, since a replica starting while another orders must not
    /// turn the CA away.
    ordering: AtomicBool,
    /// Store reads in flight, by key.
    reads: Mutex<HashMap<String, Read>>,
    /// When a miss with no order in view may next read the store, in ms since `epoch`.
    next_unseen_read: AtomicU64,
    epoch: std::time::Instant,
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
        Arc::new(Challenges {
            tokens: ArcSwap::default(),
            alpn: ArcSwap::default(),
            ordering: AtomicBool::new(true),
            reads: Mutex::new(HashMap::new()),
            next_unseen_read: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            store,
            keys,
        })
    }

    /// Records whether an order is in progress somewhere in the cluster.
    pub fn set_ordering(&self, ordering: bool) {
        self.ordering.store(ordering, Ordering::Relaxed);
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
        let value = self.read_through(self.keys.acme_challenge(token)).await?;
        String::from_utf8(value).ok()
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
        let value = self.read_through(key.clone()).await?;
        load_alpn(&key, &value).map_err(|e| tracing::warn!("{e}")).ok()
    }

    /// A cache miss: the stored value of `key`, read only while an order is in progress, once
    /// for every concurrent miss of the same key, and given up after [`READ_TIMEOUT`].
    async fn read_through(&self, key: String) -> Option<Vec<u8>> {
        let timeout = if self.ordering.load(Ordering::Relaxed) {
            READ_TIMEOUT
        } else if self.may_read_unseen() {
            // No order seen, but the watch may lag behind one that a loaded cluster just
            // started (the CA can be quicker than the watch event): one short read in a while.
            UNSEEN_READ_TIMEOUT
        } else {
            return None;
        };
        let read = {
            let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            match reads.get(&key) {
                Some(read) => read.clone(),
                None if reads.len() >= MAX_READS => return None,
                None => reads.entry(key.clone()).or_default().clone(),
            }
        };
        let value = read
            .get_or_init(|| async {
                let got = tokio::time::timeout(timeout, self.store.get(&key)).await;
                got.ok()?.ok()?.map(|kv| kv.value)
            })
            .await
            .clone();
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        if reads.get(&key).is_some_and(|r| Arc::ptr_eq(r, &read)) {
            reads.remove(&key);
        }
        value
    }

    /// Whether a miss with no order in view may read the store: at most once per
    /// [`UNSEEN_READ_EVERY`], whatever the number of misses.
    fn may_read_unseen(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_unseen_read.load(Ordering::Relaxed);
        now >= next
            && self
                .next_unseen_read
                .compare_exchange(
                    next,
                    now + UNSEEN_READ_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreSpec;

    #[tokio::test]
    async fn a_miss_reads_the_store_only_while_an_order_is_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&StoreSpec::Embedded { dir: dir.path().to_path_buf() }).await.unwrap();
        let keys = Keys::new("traefik");
        store.put(&keys.acme_challenge("late"), "late.thumbprint").await.unwrap();
        let challenges = Challenges::new(store, keys);
        assert_eq!(
            challenges.answer("late").await.as_deref(),
            Some("late.thumbprint"),
            "before the watch has listed the orders, one may be in progress"
        );
        challenges.set_ordering(false);
        assert_eq!(
            challenges.answer("late").await.as_deref(),
            Some("late.thumbprint"),
            "no order in view: one read in a while, since the watch may lag"
        );
        assert_eq!(challenges.answer("late").await, None, "and then answered from memory");
        challenges.set_ordering(true);
        let (a, b) = tokio::join!(challenges.answer("late"), challenges.answer("late"));
        for answer in [a, b] {
            assert_eq!(answer.as_deref(), Some("late.thumbprint"), "the watch lags: the store answers");
        }
        assert!(challenges.reads.lock().unwrap().is_empty(), "finished reads are forgotten");
        assert_eq!(challenges.answer("unknown").await, None);
        challenges.replace(HashMap::from([("cached".to_string(), "cached.thumbprint".to_string())]));
        assert_eq!(challenges.answer("cached").await.as_deref(), Some("cached.thumbprint"));
    }
}
