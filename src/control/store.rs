//! The store: a narrow async backend trait, the `Store` facade every other module uses, and the
//! shared vocabulary (revisions, compares, transactions, watch events, errors).
//!
//! Three backends implement [`Backend`], one file each: [`embedded`] (redb, single node),
//! [`etcd`] (etcd v3) and [`consul`] (Consul's HTTP API). Leases and locks are built once, on
//! top of the trait, in [`lease`] and [`lock`]. Key paths live only in [`keys`].

pub mod codec;
pub mod consul;
pub mod embedded;
pub mod etcd;
pub mod keys;
pub mod lease;
pub mod lock;
mod open;
mod roots;
pub mod tls;

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use lease::Lease;
pub use lock::LockGuard;
pub use open::{open, StoreSpec};

/// A store-wide, monotonically increasing version number: etcd's revision, Consul's raft index,
/// the embedded store's own counter. `0` means "the key does not exist".
pub type Revision = u64;

/// A lease (an etcd lease, a Consul session): keys bound to it vanish when it expires.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseId(pub String);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key and its value as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the key's last change: what compare-and-swap and fencing compare against.
    pub mod_revision: Revision,
    /// The lease the key is bound to, if any.
    pub lease: Option<LeaseId>,
}

/// All keys under a prefix, and the store revision the listing was read at: watch from there.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// A condition of a transaction: the key's `mod_revision` equals `revision` (`0`: it is absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub revision: Revision,
}

impl Compare {
    pub fn absent(key: impl Into<String>) -> Self {
        Compare { key: key.into(), revision: 0 }
    }
    pub fn revision(key: impl Into<String>, revision: Revision) -> Self {
        Compare { key: key.into(), revision }
    }
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8>, lease: Option<LeaseId> },
    Delete { key: String },
    DeletePrefix { prefix: String },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put { key: key.into(), value: value.into(), lease: None }
    }

    /// The key (or prefix) written.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
            Op::DeletePrefix { prefix } => prefix,
        }
    }
}

impl Txn {
    /// What this transaction is, for errors: its operations' count and keys (the first few).
    pub fn describe(&self) -> String {
        let keys: Vec<&str> = self.ops.iter().map(Op::key).take(3).collect();
        let more = if self.ops.len() > 3 { ", ..." } else { "" };
        format!("a transaction of {} operations on {keys:?}{more}", self.ops.len())
    }
}

/// All compares hold, then all ops apply; or nothing applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// The outcome of a transaction. `revision` is the revision the writes committed at (on
/// failure, a revision at least as new as the failed compares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    pub revision: Revision,
}

/// What a watch reports, in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete {
        key: String,
        revision: Revision,
    },
    /// History from the requested revision is gone (etcd compaction, a store restored from a
    /// backup or wiped, Consul's lack of history): re-list the prefix, then watch again from the
    /// listing's revision.
    Compacted {
        revision: Revision,
    },
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } | WatchEvent::Compacted { revision } => *revision,
        }
    }
}

/// A live watch. Backends reconnect on their own, resuming after the last delivered revision;
/// the watch ends (`None`) only when the store is closed. Dropping it stops the backend's task.
pub struct Watch {
    rx: mpsc::Receiver<WatchEvent>,
    /// True once the backend's stream is established (at once for most backends).
    live: tokio::sync::watch::Receiver<bool>,
}

impl Watch {
    /// A watch fed by a backend task through `tx`; the task must stop when `tx` is closed.
    pub fn channel() -> (mpsc::Sender<WatchEvent>, Watch) {
        let (tx, live, watch) = Watch::channel_reporting_live();
        live.send_replace(true);
        (tx, watch)
    }

    /// A watch whose backend says, through the second sender, when its stream is established.
    pub fn channel_reporting_live() -> (mpsc::Sender<WatchEvent>, tokio::sync::watch::Sender<bool>, Watch) {
        let (tx, rx) = mpsc::channel(1024);
        let (live_tx, live) = tokio::sync::watch::channel(false);
        (tx, live_tx, Watch { rx, live })
    }

    /// Resolves once the backend's stream is established, so that events after the listing
    /// arrive as they happen (a consumer may rely on their absence from then on).
    pub fn live(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut live = self.live.clone();
        async move {
            let _ = live.wait_for(|live| *live).await;
        }
    }

