//! `maxConnections`: which client connections are served. Under the limit, every one; at it, a
//! newcomer is let in by closing the connection that has been idle longest (a keep-alive
//! connection between requests, or one that has not sent a request yet), as nginx reuses its
//! idle keep-alive connections; a connection with a request in flight is never closed for it,
//! nor one idle for less than [`MIN_IDLE`] (its next request, or its TLS handshake, may be on
//! the way). Twenty silent connections therefore cannot lock other clients out.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long a connection must have been idle before it may be closed to make room.
pub const MIN_IDLE: std::time::Duration = std::time::Duration::from_millis(500);
/// How often a waiting newcomer looks again for a connection that has become old enough.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// The connections served under one `maxConnections` limit (shared by every worker).
pub struct Admission {
    limit: Arc<Semaphore>,
    /// Notified when a connection's last request ends: a waiting newcomer may evict it.
    became_idle: Arc<Notify>,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

/// One admitted connection, as the admission sees it.
pub struct Conn {
    id: u64,
    /// Requests whose response has not been fully sent.
    in_flight: AtomicU32,
    /// When the last request ended (or the connection arrived), in µs since the epoch: two
    /// requests a millisecond apart must not tie.
    idle_since: AtomicU64,
    /// Set when the connection was chosen to make room.
    evicted: AtomicBool,
    /// Set when the connection has given its place back.
    closed: AtomicBool,
    close: Notify,
    became_idle: Arc<Notify>,
    epoch: Instant,
}

/// A connection's place under the limit: released when it is dropped.
pub struct Admitted {
    pub conn: Arc<Conn>,
    admission: Arc<Admission>,
    _permit: OwnedSemaphorePermit,
}

/// A request in flight on a connection; when dropped (its response sent, or abandoned), the
/// connection is idle again unless another request is in flight.
pub struct InFlight(Arc<Conn>);

impl Admission {
    pub fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            limit: Arc::new(Semaphore::new(max)),
            became_idle: Arc::new(Notify::new()),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A place for a connection just accepted: at once under the limit; at it, once the
    /// longest-idle connection has closed to make room, or, when every connection is busy,
    /// once one ends.
    pub async fn admit(self: &Arc<Self>) -> Admitted {
        let permit = match self.limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.make_room().await,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            close: Notify::new(),
            became_idle: self.became_idle.clone(),
            epoch: self.epoch,
        });
        conn.mark_idle();
        self.lock().insert(id, conn.clone());
        Admitted { conn, admission: self.clone(), _permit: permit }
    }

    /// At the limit: evicts the longest-idle connection and waits for a place. When no
    /// connection is idle (or idle long enough), the first to be is evicted; one victim at a time.
    async fn make_room(&self) -> OwnedSemaphorePermit {
        let mut victim: Option<Arc<Conn>> = None;
        loop {
            let became_idle = self.became_idle.notified();
            tokio::pin!(became_idle);
            became_idle.as_mut().enable();
            // A victim that started a request meanwhile closes only after it: find another.
            let gone_or_busy =
                |v: &Arc<Conn>| v.closed.load(Ordering::Acquire) || v.in_flight.load(Ordering::Acquire) > 0;
            if victim.as_ref().is_none_or(gone_or_busy) {
                victim = self.evict_longest_idle();
            }
            tokio::select! {
                permit = self.limit.clone().acquire_owned() => return permit.expect("the limit is never closed"),
                _ = became_idle => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Asks the connection idle longest, if any, to close.
    fn evict_longest_idle(&self) -> Option<Arc<Conn>> {
        let open = self.lock();
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let old_enough = now.saturating_sub(MIN_IDLE.as_micros() as u64);
        let idle = open.values().filter(|c| {
            c.in_flight.load(Ordering::Acquire) == 0
                && !c.evicted.load(Ordering::Relaxed)
                && c.idle_since.load(Ordering::Relaxed) <= old_enough
        });
        // A tie goes to the connection that arrived first.
        let conn = idle.min_by_key(|c| (c.idle_since.load(Ordering::Relaxed), c.id))?;
        conn.evicted.store(true, Ordering::Relaxed);
        // A permit is stored if the connection is not waiting yet: it closes when it does.
        conn.close.notify_one();
        tracing::debug!(connection = conn.id, "at maxConnections: closing the longest-idle connection");
        Some(conn.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.lock().remove(&self.conn.id);
        self.conn.closed.store(true, Ordering::Release);
    }
}

impl Conn {
    /// A request starts: the connection is busy until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves when the connection was chosen to make room for a newcomer.
    pub async fn evicted(&self) {
        self.close.notified().await;
    }

    fn mark_idle(&self) {
        let us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.idle_since.store(us, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.mark_idle();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.became_idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn at_the_limit_the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let admission = Admission::new(2);
        let (old, busy) = (admission.admit().await, admission.admit().await);
        let request = busy.conn.begin();
        let third = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await }
        });
        tokio::time::timeout(Duration::from_secs(1), old.conn.evicted()).await.expect("the idle one is asked to close");
        assert!(!third.is_finished(), "room is made only when the idle connection is gone");
        drop(old);
        let third = tokio::time::timeout(Duration::from_secs(1), third).await.unwrap().unwrap();

        // Now both connections are busy or newer: the next newcomer waits for one to end.
        let _third_request = third.conn.begin();
        let fourth = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!fourth.is_finished(), "no connection with a request in flight is closed");
        drop(request);
        tokio::time::timeout(Duration::from_secs(1), busy.conn.evicted())
            .await
            .expect("the first connection to become idle makes room");
        drop(busy);
        tokio::time::timeout(Duration::from_secs(1), fourth).await.unwrap().unwrap();
    }
}
