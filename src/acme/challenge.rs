//! HTTP-01 answers on every replica: `GET /.well-known/acme-challenge/<token>` is answered from
//! a local cache that the ACME watch keeps in step with `<prefix>/acme/challenges/`, and, on a
//! miss (the CA's request can arrive before the watch event), from a direct read of the store.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

use crate::store::{keys::Keys, Store};

pub const PATH_PREFIX: &str = "/.well-known/acme-challenge/";

pub struct Challenges {
    tokens: ArcSwap<HashMap<String, String>>,
    store: Store,
    keys: Keys,
}

impl Challenges {
    pub fn new(store: Store, keys: Keys) -> Arc<Challenges> {
        Arc::new(Challenges { tokens: ArcSwap::default(), store, keys })
    }

    /// Replaces the cached tokens (token → key authorization).
    pub fn replace(&self, tokens: HashMap<String, String>) {
        self.tokens.store(Arc::new(tokens));
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
}
