//! The ACME manager of one replica. Two loops:
//! - **follow**: lists and watches `<prefix>/acme/`, serves every stored certificate (the
//!   certificate store's ACME source) and answers every pending HTTP-01 token;
//! - **schedule**: for every wanted certificate that the store lacks, or that is due for
//!   renewal, runs an order under its lock (at most [`PARALLEL`] at once), with per-name
//!   exponential backoff after failures. Outcomes are [`Event`]s.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use instant_acme::Account;
use tokio::{
    sync::{broadcast, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{
    account,
    order::{self, Outcome},
    record::CertRecord,
    sealed::Keyring,
    AcmeError, Challenges,
};
use crate::{
    config::model::{Acme, Domain},
    store::{keys::Keys, KeyValue, Store, WatchEvent},
    tls::{CertStore, Source},
};

/// Orders one replica runs at once.
const PARALLEL: usize = 4;
/// How often wanted names are checked without an event (a holder that died frees its lock
/// when its lease runs out; renewals come due).
const TICK: Duration = Duration::from_secs(2);
/// Backoff after a failed order: doubled per failure from `BACKOFF_BASE` up to `BACKOFF_CAP`.
/// Two minutes first keeps a failing name at about five attempts in its first hour, Let's
/// Encrypt's limit of failed validations per name per hour.
const BACKOFF_BASE: Duration = Duration::from_secs(120);
const BACKOFF_CAP: Duration = Duration::from_secs(6 * 3600);

#[derive(Clone, Debug)]
pub enum Event {
    Issued { domain: String, not_after: i64, renewal: bool },
    Failed { domain: String, error: String, retry_in: Duration },
}

pub struct Manager {
    pub store: Store,
    pub keys: Keys,
    pub acme: Acme,
    pub keyring: Arc<Keyring>,
    /// This replica's name in lock keys.
    pub holder: String,
    pub certs: Arc<CertStore>,
    pub challenges: Arc<Challenges>,
    /// Certificates the dynamic configuration asks for (from the watcher).
    pub wanted: watch::Receiver<Vec<Domain>>,
    pub events: broadcast::Sender<Event>,
}

type Records = Arc<BTreeMap<String, CertRecord>>;

impl Manager {
    pub async fn run(self, shutdown: CancellationToken) {
        let (records_tx, records) = watch::channel(Records::default());
        let follow = follow(
            self.store.clone(),
            self.keys.clone(),
            self.keyring.clone(),
            self.certs.clone(),
            self.challenges.clone(),
            records_tx,
        );
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = follow => {}
            _ = self.schedule(records) => {}
        }
    }

    async fn schedule(&self, mut records: watch::Receiver<Records>) {
        let mut wanted = self.wanted.clone();
        let mut account: Option<Arc<Account>> = None;
        // After a failure to reach the CA for the account: (failures, next attempt).
        let mut account_failures: (u32, Instant) = (0, Instant::now());
        let mut failures: HashMap<String, (u32, Instant)> = HashMap::new();
        let mut running: JoinSet<(Vec<String>, bool, Result<Outcome, AcmeError>)> = JoinSet::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        loop {
            let stored = records.borrow_and_update().clone();
            let mut domains = self.acme.domains.clone();
            domains.extend(wanted.borrow_and_update().iter().cloned());
            for domain in domains {
                let names: Vec<String> = std::iter::once(domain.main.clone()).chain(domain.sans.clone()).collect();
                let now = super::now();
                let current = stored.get(&domain.main);
                let renewal = current.is_some_and(|r| r.covers(&names, now));
                if current.is_some_and(|r| r.covers(&names, now) && now < r.renew_at())
                    || in_flight.contains(&domain.main)
                    || running.len() >= PARALLEL
                    || failures.get(&domain.main).is_some_and(|(_, next)| Instant::now() < *next)
                {
                    continue;
                }
                if account.is_none() && Instant::now() < account_failures.1 {
                    break;
                }
                let account = match &account {
                    Some(a) => a.clone(),
                    None => {
                        match account::account(&self.store, &self.keys, &self.acme, &self.keyring, &self.holder).await {
                            Ok(a) => account.insert(Arc::new(a)).clone(),
                            Err(err) => {
                                let failures = account_failures.0 + 1;
                                let retry_in = Duration::from_secs(5 << failures.min(6)).min(Duration::from_secs(300));
                                account_failures = (failures, Instant::now() + retry_in);
                                tracing::error!(ca = %self.acme.ca_server, ?retry_in, "ACME account: {err}");
                                break;
                            }
                        }
                    }
                };
                in_flight.insert(domain.main.clone());
                let (store, keys, acme, keyring, holder) = (
                    self.store.clone(),
                    self.keys.clone(),
                    self.acme.clone(),
                    self.keyring.clone(),
                    self.holder.clone(),
                );
                running.spawn(async move {
                    let ctx = order::Context {
                        store: &store,
                        keys: &keys,
                        acme: &acme,
                        account: &account,
                        keyring: &keyring,
                        holder: &holder,
                    };
                    let outcome = order::obtain(&ctx, &names, false).await;
                    (names, renewal, outcome)
                });
            }
            tokio::select! {
                _ = wanted.changed() => {}
                _ = records.changed() => {}
                _ = tokio::time::sleep(TICK) => {}
                Some(Ok((names, renewal, outcome))) = running.join_next() => {
                    in_flight.remove(&names[0]);
                    self.settle(&names[0], renewal, outcome, &mut failures);
                }
            }
        }
    }

    fn settle(
        &self,
        domain: &str,
        renewal: bool,
        outcome: Result<Outcome, AcmeError>,
        failures: &mut HashMap<String, (u32, Instant)>,
    ) {
        match outcome {
            Ok(Outcome::Issued(record)) => {
                failures.remove(domain);
                tracing::info!(domain, not_after = record.not_after, renewal, "certificate issued and stored");
                let _ = self.events.send(Event::Issued { domain: domain.into(), not_after: record.not_after, renewal });
            }
            Ok(Outcome::AlreadyStored | Outcome::Busy) => {}
            Err(err) => {
                let count = failures.get(domain).map_or(1, |(n, _)| n + 1);
                let retry_in = backoff(count);
                failures.insert(domain.to_string(), (count, Instant::now() + retry_in));
                tracing::warn!(domain, failures = count, ?retry_in, "certificate order failed: {err}");
                let _ = self.events.send(Event::Failed { domain: domain.into(), error: err.to_string(), retry_in });
            }
        }
    }
}

/// The delay before attempt `failures + 1`, with ±20% jitter so replicas do not retry together.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let delay = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_CAP);
    let jitter = 0.8 + 0.4 * (rand_unit());
    delay.mul_f64(jitter)
}

