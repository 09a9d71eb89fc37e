//! Follows `<prefix>/acme/` on every replica (control plane): stored certificates go to the
//! certificate sources, challenge responses to the data plane's snapshot as [`Answers`], and a
//! snapshot of certificates, failures and orders in progress to the scheduler. Each batch of
//! watch events is applied, then published once.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::sync::watch;

use super::{
    challenge,
    progress::{self, FailureRecord, OrderMarker},
    record::CertRecord,
    sealed::Keyring,
};
use crate::{
    control::store::{keys::Keys, KeyValue, Revision, Store, WatchEvent},
    data::plane::{Answers, Plane},
    data::tls::{CertStore, Source},
};

/// What the scheduler needs from the store.
#[derive(Debug, Default)]
pub struct Stored {
    /// Certificates by main domain, including ones this replica cannot open.
    pub certs: BTreeMap<String, CertRecord>,
    /// The cluster's backoff per main domain.
    pub failures: HashMap<String, FailureRecord>,
    /// Orders in progress (`acme/orders/`), by main domain: who started each. A marker
    /// outlives a holder that died; the lock says whether the holder is alive.
    pub orders: HashMap<String, OrderMarker>,
    /// Certificate locks held (`acme/locks/cert/`, bound to their holder's lease), by main
    /// domain: the holder's name and the lock key's revision.
    pub locked: HashMap<String, (String, Revision)>,
}

/// Where the published pieces go.
pub struct Sinks {
    pub keyring: Arc<Keyring>,
    pub certs: Arc<CertStore>,
    pub plane: Arc<Plane>,
    pub stored: watch::Sender<Arc<Stored>>,
}

