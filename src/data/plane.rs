//! The one view the data plane has of the world: an immutable [`Snapshot`] (the routing table
//! with its middlewares, the certificate index, the TLS configurations, the ACME challenge
//! answers, on-demand admission) that the control plane publishes through one `ArcSwap`. A request or a handshake
//! reads it with one atomic load and never waits for the control plane or the store; the only
//! wait is the documented one of an on-demand handshake for a certificate it may order.
//!
//! Publishers (the dynamic-config watcher, the certificate sources, the ACME follower) each
//! replace their part; a publish clones the snapshot's handful of `Arc`s, swaps one, and wakes
//! whoever waits for a change (on-demand handshakes, an order waiting for its answers to be
//! served).

mod answers;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

pub use answers::{Answers, HTTP01_PREFIX};

use crate::{
    data::routing::Table,
    data::tls::{Handshakes, Index},
};

/// Everything the request path needs, as of one publish.
#[derive(Clone)]
pub struct Snapshot {
    pub table: Arc<Table>,
    pub certs: Arc<Index>,
    pub answers: Arc<Answers>,
    /// The TLS configurations handshakes choose from, by entrypoint and SNI.
    pub handshakes: Arc<Handshakes>,
    /// Bumped on every publish.
    pub generation: u64,
}

/// The on-demand part of handshakes (ACME's `onDemand`): called for a name no certificate
/// covers; resolves when the handshake should go on (the certificate arrived, the policy
/// refused, or the wait timed out).
pub trait OnDemand: Send + Sync {
    fn wait<'a>(&'a self, plane: &'a Plane, name: &'a str) -> BoxFuture<'a, ()>;
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The published snapshot and its change signal.
pub struct Plane {
    current: ArcSwap<Snapshot>,
    /// Serializes publishers (control plane only; readers never take it).
    publishing: Mutex<()>,
    changes: watch::Sender<u64>,
    on_demand: OnceLock<Arc<dyn OnDemand>>,
}

impl Plane {
    /// A plane whose certificate index serves `default` to names nothing else covers.
    pub fn new(default: Arc<rustls::sign::CertifiedKey>) -> Arc<Plane> {
        let snapshot = Snapshot {
            table: Arc::default(),
            certs: Arc::new(Index::empty(default)),
            answers: Arc::default(),
            handshakes: Arc::default(),
            generation: 0,
        };
        Arc::new(Plane {
            current: ArcSwap::from_pointee(snapshot),
            publishing: Mutex::new(()),
            changes: watch::Sender::new(0),
            on_demand: OnceLock::new(),
        })
    }

    /// The current snapshot: one atomic load, no lock.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Publishes a snapshot with `change` applied to the current one.
    pub fn publish(&self, change: impl FnOnce(&mut Snapshot)) {
        let _one_at_a_time = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Snapshot::clone(&self.current.load());
        change(&mut next);
        next.generation += 1;
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.changes.send_replace(generation);
    }

    /// Fires after every publish.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits until `seen` holds for a published snapshot, up to `timeout`; whether it did.
    pub async fn wait_until(&self, timeout: Duration, seen: impl Fn(&Snapshot) -> bool) -> bool {
        let mut changes = self.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if seen(&self.load()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return seen(&self.load()),
            }
        }
    }

    /// Lets ACME's onDemand take part in handshakes; the first call wins.
    pub fn set_on_demand(&self, on_demand: Arc<dyn OnDemand>) {
        let _ = self.on_demand.set(on_demand);
    }

    pub fn on_demand(&self) -> Option<&Arc<dyn OnDemand>> {
        self.on_demand.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[tokio::test]
    async fn a_publish_replaces_one_part_and_wakes_waiters() {
        let default = crate::data::tls::Loaded::self_signed(&["default.invalid"]).unwrap().key;
        let plane = Plane::new(default);
        let before = plane.load().clone();
        let waiter = {
            let plane = plane.clone();
            tokio::spawn(
                async move { plane.wait_until(Duration::from_secs(5), |s| s.answers.token("t").is_some()).await },
            )
        };
        tokio::task::yield_now().await;
        let tokens = HashMap::from([("t".to_string(), "t.key".to_string())]);
        plane.publish(|s| s.answers = Arc::new(Answers::new(tokens, HashMap::new())));
        assert!(waiter.await.unwrap(), "the waiter saw the answer");
        let after = plane.load();
        assert_eq!(after.generation, before.generation + 1);
        assert!(Arc::ptr_eq(&after.table, &before.table), "the other parts are the same objects");
        assert!(Arc::ptr_eq(&after.certs, &before.certs));
        assert_eq!(after.answers.token("t"), Some("t.key"));
        assert!(!plane.wait_until(Duration::from_millis(20), |s| s.answers.token("u").is_some()).await);
    }
}