    /// True once the backend's stream is established.
    pub fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach {backend} at {endpoint}: {detail}")]
    Unreachable { backend: &'static str, endpoint: String, detail: String },
    #[error("value for key {key:?} is {size} bytes; {backend} accepts at most {limit}")]
    ValueTooLarge { key: String, size: usize, limit: usize, backend: &'static str },
    #[error("transaction has {ops} operations; {backend} accepts at most {limit} in one transaction")]
    TxnTooLarge { ops: usize, limit: usize, backend: &'static str },
    #[error("lease {0} has expired or was revoked")]
    LeaseLost(LeaseId),
    /// The backend refused `request` (which names the operation and its key).
    #[error("{backend} rejected {request}: {detail}")]
    Rejected { backend: &'static str, request: String, detail: String },
    /// What `request` names does not exist on the backend (etcd: the lease).
    #[error("{backend}: {request}: not found: {detail}")]
    NotFound { backend: &'static str, request: String, detail: String },
    /// The backend's answer to `request` could not be read.
    #[error("{backend} answered {request} with something unreadable: {detail}")]
    BadAnswer { backend: &'static str, request: String, detail: String },
    #[error("embedded store {path}: {detail}")]
    Embedded { path: String, detail: String },
    /// The store's TLS settings cannot be used (a file that cannot be read, a bad PEM).
    #[error("the store's TLS settings: {detail}")]
    Tls { detail: String },
    /// Another process (a running replica) has the embedded store open.
    #[error(
        "the embedded store in {dir} is open in another process{holder}: a running replica holds it. \
         Stop that replica first; or give it routers through the file provider (`[file]` or \
         `providers.file`, reloaded within a second of an edit) instead of `pylon storeconfig --dynamic`; \
         or, to run several processes on one store, use etcd or Consul"
    )]
    EmbeddedInUse { dir: String, holder: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a backend must do. Everything else (leases kept alive, locks, fencing) is built on it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and errors: "etcd", "Consul", "embedded store".
    fn name(&self) -> &'static str;
    /// Where the backend lives, for errors (an endpoint list or a file path).
    fn endpoint(&self) -> String;
    /// The largest value the backend accepts.
    fn max_value_bytes(&self) -> usize;
    /// The most operations (compares + writes) one transaction may hold.
    fn max_txn_ops(&self) -> usize;
    /// Whether a watch resumed from a past revision replays every change (false for Consul).
    fn keeps_history(&self) -> bool;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    async fn list(&self, prefix: &str) -> Result<Listing>;
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;
    /// Events for keys under `prefix` with a revision greater than `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch>;
    /// Events for keys under `prefix` since `listed`, a listing of a prefix that holds it.
    async fn watch_listed(&self, prefix: &str, listed: &Listing) -> Result<Watch> {
        self.watch(prefix, listed.revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Refreshes a lease; `Err(LeaseLost)` when it no longer exists.
    async fn keep_alive(&self, lease: &LeaseId) -> Result<()>;
    async fn revoke_lease(&self, lease: &LeaseId) -> Result<()>;
}

/// The facade over one backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Store { backend }
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub fn describe(&self) -> String {
        format!("{} at {}", self.backend.name(), self.backend.endpoint())
    }

    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.backend.get(key).await
    }

    pub async fn list(&self, prefix: &str) -> Result<Listing> {
        self.backend.list(prefix).await
    }

    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<Revision> {
        Ok(self.txn(Txn { compares: vec![], ops: vec![Op::put(key, value)] }).await?.revision)
    }

    /// Puts a key that vanishes with `lease`.
    pub async fn put_with_lease(&self, key: &str, value: impl Into<Vec<u8>>, lease: &Lease) -> Result<Revision> {
        let op = Op::Put { key: key.into(), value: value.into(), lease: Some(lease.id().clone()) };
        Ok(self.txn(Txn { compares: vec![], ops: vec![op] }).await?.revision)
    }

    pub async fn delete(&self, key: &str) -> Result<Revision> {
        let ops = vec![Op::Delete { key: key.into() }];
        Ok(self.txn(Txn { compares: vec![], ops }).await?.revision)
    }

    pub async fn delete_prefix(&self, prefix: &str) -> Result<Revision> {
        let ops = vec![Op::DeletePrefix { prefix: prefix.into() }];
        Ok(self.txn(Txn { compares: vec![], ops }).await?.revision)
    }

    /// Writes `value` only if the key's `mod_revision` is still `expected` (`0`: still absent).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: impl Into<Vec<u8>>,
    ) -> Result<TxnResult> {
        let txn = Txn { compares: vec![Compare::revision(key, expected)], ops: vec![Op::put(key, value)] };
        self.txn(txn).await
    }

    /// Applies every op if every compare holds, or nothing. Sizes are checked before sending.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let b = &self.backend;
        let ops = txn.compares.len() + txn.ops.len();
        if ops > b.max_txn_ops() {
            return Err(StoreError::TxnTooLarge { ops, limit: b.max_txn_ops(), backend: b.name() });
        }
        let ranges: Vec<&str> = txn
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::DeletePrefix { prefix } => Some(prefix.as_str()),
                _ => None,
            })
            .collect();
        for op in &txn.ops {
            if let Op::Put { key, value, .. } = op {
                if let Some(prefix) = ranges.iter().find(|p| key.starts_with(**p)) {
                    return Err(StoreError::Rejected {
                        backend: b.name(),
                        request: format!("a transaction putting {key:?}"),
                        detail: format!("it also deletes the prefix {prefix:?} holding that key"),
                    });
                }
                if value.len() > b.max_value_bytes() {
                    return Err(StoreError::ValueTooLarge {
                        key: key.clone(),
                        size: value.len(),
                        limit: b.max_value_bytes(),
                        backend: b.name(),
                    });
                }
            }
        }
        b.txn(txn).await
    }

    pub async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        self.backend.watch(prefix, after).await
    }

    /// Grants a lease of `ttl` and keeps it alive from a background task until dropped.
    pub async fn lease(&self, ttl: Duration) -> Result<Lease> {
        Lease::grant(self.backend.clone(), ttl).await
    }

    /// Waits until this replica holds the lock on `key` through `lease`.
    pub async fn lock(&self, key: &str, holder: &str, lease: &Lease) -> Result<LockGuard> {
        lock::acquire(self, key, holder, lease).await
    }

    /// Takes the lock on `key` if it is free now.
    pub async fn try_lock(&self, key: &str, holder: &str, lease: &Lease) -> Result<Option<LockGuard>> {
        lock::try_acquire(self, key, holder, lease).await
    }
}