pub async fn follow(store: Store, keys: Keys, sinks: Sinks) {
    let root = keys.acme_root();
    let mut delay = Duration::from_millis(250);
    loop {
        let listing = match store.list(&root).await {
            Ok(listing) => listing,
            Err(err) => {
                tracing::warn!("reading ACME state: {err}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(250);
        let mut state = State::new(&keys);
        for kv in listing.kvs {
            state.put(kv);
        }
        state.publish(&sinks);
        let mut watch = match store.watch(&root, listing.revision).await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!("watching ACME state: {err}; re-listing in {delay:?}");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        tracing::info!(
            certificates = state.count(Kind::Cert),
            orders = state.count(Kind::Order),
            "ACME state followed"
        );
        // Apply each event and what is already queued behind it, then publish once; re-list
        // when the watch breaks.
        let mut next = watch.next().await;
        loop {
            match next {
                Some(WatchEvent::Put(kv)) => state.put(kv),
                Some(WatchEvent::Delete { key, .. }) => state.delete(&key),
                Some(WatchEvent::Compacted { .. }) | None => break,
            }
            next = match tokio::time::timeout(Duration::ZERO, watch.next()).await {
                Ok(queued) => queued,
                Err(_) => {
                    state.publish(&sinks);
                    watch.next().await
                }
            };
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Cert,
    Token,
    Alpn,
    Failure,
    /// Markers of orders in progress.
    Order,
    /// Certificate locks: the scheduler leaves a locked name to its live holder.
    Lock,
}

/// The ACME keys as stored, and which kinds changed since the last publish.
struct State {
    roots: [(String, Kind); 6],
    /// Per kind, by the key's last part (main domain, token, name).
    values: HashMap<Kind, BTreeMap<String, KeyValue>>,
    changed: HashSet<Kind>,
    /// Unusable values already logged (key and revision), so each is logged once.
    reported: HashSet<(String, Revision)>,
}

impl State {
    fn new(keys: &Keys) -> State {
        State {
            roots: [
                (keys.acme_certs(), Kind::Cert),
                (keys.acme_challenges(), Kind::Token),
                (keys.acme_alpns(), Kind::Alpn),
                (keys.acme_failures(), Kind::Failure),
                (keys.acme_orders(), Kind::Order),
                (keys.acme_cert_locks(), Kind::Lock),
            ],
            values: HashMap::new(),
            changed: [Kind::Cert, Kind::Token, Kind::Alpn, Kind::Failure, Kind::Order, Kind::Lock]
                .into_iter()
                .collect(),
            reported: HashSet::new(),
        }
    }

    fn count(&self, kind: Kind) -> usize {
        self.values.get(&kind).map_or(0, BTreeMap::len)
    }

    /// The kind of `key` and its part after that kind's root.
    fn kind(&self, key: &str) -> Option<(Kind, String)> {
        self.roots.iter().find_map(|(root, kind)| Some((*kind, key.strip_prefix(root.as_str())?.to_string())))
    }

    fn put(&mut self, kv: KeyValue) {
        if let Some((kind, name)) = self.kind(&kv.key) {
            self.values.entry(kind).or_default().insert(name, kv);
            self.changed.insert(kind);
        }
    }

    fn delete(&mut self, key: &str) {
        if let Some((kind, name)) = self.kind(key) {
            if self.values.entry(kind).or_default().remove(&name).is_some() {
                self.changed.insert(kind);
            }
        }
    }

    fn report(&mut self, kv: &KeyValue, error: impl std::fmt::Display) {
        if self.reported.insert((kv.key.clone(), kv.mod_revision)) {
            tracing::error!("ACME: {error}");
        }
    }

    /// Hands what changed to the resolver, the challenge caches and the scheduler.
    fn publish(&mut self, sinks: &Sinks) {
        let changed = std::mem::take(&mut self.changed);
        let values = std::mem::take(&mut self.values);
        let of = |kind| values.get(&kind).into_iter().flatten();
        if changed.contains(&Kind::Token) || changed.contains(&Kind::Alpn) {
            let tokens =
                of(Kind::Token).map(|(token, kv)| (token.clone(), String::from_utf8_lossy(&kv.value).into_owned()));
            let tokens = tokens.collect();
            let mut alpn = HashMap::new();
            for (name, kv) in of(Kind::Alpn) {
                match challenge::load_alpn(&kv.key, &kv.value) {
                    Ok(key) => drop(alpn.insert(name.clone(), key)),
                    Err(err) => self.report(kv, err),
                }
            }
            sinks.plane.publish(|snapshot| snapshot.answers = Arc::new(Answers::new(tokens, alpn)));
        }
        if [Kind::Cert, Kind::Failure, Kind::Order, Kind::Lock].iter().any(|kind| changed.contains(kind)) {
            let mut stored = Stored::default();
            let mut loaded = Vec::new();
            for (_, kv) in of(Kind::Cert) {
                // A record this replica cannot open (wrong storage key) still counts as stored,
                // so that it is never ordered again over another replica's certificate.
                let result = CertRecord::decode(&kv.key, &kv.value).and_then(|record| {
                    let certificate = record.load(&kv.key, &sinks.keyring);
                    stored.certs.insert(record.main.clone(), record);
                    certificate
                });
                match result {
                    Ok(certificate) => loaded.push(certificate),
                    Err(err) => self.report(kv, format_args!("certificate not served: {err}")),
                }
            }
            for (main, kv) in of(Kind::Failure) {
                match progress::decode::<FailureRecord>(&kv.key, &kv.value) {
                    Ok(failure) => drop(stored.failures.insert(main.clone(), failure)),
                    Err(err) => self.report(kv, err),
                }
            }
            for (main, kv) in of(Kind::Order) {
                match progress::decode::<OrderMarker>(&kv.key, &kv.value) {
                    Ok(marker) => drop(stored.orders.insert(main.clone(), marker)),
                    Err(err) => self.report(kv, err),
                }
            }
            for (main, kv) in of(Kind::Lock) {
                let holder = String::from_utf8_lossy(&kv.value).into_owned();
                stored.locked.insert(main.clone(), (holder, kv.mod_revision));
            }
            if changed.contains(&Kind::Cert) {
                sinks.certs.replace(Source::Acme, loaded);
            }
            sinks.stored.send_replace(Arc::new(stored));
        }
        self.values = values;
    }
}
