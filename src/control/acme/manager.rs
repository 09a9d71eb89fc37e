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
    sync::{mpsc, watch},
    task::{Id, JoinSet},
};
use tokio_util::sync::CancellationToken;

use super::{
    account,
    ari::Renewals,
    follow::{self, Sinks, Stored},
    order::{self, Mode, Outcome},
    record::CertRecord,
    sealed::Keyring,
    AcmeError, Wanted,
};
use crate::{
    config::model::{Acme, Domain},
    control::events::{Bus, Event},
    control::store::{keys::Keys, Compare, Lease, Op, Store, Txn},
    data::plane::Plane,
    data::tls::CertStore,
};

/// Orders one replica runs at once.
const PARALLEL: usize = 4;
/// How often wanted names are checked without an event (a holder that died frees its lock
/// when its lease runs out; renewals and backoffs come due).
const TICK: Duration = Duration::from_secs(1);

pub struct Manager {
    pub store: Store,
    pub keys: Keys,
    /// The certificate resolvers (v3's `certificatesResolvers`, or v1.7's one `[acme]`).
    pub resolvers: Vec<Acme>,
    pub keyring: Arc<Keyring>,
    /// This replica's name in lock keys.
    pub holder: String,
    pub certs: Arc<CertStore>,
    /// Where challenge answers are published; an order waits for its own to be served.
    pub plane: Arc<Plane>,
    /// Certificates the dynamic configuration asks for, by resolver (from the watcher).
    pub wanted: watch::Receiver<Wanted>,
    /// Names handshakes asked for (onDemand, already admitted by the policy).
    pub demands: mpsc::UnboundedReceiver<Domain>,
    pub events: Bus,
    /// After shutdown, how long an order in flight may still finish (`graceTimeOut`).
    pub grace: Duration,
    /// Where the follower publishes the cluster's ACME state (the API's cluster view reads it).
    pub stored: watch::Sender<Arc<Stored>>,
}

/// The scheduler's memory between passes.
#[derive(Default)]
struct Schedule {
    /// Per resolver, in [`Manager::resolvers`]' order.
    resolvers: Vec<Resolver>,
    /// Names whose order could not even start (store unreachable): local backoff.
    local_backoff: HashMap<String, Instant>,
    demanded: BTreeMap<String, Domain>,
    in_flight: HashSet<String>,
    /// The main domain of each running order task, to settle a task that panicked.
    tasks: HashMap<Id, String>,
    /// The replica's one lease (etcd's session pattern): every lock and challenge response of
    /// this replica is bound to it; granted again when lost.
    lease: Option<Arc<Lease>>,
}

/// What the scheduler keeps per resolver: its account (one per CA in the store) and the
/// renewal times its CA suggests.
#[derive(Default)]
struct Resolver {
    account: Option<Arc<Account>>,
    /// After failing to get the account: (failures, next attempt).
    account_backoff: (u32, Option<Instant>),
    renewals: Renewals,
}

/// A finished order: its name, whether it renewed, its outcome and how long it took.
type Job = (String, bool, Result<Outcome, AcmeError>, Duration);

