//! Locks on a key, held through a lease, built on compare-and-swap and watch alone so that every
//! backend gets the same semantics. The lock's fencing value is the revision that created the
//! lock key: a write conditioned on it fails once the lock has been lost, even if the former
//! holder is merely paused and does not know yet.

use super::{Compare, Lease, Op, Result, Revision, Store, StoreError, Txn, TxnResult, WatchEvent};

/// Proof of holding a lock. Released on [`LockGuard::release`] or, best effort, on drop.
pub struct LockGuard {
    store: Store,
    key: String,
    fence: Revision,
    released: bool,
}

pub(super) async fn try_acquire(store: &Store, key: &str, holder: &str, lease: &Lease) -> Result<Option<LockGuard>> {
    let put = Op::Put { key: key.into(), value: holder.as_bytes().to_vec(), lease: Some(lease.id().clone()) };
    let result = store.txn(Txn { compares: vec![Compare::absent(key)], ops: vec![put] }).await?;
    if !result.succeeded {
        return Ok(None);
    }
    Ok(Some(LockGuard { store: store.clone(), key: key.into(), fence: result.revision, released: false }))
}

pub(super) async fn acquire(store: &Store, key: &str, holder: &str, lease: &Lease) -> Result<LockGuard> {
    loop {
        if lease.is_lost() {
            return Err(StoreError::LeaseLost(lease.id().clone()));
        }
        if let Some(guard) = try_acquire(store, key, holder, lease).await? {
            return Ok(guard);
        }
        // Held by someone else: wait for the key to go, then race for it again.
        let Some(current) = store.get(key).await? else { continue };
        let mut watch = store.watch(key, current.mod_revision).await?;
        loop {
            tokio::select! {
                _ = lease.lost() => return Err(StoreError::LeaseLost(lease.id().clone())),
                event = watch.next() => match event {
                    Some(WatchEvent::Delete { key: k, .. }) if k == key => break,
                    Some(WatchEvent::Compacted { .. }) | None => break,
                    Some(_) => {}
                },
            }
        }
    }
}

impl LockGuard {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing value: the revision at which this holder created the lock key.
    pub fn fence(&self) -> Revision {
        self.fence
    }

    /// The compare that holds only while this lock is still ours.
    pub fn still_held(&self) -> Compare {
        Compare::revision(self.key.clone(), self.fence)
    }

    /// Applies `ops` only while the lock is still held; `succeeded == false` means it was lost.
    pub async fn fenced(&self, ops: Vec<Op>) -> Result<TxnResult> {
        self.store.txn(Txn { compares: vec![self.still_held()], ops }).await
    }

    /// Whether the lock key still carries this holder's revision.
    pub async fn is_held(&self) -> Result<bool> {
        Ok(self.store.get(&self.key).await?.is_some_and(|kv| kv.mod_revision == self.fence))
    }

    /// Deletes the lock key if it is still ours.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.fenced(vec![Op::Delete { key: self.key.clone() }]).await.map(|_| ())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let txn = Txn { compares: vec![self.still_held()], ops: vec![Op::Delete { key: self.key.clone() }] };
        let store = self.store.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = store.txn(txn).await;
            });
        }
    }
}