fn rand_unit() -> f64 {
    let mut byte = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
}

/// Follows `<prefix>/acme/`: certificates to the TLS resolver, tokens to the HTTP-01 cache.
async fn follow(
    store: Store,
    keys: Keys,
    keyring: Arc<Keyring>,
    certs: Arc<CertStore>,
    challenges: Arc<Challenges>,
    records: watch::Sender<Records>,
) {
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
        state.publish(&keyring, &certs, &challenges, &records);
        let Ok(mut watch) = store.watch(&root, listing.revision).await else { continue };
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
                    state.publish(&keyring, &certs, &challenges, &records);
                    watch.next().await
                }
            };
        }
    }
}

/// The ACME keys as stored, and which kind changed since the last publish.
struct State {
    cert_root: String,
    token_root: String,
    certs: BTreeMap<String, KeyValue>,
    tokens: HashMap<String, String>,
    certs_changed: bool,
    tokens_changed: bool,
    /// Unusable certificate values already logged (key and revision), so each is logged once.
    reported: HashSet<(String, crate::store::Revision)>,
}

impl State {
    fn new(keys: &Keys) -> State {
        State {
            cert_root: keys.acme_certs(),
            token_root: keys.acme_challenges(),
            certs: BTreeMap::new(),
            tokens: HashMap::new(),
            certs_changed: true,
            tokens_changed: true,
            reported: HashSet::new(),
        }
    }

    fn put(&mut self, kv: KeyValue) {
        if let Some(token) = kv.key.strip_prefix(&self.token_root) {
            self.tokens.insert(token.to_string(), String::from_utf8_lossy(&kv.value).into_owned());
            self.tokens_changed = true;
        } else if kv.key.starts_with(&self.cert_root) {
            self.certs.insert(kv.key.clone(), kv);
            self.certs_changed = true;
        }
    }

    fn delete(&mut self, key: &str) {
        if let Some(token) = key.strip_prefix(&self.token_root) {
            self.tokens_changed |= self.tokens.remove(token).is_some();
        } else {
            self.certs_changed |= self.certs.remove(key).is_some();
        }
    }

    /// Hands what changed to the resolver, the HTTP-01 cache and the scheduler.
    fn publish(
        &mut self,
        keyring: &Keyring,
        certs: &CertStore,
        challenges: &Challenges,
        records: &watch::Sender<Records>,
    ) {
        if std::mem::take(&mut self.tokens_changed) {
            challenges.replace(self.tokens.clone());
        }
        if !std::mem::take(&mut self.certs_changed) {
            return;
        }
        let mut loaded = Vec::new();
        let mut by_main = BTreeMap::new();
        for (key, kv) in &self.certs {
            // A record this replica cannot open (wrong storage key) still counts as stored, so
            // that it is never ordered again over another replica's certificate.
            let result = CertRecord::decode(key, &kv.value).and_then(|record| {
                let loaded = record.load(key, keyring);
                by_main.insert(record.main.clone(), record);
                loaded
            });
            match result {
                Ok(certificate) => loaded.push(certificate),
                Err(err) => {
                    if self.reported.insert((key.clone(), kv.mod_revision)) {
                        tracing::error!("ACME certificate not served: {err}");
                    }
                }
            }
        }
        certs.replace(Source::Acme, loaded);
        records.send_replace(Arc::new(by_main));
    }
}
