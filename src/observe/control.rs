//! The control plane's numbers for `/metrics`: configuration reloads and their delay, the
//! revision served, rejected objects, certificate orders and their durations, the store's
//! reachability and onDemand refusals. The event bus feeds most of them; a probe reads the
//! store every few seconds for the rest. Nothing here is on the request path.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::control::{events::Event, store::Store};

/// How often the store is probed for `pylon_store_up`.
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How many recent events the API keeps.
pub const RECENT: usize = 100;

/// Bucket bounds for the control plane's histograms, in seconds.
pub const ORDER_BUCKETS: [f64; 8] = [1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
pub const APPLY_BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A histogram written by one task and read by scrapes.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    pub bounds: &'static [f64],
    /// Cumulative counts, one per bound.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, buckets: vec![0; bounds.len()], count: 0, sum: 0.0 }
    }

    fn observe(&mut self, seconds: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.buckets) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Debug)]
pub struct ControlMetrics {
    pub reloads: AtomicU64,
    /// Unix seconds of the last applied configuration; 0 before the first.
    pub last_reload: AtomicU64,
    pub revision: AtomicU64,
    /// Objects rejected in the configuration now served.
    pub rejected: AtomicU64,
    pub apply_delay: Mutex<Histogram>,
    /// Orders by result (`issued`, `renewed`, `failed`, `taken_over`, `lock_lost`).
    pub orders: Mutex<BTreeMap<&'static str, u64>>,
    pub order_duration: Mutex<Histogram>,
    pub store_up: AtomicBool,
    /// Shared with the onDemand policy, which counts the names it refuses.
    pub on_demand_refused: Arc<AtomicU64>,
    /// The last [`RECENT`] events, newest last, as the API shows them.
    pub recent: Mutex<std::collections::VecDeque<serde_json::Value>>,
}

impl Default for ControlMetrics {
    fn default() -> ControlMetrics {
        ControlMetrics {
            reloads: AtomicU64::new(0),
            last_reload: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            apply_delay: Mutex::new(Histogram::new(&APPLY_BUCKETS)),
            orders: Mutex::new(BTreeMap::new()),
            order_duration: Mutex::new(Histogram::new(&ORDER_BUCKETS)),
            store_up: AtomicBool::new(false),
            on_demand_refused: Arc::default(),
            recent: Mutex::default(),
        }
    }
}

impl ControlMetrics {
    /// Counts one event and keeps it among the recent ones.
    pub fn record(&self, event: &Event) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(described(event));
        drop(recent);
        let order = |result: &'static str| {
            *self.orders.lock().unwrap_or_else(|e| e.into_inner()).entry(result).or_default() += 1;
        };
        match event {
            Event::ConfigApplied { revision, delay, rejected, .. } => {
                self.reloads.fetch_add(1, Relaxed);
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                self.last_reload.store(now.as_secs(), Relaxed);
                self.revision.store(*revision, Relaxed);
                self.rejected.store(*rejected as u64, Relaxed);
                self.apply_delay.lock().unwrap_or_else(|e| e.into_inner()).observe(delay.as_secs_f64());
            }
            Event::Issued { took, .. } | Event::Renewed { took, .. } => {
                order(if matches!(event, Event::Issued { .. }) { "issued" } else { "renewed" });
                self.order_duration.lock().unwrap_or_else(|e| e.into_inner()).observe(took.as_secs_f64());
            }
            Event::Failed { .. } => order("failed"),
            Event::TakenOver { .. } => order("taken_over"),
            Event::LockLost { .. } => order("lock_lost"),
            Event::CleanupFailed { .. } | Event::Rejected { .. } => {}
        }
    }

    /// Follows the bus (subscribed before the first event) and probes the store with a read of
    /// `probe_key` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut events: broadcast::Receiver<Arc<Event>>,
        store: Store,
        probe_key: String,
        shutdown: CancellationToken,
    ) {
        let mut probe = tokio::time::interval(PROBE_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Ok(event) => self.record(&event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "metrics fell behind the event bus; some events are not counted");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = probe.tick() => {
                    let answered = tokio::time::timeout(PROBE_TIMEOUT, store.get(&probe_key)).await;
                    self.store_up.store(matches!(answered, Ok(Ok(_))), Relaxed);
                }
            }
        }
    }
}

/// An event as the API lists it: when, its kind, and its fields.
fn described(event: &Event) -> serde_json::Value {
    use serde_json::json;
    let fields = match event {
        Event::Issued { domain, not_after, took } | Event::Renewed { domain, not_after, took } => {
            json!({ "domain": domain, "notAfter": crate::calendar::rfc3339(*not_after), "tookSeconds": took.as_secs_f64() })
        }
        Event::Failed { domain, problem, error, retry_in } => {
            json!({ "domain": domain, "problem": problem, "error": error, "retryInSeconds": retry_in.as_secs() })
        }
        Event::TakenOver { domain, from } => json!({ "domain": domain, "from": from }),
        Event::LockLost { domain } => json!({ "domain": domain }),
        Event::CleanupFailed { domain, error } => json!({ "domain": domain, "error": error }),
        Event::ConfigApplied { revision, delay, routers, services, certificates, rejected } => json!({
            "revision": revision, "delayMs": delay.as_millis() as u64, "routers": routers, "services": services,
            "certificates": certificates, "rejected": rejected,
        }),
        Event::Rejected { what } => json!({ "what": what }),
    };
    json!({ "time": crate::calendar::rfc3339(crate::calendar::unix_now()), "kind": event.kind(), "fields": fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_counts() {
        let metrics = ControlMetrics::default();
        let applied = |revision| Event::ConfigApplied {
            revision,
            delay: Duration::from_millis(20),
            routers: 1,
            services: 1,
            certificates: 0,
            rejected: 2,
        };
        metrics.record(&applied(7));
        metrics.record(&applied(9));
        metrics.record(&Event::Issued { domain: "a".into(), not_after: 0, took: Duration::from_secs(4) });
        metrics.record(&Event::LockLost { domain: "a".into() });
        assert_eq!(metrics.reloads.load(Relaxed), 2);
        assert_eq!(metrics.revision.load(Relaxed), 9);
        assert_eq!(metrics.rejected.load(Relaxed), 2);
        assert!(metrics.last_reload.load(Relaxed) > 1_700_000_000);
        let delay = metrics.apply_delay.lock().unwrap().clone();
        assert_eq!((delay.count, delay.buckets[2], delay.buckets[1]), (2, 2, 0), "20 ms is under 25 ms, over 10");
        let orders = metrics.orders.lock().unwrap().clone();
        assert_eq!(orders, BTreeMap::from([("issued", 1), ("lock_lost", 1)]));
        assert_eq!(metrics.order_duration.lock().unwrap().buckets[..3], [0, 0, 1]);
        let recent = metrics.recent.lock().unwrap().clone();
        assert_eq!(recent.len(), 4);
        assert_eq!(
            (recent[2]["kind"].as_str(), recent[2]["fields"]["tookSeconds"].as_f64()),
            (Some("certificate.issued"), Some(4.0))
        );
        for _ in 0..RECENT {
            metrics.record(&Event::LockLost { domain: "b".into() });
        }
        assert_eq!(metrics.recent.lock().unwrap().len(), RECENT, "only the last ones are kept");
    }
}