impl Manager {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let stored = self.stored.subscribe();
        let sinks = Sinks {
            keyring: self.keyring.clone(),
            certs: self.certs.clone(),
            plane: self.plane.clone(),
            stored: self.stored.clone(),
        };
        let follow = follow::follow(self.store.clone(), self.keys.clone(), sinks);
        // The scheduler borrows `self`; it owns the receiving end of the handshakes' requests.
        let demands = std::mem::replace(&mut self.demands, mpsc::unbounded_channel().1);
        // The follower keeps publishing while orders in flight finish after shutdown.
        tokio::select! {
            _ = follow => {}
            _ = self.schedule(stored, demands, shutdown) => {}
        }
    }

    async fn schedule(
        &self,
        mut stored: watch::Receiver<Arc<Stored>>,
        mut demands: mpsc::UnboundedReceiver<Domain>,
        shutdown: CancellationToken,
    ) {
        let mut wanted = self.wanted.clone();
        let mut s = Schedule::default();
        s.resolvers.resize_with(self.resolvers.len(), Resolver::default);
        let mut running: JoinSet<Job> = JoinSet::new();
        while !shutdown.is_cancelled() {
            let snapshot = stored.borrow_and_update().clone();
            let jobs = self.jobs(&snapshot, &wanted.borrow_and_update(), &s.demanded);
            for r in 0..self.resolvers.len() {
                let certs = self.certs_of(r, &snapshot.certs);
                if jobs.iter().any(|(_, _, of)| *of == r) || !certs.is_empty() {
                    if let Some(account) = self.account(r, &mut s).await {
                        s.resolvers[r].renewals.refresh(&account, &certs).await;
                    }
                }
            }
            for (domain, mode, r) in jobs {
                if running.len() >= PARALLEL || shutdown.is_cancelled() {
                    break;
                }
                let names: Vec<String> = std::iter::once(domain.main.clone()).chain(domain.sans).collect();
                let now = super::now();
                let current = snapshot.certs.get(&domain.main);
                let replacing = current.filter(|r| r.covers(&names, now)).map(|r| r.not_after);
                if current.is_some_and(|c| c.covers(&names, now) && now < s.resolvers[r].renewals.renew_at(c))
                    || s.in_flight.contains(&domain.main)
                    || snapshot.failures.get(&domain.main).is_some_and(|f| !f.wait().is_zero())
                    // Another live replica holds the lock: it is ordering (no store write to
                    // find out). A lock under this replica's name with no order of it in
                    // flight is stale (a release that failed, or a previous process of the
                    // same name): it is deleted, and the deletion brings the name back.
                    || self.locked_elsewhere(&domain.main, &snapshot, &s).await
                    || s.local_backoff.get(&domain.main).is_some_and(|at| Instant::now() < *at)
                {
                    continue;
                }
                let Some(account) = s.resolvers[r].account.clone() else { continue };
                let Some(lease) = self.lease(&mut s).await else { break };
                s.in_flight.insert(domain.main.clone());
                let (store, keys, acme, keyring, holder, plane) = (
                    self.store.clone(),
                    self.keys.clone(),
                    self.resolvers[r].clone(),
                    self.keyring.clone(),
                    self.holder.clone(),
                    self.plane.clone(),
                );
                let task = running.spawn(async move {
                    let ctx = order::Context {
                        store: &store,
                        keys: &keys,
                        acme: &acme,
                        account: &account,
                        keyring: &keyring,
                        holder: &holder,
                        plane: Some(&plane),
                        lease: &lease,
                    };
                    let started = Instant::now();
                    let outcome = order::obtain(&ctx, &names, mode, replacing).await;
                    (names[0].clone(), replacing.is_some(), outcome, started.elapsed())
                });
                s.tasks.insert(task.id(), domain.main.clone());
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = wanted.changed() => {}
                _ = stored.changed() => {}
                Some(domain) = demands.recv() => drop(s.demanded.insert(domain.main.clone(), domain)),
                _ = tokio::time::sleep(TICK) => {}
                Some(joined) = running.join_next_with_id() => match joined {
                    Ok((id, (domain, renewal, outcome, took))) => {
                        s.tasks.remove(&id);
                        s.in_flight.remove(&domain);
                        self.settle(&domain, (renewal, took), outcome, &mut s);
                    }
                    // A panic is a bug, but it must not keep the name in flight until restart.
                    Err(err) => if let Some(domain) = s.tasks.remove(&err.id()) {
                        s.in_flight.remove(&domain);
                        let error = AcmeError::Setup(format!("the order task stopped: {err}"));
                        self.settle(&domain, (false, Duration::ZERO), Err(error), &mut s);
                    },
                }
            }
        }
        self.stop(running, s).await;
    }

    /// After shutdown: no new order; those in flight get `grace` to finish, then are abandoned;
    /// the lease is revoked, which frees every lock and challenge response of this replica at
    /// once (the other replicas need not wait for it to run out).
    async fn stop(&self, mut running: JoinSet<Job>, mut s: Schedule) {
        if !running.is_empty() {
            tracing::info!(orders = running.len(), grace = ?self.grace, "stopping: letting orders in flight finish");
        }
        let finished = tokio::time::timeout(self.grace, async {
            while let Some(joined) = running.join_next_with_id().await {
                if let Ok((id, (domain, renewal, outcome, took))) = joined {
                    s.tasks.remove(&id);
                    self.settle(&domain, (renewal, took), outcome, &mut s);
                }
            }
        });
        if finished.await.is_err() {
            tracing::warn!(orders = running.len(), "stopping: abandoning orders still in flight");
            running.shutdown().await;
        }
        if let Some(lease) = s.lease.take() {
            let revoked = match Arc::try_unwrap(lease) {
                Ok(lease) => lease.revoke().await,
                Err(_) => Ok(()), // Unreachable: every order holding it has ended; dropping revokes.
            };
            match revoked {
                Ok(()) => tracing::info!("stopping: lease revoked; this replica's locks are free"),
                Err(err) => tracing::warn!("stopping: revoking the lease failed ({err}); it runs out by itself"),
            }
        }
    }

    /// Whether `main`'s lock is held by another replica, or by a stale lock of this replica's
    /// name (deleted here, fenced on its revision).
    async fn locked_elsewhere(&self, main: &str, stored: &Stored, s: &Schedule) -> bool {
        let Some((holder, revision)) = stored.locked.get(main) else { return false };
        if *holder != self.holder {
            return true;
        }
        if !s.in_flight.contains(main) {
            let key = self.keys.acme_lock(&format!("cert/{main}"));
            // Fenced: a lock the follower shows after this replica released it is already gone.
            let txn = Txn { compares: vec![Compare::revision(key.clone(), *revision)], ops: vec![Op::Delete { key }] };
            match self.store.txn(txn).await {
                Ok(result) if result.succeeded => {
                    tracing::warn!(domain = main, "deleted a stale lock under this replica's name")
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(domain = main, "deleting a stale lock: {err}"),
            }
        }
        true
    }

    /// The replica's live lease, granted when there is none or it was lost.
    async fn lease(&self, s: &mut Schedule) -> Option<Arc<Lease>> {
        if let Some(lease) = s.lease.as_ref().filter(|lease| !lease.is_lost()) {
            return Some(lease.clone());
        }
        // One lease for every resolver: the shortest TTL any of them asks for.
        let ttl = self.resolvers.iter().map(|a| a.lease_ttl).min().unwrap_or(Duration::from_secs(30));
        match self.store.lease(ttl).await {
            Ok(lease) => Some(s.lease.insert(Arc::new(lease)).clone()),
            Err(err) => {
                tracing::warn!("ACME: cannot get a lease from the store: {err}; retrying");
                None
            }
        }
    }

    /// Every certificate this replica should keep, with the resolver that orders it: static
    /// domains, the routers', onDemand names asked for here and stored onDemand certificates
    /// (for renewal), by main domain. A name two resolvers want goes to the first in name order.
    fn jobs(
        &self,
        stored: &Stored,
        wanted: &Wanted,
        demanded: &BTreeMap<String, Domain>,
    ) -> Vec<(Domain, Mode, usize)> {
        let mut jobs: BTreeMap<String, (Domain, Mode, usize)> = BTreeMap::new();
        if let Some(r) = self.resolvers.iter().position(|a| a.on_demand) {
            let on_demand = stored
                .certs
                .values()
                .filter(|c| c.on_demand)
                .map(|c| Domain { main: c.main.clone(), sans: c.names.iter().skip(1).cloned().collect() });
            for domain in on_demand.chain(demanded.values().cloned()) {
                jobs.insert(domain.main.clone(), (domain, Mode::OnDemand, r));
            }
        }
        for (r, acme) in self.resolvers.iter().enumerate() {
            for domain in acme.domains.iter().chain(wanted.get(&acme.name).into_iter().flatten()) {
                if matches!(jobs.get(&domain.main), Some((_, Mode::Wanted, first)) if *first != r) {
                    continue;
                }
                jobs.insert(domain.main.clone(), (domain.clone(), Mode::Wanted, r));
            }
        }
        jobs.into_values().collect()
    }

    /// The stored certificates resolver `r`'s CA issued (all of them when there is one resolver).
    fn certs_of<'a>(
        &self,
        r: usize,
        certs: &'a BTreeMap<String, CertRecord>,
    ) -> std::borrow::Cow<'a, BTreeMap<String, CertRecord>> {
        if self.resolvers.len() == 1 {
            return std::borrow::Cow::Borrowed(certs);
        }
        let ca = &self.resolvers[r].ca_server;
        std::borrow::Cow::Owned(
            certs.iter().filter(|(_, c)| c.ca == *ca).map(|(k, c)| (k.clone(), c.clone())).collect(),
        )
    }

    /// The cluster's account at resolver `r`'s CA, once this replica has it; retried with
    /// backoff when the CA or the store cannot be reached.
    async fn account(&self, r: usize, s: &mut Schedule) -> Option<Arc<Account>> {
        let (acme, state) = (&self.resolvers[r], &mut s.resolvers[r]);
        if let Some(account) = &state.account {
            return Some(account.clone());
        }
        if state.account_backoff.1.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        match account::account(&self.store, &self.keys, acme, &self.keyring, &self.holder).await {
            Ok(account) => Some(state.account.insert(Arc::new(account)).clone()),
            Err(err) => {
                let failures = state.account_backoff.0 + 1;
                let retry_in = Duration::from_secs(5 << failures.min(6)).min(Duration::from_secs(300));
                state.account_backoff = (failures, Some(Instant::now() + retry_in));
                tracing::error!(resolver = %acme.name, ca = %acme.ca_server, ?retry_in, "ACME account: {err}");
                None
            }
        }
    }

    fn settle(
        &self,
        domain: &str,
        (renewal, took): (bool, Duration),
        outcome: Result<Outcome, AcmeError>,
        s: &mut Schedule,
    ) {
        let emit = |event: Event| self.events.emit(event);
        let domain_s = domain.to_string();
        match outcome {
            Ok(Outcome::Issued { record, took_over, cleanup }) => {
                s.local_backoff.remove(domain);
                if let Some(from) = took_over {
                    emit(Event::TakenOver { domain: domain_s.clone(), from });
                }
                let not_after = record.not_after;
                emit(match renewal {
                    true => Event::Renewed { domain: domain_s.clone(), not_after, took },
                    false => Event::Issued { domain: domain_s.clone(), not_after, took },
                });
                if let Some(error) = cleanup {
                    emit(Event::CleanupFailed { domain: domain_s, error });
                }
            }
            Ok(Outcome::Failed { error, retry_in, took_over }) => {
                if let Some(from) = took_over {
                    emit(Event::TakenOver { domain: domain_s.clone(), from });
                }
                let problem = match &error {
                    AcmeError::Problem { kind, .. } => Some(kind.clone()),
                    _ => None,
                };
                emit(Event::Failed { domain: domain_s, problem, error: error.to_string(), retry_in });
            }
            Ok(Outcome::LockLost) => emit(Event::LockLost { domain: domain_s }),
            // The follower has not shown the other holder's lock yet: not before the next tick.
            Ok(Outcome::Busy) => drop(s.local_backoff.insert(domain_s, Instant::now() + TICK)),
            Ok(Outcome::AlreadyStored | Outcome::BackingOff) => {}
            Err(error) => {
                let retry_in = super::progress::backoff(1, Duration::from_secs(10));
                s.local_backoff.insert(domain_s.clone(), Instant::now() + retry_in);
                emit(Event::Failed { domain: domain_s, problem: None, error: error.to_string(), retry_in });
            }
        }
    }
}
