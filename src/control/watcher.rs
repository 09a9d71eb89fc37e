//! Live dynamic configuration: lists the prefix, watches only the parts of it that hold
//! `http/` and `tls/` (so ACME's writes wake nothing here), and turns every change into a new immutable routing table and certificate set, swapped in
//! atomically. A burst of changes is coalesced into one rebuild. A router or service with a bad
//! key is rejected alone (logged, and kept in [`Status`] for the API); everything else keeps
//! working. When the store is unreachable the last good table keeps serving, and the watcher
//! re-lists once the store answers again. The file provider's objects ([`file_objects`]) join
//! the store's in the same table, followed also while the store is away.

mod certificates;
mod file_objects;

use file_objects::{changed, Files};

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::StaticConfig,
    control::events::{Bus, Event},
    control::store::{codec, keys::Keys, KeyValue, Revision, Store, WatchEvent},
    data::balancer::{self, Pool},
    data::plane::Plane,
    data::routing::Table,
    data::tls::{self, CertStore},
    data::upstream::Upstream,
    dynamic::{Owner, Parts},
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
    /// Every router, service and middleware with its status and errors (the API's view).
    pub runtime: Arc<crate::dynamic::runtime::Runtime>,
}

pub struct Watcher {
    pub store: Store,
    pub keys: Keys,
    pub statics: Arc<StaticConfig>,
    /// Where each new routing table is published.
    pub plane: Arc<Plane>,
    pub certs: Arc<CertStore>,
    pub events: Bus,
    /// Where the health checks run (the application's task tree).
    pub tasks: tokio_util::task::TaskTracker,
    pub upstream: Upstream,
    pub status: watch::Sender<Status>,
    /// The certificates the routers ask ACME for (when `[acme]` is configured).
    pub acme_wanted: watch::Sender<crate::control::acme::Wanted>,
    /// The pools of the current table, reused by the next build when unchanged.
    pools: HashMap<String, Arc<Pool>>,
    /// Every owner's keys as stored, and decoded.
    mirror: Mirror,
    parts: Parts,
    /// The certificates loaded from `tls/...` and the rejected ones, kept until it changes.
    certificates: (usize, Vec<String>),
    /// Stored keys that configure no router, service or middleware and cannot be read (a value
    /// on `http/routers` itself, a section Pylon does not read), with why: warned about once.
    ignored: BTreeMap<String, String>,
    /// The warnings of the last rebuild, so that each is logged once, not on every rebuild.
    warned: BTreeSet<String>,
    /// Each entrypoint's own TLS settings, which TLS options make stricter.
    tls_floors: BTreeMap<String, tls::TlsPolicy>,
    /// The file provider's latest files, when it is configured.
    pub file_set: Option<watch::Receiver<Arc<crate::control::files::FileSet>>>,
    files: Files,
}

/// The stored dynamic keys, grouped by the router, service or middleware they configure, and
/// the owners changed since the last rebuild.
#[derive(Default)]
struct Mirror {
    owners: BTreeMap<Owner, BTreeMap<String, KeyValue>>,
    dirty: BTreeSet<Owner>,
}

impl Mirror {
    fn put(&mut self, owner: Owner, kv: KeyValue) {
        self.owners.entry(owner.clone()).or_default().insert(kv.key.clone(), kv);
        self.dirty.insert(owner);
    }

