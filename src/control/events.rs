//! The control plane's one event bus: what happened to certificates (issued, renewed, failed,
//! taken over, lock lost) and to the dynamic configuration (applied, rejected). Every event
//! goes to the log as one line whose `event` field names its kind (`certificate.issued`, ...),
//! then to every subscriber (the metrics and the API attach here).

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it misses some.
const BACKLOG: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `took`: from the order's start (lock taken) to the certificate stored.
    Issued {
        domain: String,
        not_after: i64,
        took: Duration,
    },
    Renewed {
        domain: String,
        not_after: i64,
        took: Duration,
    },
    /// An order failed or could not start; `problem` is the ACME problem type when the CA sent
    /// one. The name is retried in `retry_in`.
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
    /// This replica lost a certificate's lock mid-order (paused past its lease); the
    /// certificate was not written.
    LockLost {
        domain: String,
    },
    /// A certificate was stored, but releasing its lock or lease afterwards failed (they run
    /// out with the lease).
    CleanupFailed {
        domain: String,
        error: String,
    },
    /// A dynamic configuration was applied; `delay` runs from the first store change it
    /// holds reaching this replica to the table that serves it being published.
    ConfigApplied {
        revision: u64,
        delay: Duration,
        routers: usize,
        services: usize,
        certificates: usize,
        rejected: usize,
    },
    /// A router, service, middleware or certificate was rejected, with its place and why.
    Rejected {
        what: String,
    },
}

impl Event {
    /// The kind, as logged in the `event` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Issued { .. } => "certificate.issued",
            Event::Renewed { .. } => "certificate.renewed",
            Event::Failed { .. } => "certificate.failed",
            Event::TakenOver { .. } => "certificate.taken_over",
            Event::LockLost { .. } => "certificate.lock_lost",
            Event::CleanupFailed { .. } => "certificate.cleanup_failed",
            Event::ConfigApplied { .. } => "config.applied",
            Event::Rejected { .. } => "config.rejected",
        }
    }
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Bus {
        Bus { sender: broadcast::channel(BACKLOG).0 }
    }
}

impl Bus {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Logs `event` and hands it to every subscriber.
    pub fn emit(&self, event: Event) {
        log(&event);
        let _ = self.sender.send(Arc::new(event));
    }
}

fn log(event: &Event) {
    let kind = event.kind();
    match event {
        Event::Issued { domain, not_after, took } => {
            tracing::info!(event = kind, domain, not_after, ?took, "certificate issued and stored")
        }
        Event::Renewed { domain, not_after, took } => {
            tracing::info!(event = kind, domain, not_after, ?took, "certificate renewed and stored")
        }
        Event::Failed { domain, problem, error, retry_in } => {
            tracing::warn!(event = kind, domain, problem, ?retry_in, "certificate order failed: {error}")
        }
        Event::TakenOver { domain, from } => {
            tracing::warn!(event = kind, domain, from, "took over an order whose holder stopped")
        }
        Event::LockLost { domain } => {
            tracing::warn!(event = kind, domain, "lost the certificate's lock mid-order; another replica orders")
        }
        Event::CleanupFailed { domain, error } => {
            tracing::warn!(event = kind, domain, "certificate stored; releasing its lock failed: {error}")
        }
        Event::ConfigApplied { revision, delay, routers, services, certificates, rejected } => {
            tracing::info!(
                event = kind,
                revision,
                delay_ms = delay.as_millis() as u64,
                routers,
                services,
                certificates,
                rejected,
                "dynamic configuration applied"
            )
        }
        Event::Rejected { what } => tracing::error!(event = kind, "rejected: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_every_event() {
        let bus = Bus::default();
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        bus.emit(Event::LockLost { domain: "a.example".into() });
        for receiver in [&mut a, &mut b] {
            let event = receiver.recv().await.unwrap();
            assert_eq!(*event, Event::LockLost { domain: "a.example".into() });
            assert_eq!(event.kind(), "certificate.lock_lost");
        }
    }
}
