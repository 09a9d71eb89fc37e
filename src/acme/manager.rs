//! The ACME manager of one replica. Two loops:
//! - **follow** (see [`super::follow`]): serves every stored certificate and answers every
//!   pending challenge;
//! - **schedule**: for every wanted certificate that the store lacks, or that is due for
//!   renewal (see [`super::ari`]), runs an order under its lock (at most [`PARALLEL`] at once),
//!   unless the cluster's backoff for that name is running. Outcomes are [`Event`]s.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use instant_acme::Account;
use tokio::{
    sync::{broadcast, mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{
    account,
    ari::Renewals,
    follow::{self, Sinks, Stored},
    order::{self, Mode, Outcome},
    sealed::Keyring,
    AcmeError, Challenges,
};
use crate::{
    config::model::{Acme, Domain},
    store::{keys::Keys, Store},
    tls::CertStore,
};

/// Orders one replica runs at once.
const PARALLEL: usize = 4;
/// How often wanted names are checked without an event (a holder that died frees its lock
/// when its lease runs out; renewals and backoffs come due).
const TICK: Duration = Duration::from_secs(1);

/// What happened to a certificate, for logs and, later, the API and metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Issued {
        domain: String,
        not_after: i64,
    },
    Renewed {
        domain: String,
        not_after: i64,
    },
    /// An order failed; `problem` is the ACME problem type when the CA sent one.
    Failed {
        domain: String,
        problem: Option<String>,
        error: String,
        retry_in: Duration,
    },
    /// This replica took over an order whose holder died mid-order.
    TakenOver {
        domain: String,
        from: String,
    },
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
    /// Names handshakes asked for (onDemand, already admitted by the policy).
    pub demands: mpsc::UnboundedReceiver<Domain>,
    pub events: broadcast::Sender<Event>,
}

/// The scheduler's memory between passes.
#[derive(Default)]
struct Schedule {
    account: Option<Arc<Account>>,
    /// After failing to get the account: (failures, next attempt).
    account_backoff: (u32, Option<Instant>),
    /// Names whose order could not even start (store unreachable): local backoff.
    local_backoff: HashMap<String, Instant>,
    demanded: BTreeMap<String, Domain>,
    in_flight: HashSet<String>,
    renewals: Renewals,
}

type Job = (String, bool, Result<Outcome, AcmeError>);