    fn delete(&mut self, key: &str, owner: Owner) {
        let Some(keys) = self.owners.get_mut(&owner) else { return };
        if keys.remove(key).is_some() {
            if keys.is_empty() {
                self.owners.remove(&owner);
            }
            self.dirty.insert(owner);
        }
    }
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
        (plane, certs): (Arc<Plane>, Arc<CertStore>),
        upstream: Upstream,
        (events, tasks): (Bus, tokio_util::task::TaskTracker),
    ) -> Watcher {
        Watcher {
            store,
            keys,
            tls_floors: statics.tls_floors(),
            statics,
            plane,
            certs,
            events,
            tasks,
            upstream,
            status: watch::channel(Status::default()).0,
            acme_wanted: watch::channel(Default::default()).0,
            pools: HashMap::new(),
            mirror: Mirror::default(),
            parts: Parts::default(),
            certificates: (0, Vec::new()),
            ignored: BTreeMap::new(),
            warned: BTreeSet::new(),
            file_set: None,
            files: Files::default(),
        }
    }

    /// Takes in one stored key. A key of a router, service or middleware goes to its owner even
    /// when it cannot be read: decoding the owner then fails with the key's error, and the owner
    /// keeps its last good version.
    fn put(&mut self, kv: KeyValue) {
        let Some(path) = self.keys.dynamic_path(&kv.key) else { return };
        let owner = Owner::of(&path);
        match codec::dynamic_path(&self.keys, &kv) {
            Ok(None) => {}
            Err(why) if owner == Owner::Rest => {
                self.mirror.delete(&kv.key, owner);
                self.ignored.insert(kv.key, why);
            }
            Ok(Some(_)) | Err(_) => {
                self.ignored.remove(&kv.key);
                self.mirror.put(owner, kv);
            }
        }
    }

    fn delete(&mut self, key: &str) {
        if let Some(path) = self.keys.dynamic_path(key) {
            self.ignored.remove(key);
            self.mirror.delete(key, Owner::of(&path));
        }
    }

    /// Follows the store until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let prefix = format!("{}/", self.keys.prefix());
        let mut delay = Duration::from_millis(250);
        let mut failed_watches = 0u32;
        let mut files = self.file_set.take();
        if let Some(set) = files.as_mut().map(|f| f.borrow_and_update().clone()) {
            self.take_files(&set);
        }
        loop {
            let listed = tokio::select! {
                _ = shutdown.cancelled() => return,
                listed = self.store.list(&prefix) => listed,
            };
            let listed_at = Instant::now();
            let listing = match listed {
                Ok(listing) => listing,
                Err(err) => {
                    tracing::warn!(
                        "reading dynamic configuration: {err}; serving the last good table, retrying in {delay:?}"
                    );
                    // The files are served, and followed, while the store is away.
                    if self.files.pending {
                        let revision = self.status.borrow().revision;
                        self.apply(revision, listed_at, &shutdown);
                    }
                    let until = tokio::time::sleep(delay);
                    tokio::pin!(until);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = &mut until => break,
                            set = changed(&mut files) => if self.take_files(&set) {
                                let revision = self.status.borrow().revision;
                                self.apply(revision, Instant::now(), &shutdown);
                            },
                        }
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // A watch that keeps failing after good listings backs off like a failing listing.
            delay = Duration::from_millis(250) * 2u32.pow(failed_watches.min(4));
            // The watch starts from the listing (on Consul it is seeded with it), so it is made
            // before the listing is consumed; the listing is applied even when it cannot be.
            let parts = self.keys.dynamic_watch_parts();
            let watch = tokio::select! {
                _ = shutdown.cancelled() => return,
                watch = self.store.watch_parts(&parts, &listing) => watch,
            };
            // Every owner known before the listing is decoded again: the ones it no longer has
            // go, and the others keep their last good version if their keys are now invalid.
            let before = std::mem::take(&mut self.mirror).owners.into_keys();
            self.mirror.dirty.extend(before.chain([Owner::Rest]));
            self.ignored.clear();
            for kv in listing.kvs {
                self.put(kv);
            }
            self.apply(listing.revision, listed_at, &shutdown);
            let watch = match watch {
                Ok(watch) => watch,
                Err(err) => {
                    tracing::warn!("watching dynamic configuration: {err}; re-listing in {delay:?}");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    failed_watches += 1;
                    continue;
                }
            };
            failed_watches = 0;
            match self.follow(watch, &mut files, &shutdown).await {
                Next::Stop => return,
                Next::Relist => continue,
            }
        }
    }

    /// Applies watch events until the watch breaks (re-list) or shutdown.
    async fn follow(
        &mut self,
        mut watch: crate::control::store::Watch,
        files: &mut Option<watch::Receiver<Arc<crate::control::files::FileSet>>>,
        shutdown: &CancellationToken,
    ) -> Next {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Next::Stop,
                event = watch.next() => event,
                set = changed(files) => {
                    if self.take_files(&set) {
                        let revision = self.status.borrow().revision;
                        self.apply(revision, Instant::now(), shutdown);
                    }
                    continue;
                }
            };
            let mut revision = 0;
            let mut pending = event;
            let arrived = Instant::now();
            let burst = arrived + MAX_BURST;
            loop {
                match pending {
                    None => return Next::Relist,
                    Some(WatchEvent::Compacted { .. }) => {
                        tracing::info!("the store's history moved on; re-listing dynamic configuration");
                        return Next::Relist;
                    }
                    // Parts of the prefix are watched apart: the highest revision seen so far is
                    // the one the configuration is at.
                    Some(WatchEvent::Put(kv)) => {
                        revision = revision.max(kv.mod_revision);
                        self.put(kv);
                    }
                    Some(WatchEvent::Delete { key, revision: r }) => {
                        revision = revision.max(r);
                        self.delete(&key);
                    }
                }
                let wait = QUIET.min(burst.saturating_duration_since(Instant::now()));
                match tokio::time::timeout(wait, watch.next()).await {
                    Ok(next) => pending = next,
                    Err(_) => break,
                }
            }
            if !self.mirror.dirty.is_empty() {
                self.apply(revision, arrived, shutdown);
            }
        }
    }

    /// Decodes the owners changed since the last rebuild, then builds and swaps in the table
    /// and certificates.
    /// `since`: when the first change it applies reached this replica.
    fn apply(&mut self, revision: Revision, since: Instant, shutdown: &CancellationToken) {
        let started = Instant::now();
        let certificates_changed =
            self.mirror.dirty.contains(&Owner::Rest) || std::mem::take(&mut self.files.certificates_dirty);
        self.files.pending = false;
        for owner in std::mem::take(&mut self.mirror.dirty) {
            match self.mirror.owners.get(&owner).map(|keys| codec::decode_dynamic(&self.keys, keys.values())) {
                None => self.parts.update(owner, None),
                Some(Ok(tree)) => self.parts.update(owner, Some(tree)),
                Some(Err(diagnostic)) => self.parts.reject(owner, diagnostic),
            }
        }
        let config = self.parts.assemble();
        let services = balancer::build(&config, &self.pools);
        for pool in &services.new_pools {
            balancer::health::spawn(&self.tasks, pool, self.upstream.clone(), shutdown.child_token());
        }
        let (mut table, warnings) =
            Table::build(&config, &services, &self.statics, &self.plane.load().table, &self.upstream);
        let mut runtime = config.runtime.clone();
        for warning in &warnings {
            runtime.note_table_warning(warning);
        }
        let mut rejected: Vec<String> = config.rejected.iter().map(ToString::to_string).collect();
        rejected.extend(warnings);
        let options = config.tls_options.iter().filter_map(|(n, p)| Some((n.clone(), p.clone()?))).collect();
        let wanted = std::mem::take(&mut table.tls_wanted);
        let previous = self.plane.load().handshakes.clone();
        let (handshakes, conflicts) =
            tls::Handshakes::build(&self.plane, &self.tls_floors, &options, &wanted, &previous);
        if certificates_changed {
            self.certificates = self.load_certificates(&config);
        }
        let certificates = self.certificates.0;
        rejected.extend(self.certificates.1.iter().cloned());
        rejected.extend(self.files.errors.iter().cloned());
        let warnings: BTreeSet<String> = config
            .warnings
            .iter()
            .map(ToString::to_string)
            .chain(
                self.ignored
                    .iter()
                    .map(|(key, why)| format!("{}: {why}; ignored", crate::config::Origin::Store(key.clone()))),
            )
            .chain(conflicts)
            .chain(self.files.warnings.iter().cloned())
            .chain(crate::control::acme::unknown_resolvers(&config, &self.statics).into_iter().map(
                |(router, resolver)| {
                    format!("router {router}: tls.certResolver {resolver:?} is not a certificate resolver of the static configuration; it gets no ACME certificate")
                },
            ))
            .collect();
        for warning in warnings.difference(&self.warned) {
            tracing::warn!("{warning}");
        }
        self.warned = warnings;

        let routers = table.routers;
        self.plane.publish(|snapshot| {
            snapshot.table = Arc::new(table);
            snapshot.handshakes = Arc::new(handshakes);
        });
        if !self.statics.resolvers.is_empty() {
            let wanted = crate::control::acme::wanted(&config, &self.statics);
            self.acme_wanted.send_if_modified(|current| {
                let changed = *current != wanted;
                *current = wanted;
                changed
            });
        }
        self.pools = services.pools;

        let previous: BTreeSet<String> = self.status.borrow().rejected.iter().cloned().collect();
        for line in rejected.iter().filter(|r| !previous.contains(*r)) {
            self.events.emit(Event::Rejected { what: line.clone() });
        }
        tracing::debug!(revision, took_ms = started.elapsed().as_millis() as u64, "table built");
        self.events.emit(Event::ConfigApplied {
            revision,
            delay: since.elapsed(),
            routers,
            services: config.services.len(),
            certificates,
            rejected: rejected.len(),
        });
        let runtime = Arc::new(runtime);
        self.status.send_replace(Status {
            revision,
            routers,
            services: config.services.len(),
            certificates,
            rejected,
            runtime,
        });
    }
}
