//! Leases held by this process: granted on a backend, refreshed by a background task every third
//! of their TTL, revoked on drop. A lease that could not be refreshed in time is reported lost.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Backend, LeaseId, Result, StoreError};

/// A lease kept alive until dropped. Dropping it revokes the lease, so its keys vanish at once.
pub struct Lease {
    id: LeaseId,
    ttl: Duration,
    backend: Arc<dyn Backend>,
    /// Stops the keep-alive task.
    stop: CancellationToken,
    /// Becomes `true` once the lease is known to be gone.
    lost: watch::Receiver<bool>,
    /// Revoke on drop; false after [`Lease::abandon`].
    revoke_on_drop: bool,
}

impl Lease {
    pub(super) async fn grant(backend: Arc<dyn Backend>, ttl: Duration) -> Result<Lease> {
        let id = backend.grant_lease(ttl).await?;
        let stop = CancellationToken::new();
        let (lost_tx, lost) = watch::channel(false);
        tokio::spawn(keep_alive(backend.clone(), id.clone(), ttl, stop.clone(), lost_tx));
        Ok(Lease { id, ttl, backend, stop, lost, revoke_on_drop: true })
    }

    pub fn id(&self) -> &LeaseId {
        &self.id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lease is lost (expired, revoked elsewhere, or not refreshed in time).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Stops refreshing the lease without revoking it, as a crashed holder would: its keys stay
    /// until the TTL runs out. Used by tests and by shutdown paths that must not release early.
    pub fn abandon(mut self) {
        self.revoke_on_drop = false;
    }

    /// Revokes the lease now and waits for the backend to confirm.
    pub async fn revoke(mut self) -> Result<()> {
        self.revoke_on_drop = false;
        self.stop.cancel();
        self.backend.revoke_lease(&self.id).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.revoke_on_drop {
            let (backend, id) = (self.backend.clone(), self.id.clone());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(err) = backend.revoke_lease(&id).await {
                        tracing::debug!(lease = %id, %err, "revoking a dropped lease failed; it will expire");
                    }
                });
            }
        }
    }
}

/// Refreshes every third of the TTL; retries faster after a failure; reports the lease lost when
/// the backend says it is gone or when no refresh succeeded within a whole TTL.
async fn keep_alive(
    backend: Arc<dyn Backend>,
    id: LeaseId,
    ttl: Duration,
    stop: CancellationToken,
    lost: watch::Sender<bool>,
) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut last_ok = tokio::time::Instant::now();
    let mut delay = period;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        match backend.keep_alive(&id).await {
            Ok(()) => {
                last_ok = tokio::time::Instant::now();
                delay = period;
            }
            Err(StoreError::LeaseLost(_)) => {
                tracing::warn!(lease = %id, "lease expired");
                let _ = lost.send(true);
                return;
            }
            Err(err) => {
                if last_ok.elapsed() >= ttl {
                    tracing::warn!(lease = %id, %err, "lease not refreshed within its TTL; treating it as lost");
                    let _ = lost.send(true);
                    return;
                }
                tracing::debug!(lease = %id, %err, "lease refresh failed; retrying");
                delay = (period / 4).max(Duration::from_millis(50));
            }
        }
    }
}