impl Manager {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (stored_tx, stored) = watch::channel(Arc::<Stored>::default());
        let sinks = Sinks {
            keyring: self.keyring.clone(),
            certs: self.certs.clone(),
            challenges: self.challenges.clone(),
            stored: stored_tx,
        };
        let follow = follow::follow(self.store.clone(), self.keys.clone(), sinks);
        // The scheduler borrows `self`; it owns the receiving end of the handshakes' requests.
        let demands = std::mem::replace(&mut self.demands, mpsc::unbounded_channel().1);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = follow => {}
            _ = self.schedule(stored, demands) => {}
        }
    }

    async fn schedule(&self, mut stored: watch::Receiver<Arc<Stored>>, mut demands: mpsc::UnboundedReceiver<Domain>) {
        let mut wanted = self.wanted.clone();
        let mut s = Schedule::default();
        let mut running: JoinSet<Job> = JoinSet::new();
        loop {
            let snapshot = stored.borrow_and_update().clone();
            let jobs = self.jobs(&snapshot, &wanted.borrow_and_update(), &s.demanded);
            if !jobs.is_empty() || !snapshot.certs.is_empty() {
                if let Some(account) = self.account(&mut s).await {
                    s.renewals.refresh(&account, &snapshot.certs).await;
                }
            }
            for (domain, mode) in jobs {
                if running.len() >= PARALLEL {
                    break;
                }
                let names: Vec<String> = std::iter::once(domain.main.clone()).chain(domain.sans).collect();
                let now = super::now();
                let current = snapshot.certs.get(&domain.main);
                let replacing = current.filter(|r| r.covers(&names, now)).map(|r| r.not_after);
                if current.is_some_and(|r| r.covers(&names, now) && now < s.renewals.renew_at(r))
                    || s.in_flight.contains(&domain.main)
                    || snapshot.failures.get(&domain.main).is_some_and(|f| !f.wait().is_zero())
                    || s.local_backoff.get(&domain.main).is_some_and(|at| Instant::now() < *at)
                {
                    continue;
                }
                let Some(account) = s.account.clone() else { break };
                s.in_flight.insert(domain.main.clone());
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
                    let outcome = order::obtain(&ctx, &names, mode, replacing).await;
                    (names[0].clone(), replacing.is_some(), outcome)
                });
            }
            tokio::select! {
                _ = wanted.changed() => {}
                _ = stored.changed() => {}
                Some(domain) = demands.recv() => drop(s.demanded.insert(domain.main.clone(), domain)),
                _ = tokio::time::sleep(TICK) => {}
                Some(Ok((domain, renewal, outcome))) = running.join_next() => {
                    s.in_flight.remove(&domain);
                    self.settle(&domain, renewal, outcome, &mut s);
                }
            }
        }
    }

    /// Every certificate this replica should keep: static domains, the routers', onDemand names
    /// asked for here and stored onDemand certificates (for renewal), by main domain.
    fn jobs(&self, stored: &Stored, wanted: &[Domain], demanded: &BTreeMap<String, Domain>) -> Vec<(Domain, Mode)> {
        let mut jobs: BTreeMap<String, (Domain, Mode)> = BTreeMap::new();
        let on_demand = stored
            .certs
            .values()
            .filter(|r| r.on_demand && self.acme.on_demand)
            .map(|r| Domain { main: r.main.clone(), sans: r.names.iter().skip(1).cloned().collect() });
        for domain in on_demand.chain(demanded.values().cloned()) {
            jobs.insert(domain.main.clone(), (domain, Mode::OnDemand));
        }
        for domain in self.acme.domains.iter().chain(wanted) {
            jobs.insert(domain.main.clone(), (domain.clone(), Mode::Wanted));
        }
        jobs.into_values().collect()
    }

    /// The cluster's account, once this replica has it; retried with backoff when the CA or
    /// the store cannot be reached.
    async fn account(&self, s: &mut Schedule) -> Option<Arc<Account>> {
        if let Some(account) = &s.account {
            return Some(account.clone());
        }
        if s.account_backoff.1.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        match account::account(&self.store, &self.keys, &self.acme, &self.keyring, &self.holder).await {
            Ok(account) => Some(s.account.insert(Arc::new(account)).clone()),
            Err(err) => {
                let failures = s.account_backoff.0 + 1;
                let retry_in = Duration::from_secs(5 << failures.min(6)).min(Duration::from_secs(300));
                s.account_backoff = (failures, Some(Instant::now() + retry_in));
                tracing::error!(ca = %self.acme.ca_server, ?retry_in, "ACME account: {err}");
                None
            }
        }
    }

    fn settle(&self, domain: &str, renewal: bool, outcome: Result<Outcome, AcmeError>, s: &mut Schedule) {
        let emit = |event: Event| drop(self.events.send(event));
        let domain_s = domain.to_string();
        match outcome {
            Ok(Outcome::Issued { record, took_over }) => {
                s.local_backoff.remove(domain);
                if let Some(from) = took_over {
                    emit(Event::TakenOver { domain: domain_s.clone(), from });
                }
                tracing::info!(domain, not_after = record.not_after, renewal, "certificate issued and stored");
                emit(if renewal {
                    Event::Renewed { domain: domain_s, not_after: record.not_after }
                } else {
                    Event::Issued { domain: domain_s, not_after: record.not_after }
                });
            }
            Ok(Outcome::Failed { error, retry_in, took_over }) => {
                if let Some(from) = took_over {
                    emit(Event::TakenOver { domain: domain_s.clone(), from });
                }
                tracing::warn!(domain, ?retry_in, "certificate order failed: {error}");
                let problem = match &error {
                    AcmeError::Problem { kind, .. } => Some(kind.clone()),
                    _ => None,
                };
                emit(Event::Failed { domain: domain_s, problem, error: error.to_string(), retry_in });
            }
            Ok(Outcome::AlreadyStored | Outcome::Busy | Outcome::BackingOff) => {}
            Err(error) => {
                let retry_in = super::progress::backoff(1, Duration::from_secs(10));
                s.local_backoff.insert(domain_s.clone(), Instant::now() + retry_in);
                tracing::warn!(domain, ?retry_in, "certificate order could not start: {error}");
                emit(Event::Failed { domain: domain_s, problem: None, error: error.to_string(), retry_in });
            }
        }
    }
}
