//! Live dynamic configuration: lists the store's `http/` and `tls/` trees, follows the watch,
//! and turns every change into a new immutable routing table and certificate set, swapped in
//! atomically. A burst of changes is coalesced into one rebuild. A router or service with a bad
//! key is rejected alone (logged, and kept in [`Status`] for the API); everything else keeps
//! working. When the store is unreachable the last good table keeps serving, and the watcher
//! re-lists once the store answers again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    balancer::{self, Pool},
    config::StaticConfig,
    dynamic::{self, DynamicConfig},
    routing::Table,
    store::{codec, keys::Keys, KeyValue, Revision, Store, WatchEvent},
    tls::{self, CertStore, Source},
    upstream::Upstream,
};

/// A burst of changes ends when the watch stays quiet this long...
const QUIET: Duration = Duration::from_millis(10);
/// ...or when it has lasted this long.
const MAX_BURST: Duration = Duration::from_millis(100);

/// What the last rebuild found, for logs and the API.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The store revision the table reflects.
    pub revision: Revision,
    pub routers: usize,
    pub services: usize,
    pub certificates: usize,
    /// Each rejected router, service or certificate, with the key that made it invalid.
    pub rejected: Vec<String>,
}

pub struct Watcher {
    pub store: Store,
    pub keys: Keys,
    pub statics: Arc<StaticConfig>,
    pub table: Arc<ArcSwap<Table>>,
    pub certs: Arc<CertStore>,
    pub upstream: Upstream,
    pub status: watch::Sender<Status>,
    /// The pools of the current table, reused by the next build when unchanged.
    pools: HashMap<String, Arc<Pool>>,
}

enum Next {
    Relist,
    Stop,
}

impl Watcher {
    pub fn new(
        store: Store,
        keys: Keys,
        statics: Arc<StaticConfig>,
        certs: Arc<CertStore>,
        upstream: Upstream,
    ) -> Watcher {
        Watcher {
            store,
            keys,
            statics,
            table: Arc::new(ArcSwap::from_pointee(Table::default())),
            certs,
            upstream,
            status: watch::channel(Status::default()).0,
            pools: HashMap::new(),
        }
    }

    /// Follows the store until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let prefix = format!("{}/", self.keys.prefix());
        let mut delay = Duration::from_millis(250);
        loop {
            let listed = tokio::select! {
                _ = shutdown.cancelled() => return,
                listed = self.store.list(&prefix) => listed,
            };
            let listing = match listed {
                Ok(listing) => listing,
                Err(err) => {
                    tracing::warn!(
                        "reading dynamic configuration: {err}; serving the last good table, retrying in {delay:?}"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            delay = Duration::from_millis(250);
            let mut mirror: BTreeMap<String, KeyValue> = listing
                .kvs
                .into_iter()
                .filter(|kv| self.keys.dynamic_path(&kv.key).is_some())
                .map(|kv| (kv.key.clone(), kv))
                .collect();
            self.apply(&mirror, listing.revision, &shutdown);
            match self.follow(&prefix, listing.revision, &mut mirror, &shutdown).await {
                Next::Stop => return,
                Next::Relist => continue,
            }
        }
    }

    /// Applies watch events until the watch breaks (re-list) or shutdown.
    async fn follow(
        &mut self,
        prefix: &str,
        after: Revision,
        mirror: &mut BTreeMap<String, KeyValue>,
        shutdown: &CancellationToken,
    ) -> Next {
        let mut watch = match self.store.watch(prefix, after).await {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!("watching dynamic configuration: {err}; re-listing");
                return Next::Relist;
            }
        };
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Next::Stop,
                event = watch.next() => event,
            };
            let mut dirty = false;
            let mut revision;
            let mut pending = event;
            let burst = Instant::now() + MAX_BURST;
            loop {
                match pending {
                    None => return Next::Relist,
                    Some(WatchEvent::Compacted { .. }) => {
                        tracing::info!("the store's history moved on; re-listing dynamic configuration");
                        return Next::Relist;
                    }
                    Some(WatchEvent::Put(kv)) => {
                        revision = kv.mod_revision;
                        if self.keys.dynamic_path(&kv.key).is_some() {
                            dirty = true;
                            mirror.insert(kv.key.clone(), kv);
                        }
                    }
                    Some(WatchEvent::Delete { key, revision: r }) => {
                        revision = r;
                        dirty |= mirror.remove(&key).is_some();
                    }
                }
                let wait = QUIET.min(burst.saturating_duration_since(Instant::now()));
                match tokio::time::timeout(wait, watch.next()).await {
                    Ok(next) => pending = next,
                    Err(_) => break,
                }
            }
            if dirty {
                self.apply(mirror, revision, shutdown);
            }
        }
    }

    /// Builds and swaps in the table and certificates for the keys in `mirror`.
    fn apply(&mut self, mirror: &BTreeMap<String, KeyValue>, revision: Revision, shutdown: &CancellationToken) {
        let started = Instant::now();
        let config = dynamic::build(codec::decode_dynamic(&self.keys, mirror.values()));
        let services = balancer::build(&config, &self.pools);
        for pool in &services.new_pools {
            balancer::health::spawn(pool, self.upstream.clone(), shutdown.child_token());
        }
        let (table, warnings) = Table::build(&config, &services, &self.statics);
        let mut rejected: Vec<String> = config.rejected.iter().map(ToString::to_string).collect();
        rejected.extend(warnings);
        let certificates = self.load_certificates(&config, &mut rejected);
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }

        let routers = table.routers;
        self.table.store(Arc::new(table));
        self.pools = services.pools;

        let previous: BTreeSet<String> = self.status.borrow().rejected.iter().cloned().collect();
        for line in rejected.iter().filter(|r| !previous.contains(*r)) {
            tracing::error!("rejected: {line}");
        }
        tracing::info!(
            revision,
            routers,
            services = config.services.len(),
            certificates,
            rejected = rejected.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "dynamic configuration applied"
        );
        self.status.send_replace(Status { revision, routers, services: config.services.len(), certificates, rejected });
    }

    /// Loads `tls/certificates` and the default certificate; a bad one is rejected alone.
    fn load_certificates(&self, config: &DynamicConfig, rejected: &mut Vec<String>) -> usize {
        let mut loaded = Vec::new();
        for (i, cert) in config.certificates.iter().enumerate() {
            match tls::Loaded::from_pem(&cert.cert, &cert.key) {
                Ok(l) => loaded.push(l),
                Err(err) => rejected.push(format!("KV key {}/tls/certificates/{i}: {err}", self.keys.prefix())),
            }
        }
        let count = loaded.len();
        self.certs.replace(Source::Dynamic, loaded);
        let default = config.default_certificate.as_ref().and_then(|cert| {
            tls::Loaded::from_pem(&cert.cert, &cert.key)
                .map_err(|err| {
                    let key = format!("{}/tls/stores/default/defaultcertificate", self.keys.prefix());
                    rejected.push(format!("KV key {key}: {err}"));
                })
                .ok()
        });
        self.certs.set_default(default);
        count
    }
}
