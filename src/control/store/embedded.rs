//! The embedded backend: one redb file under `--datadir`, for a single node. Every transaction
//! bumps one store-wide revision and appends its changes to an event log (the last
//! [`HISTORY`] revisions are kept), which is what lets a watch resume from a past revision.
//! Leases live in memory: a restart ends them, so keys bound to a lease are deleted on open.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use self::record::{decode_event, encode_event, event_key, Record};
use super::{Backend, KeyValue, LeaseId, Listing, Op, Result, Revision, StoreError, Txn, TxnResult, Watch, WatchEvent};

mod record;

/// key -> record (see [`Record`]).
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// (revision, index in the transaction) -> one change (see [`encode_event`]).
const LOG: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("log");
/// "revision", "compacted", "lease" counters.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// How many revisions of history a watch can resume from.
const HISTORY: u64 = 10_000;

pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    /// Serialises commits with their broadcast, so watchers see revisions in order.
    writer: Mutex<()>,
    /// Each committed transaction's changes, for live watchers.
    events: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    /// Live leases and their deadlines.
    leases: Mutex<HashMap<u64, (Duration, Instant)>>,
}

/// The error for a store another process holds, naming that process when its pid file says
/// which and it still runs.
fn in_use(dir: &Path, pid_file: &Path) -> StoreError {
    let pid = std::fs::read_to_string(pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok());
    let holder = match pid.filter(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    };
    StoreError::EmbeddedInUse { dir: dir.display().to_string(), holder }
}

impl Embedded {
    /// Opens (or creates) `dir/pylon.redb`, drops keys of leases that died with the last process
    /// and starts the lease reaper.
    pub async fn open(dir: &Path) -> Result<Embedded> {
        let path = dir.join("pylon.redb");
        let err = |detail: String| StoreError::Embedded { path: path.display().to_string(), detail };
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create the data directory: {e}")))?;
        let pid_file = dir.join("pylon.pid");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => in_use(dir, &pid_file),
            e => err(e.to_string()),
        })?;
        // Who holds it, for the message another process gets (the lock itself is redb's).
        let _ = std::fs::write(&pid_file, std::process::id().to_string());
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            db,
            path: path.clone(),
            writer: Mutex::new(()),
            events,
            leases: Mutex::new(HashMap::new()),
        });
        let stale: Vec<String> =
            inner.blocking(|i| i.scan("", |r| r.lease != 0)).await?.into_iter().map(|kv| kv.key).collect();
        if !stale.is_empty() {
            let ops = stale.into_iter().map(|key| Op::Delete { key }).collect();
            inner.clone().apply(Txn { compares: vec![], ops }).await?;
        }
        tokio::spawn(reap_leases(Arc::downgrade(&inner)));
        Ok(Embedded { inner })
    }
}

fn db_err(path: &Path) -> impl Fn(String) -> StoreError + '_ {
    move |detail| StoreError::Embedded { path: path.display().to_string(), detail }
}

macro_rules! tri {
    ($self:ident, $e:expr) => {
        $e.map_err(|e| db_err(&$self.path)(e.to_string()))?
    };
}

impl Inner {
    /// Runs blocking database work off the async runtime.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| db_err(&self.path)(format!("worker failed: {e}")))?
    }

    fn meta(&self, name: &str) -> Result<u64> {
        let read = tri!(self, self.db.begin_read());
        let table = match read.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(db_err(&self.path)(e.to_string())),
        };
        Ok(tri!(self, table.get(name)).map_or(0, |v| v.value()))
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let read = tri!(self, self.db.begin_read());
        let table = match read.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(&self.path)(e.to_string())),
        };
        match tri!(self, table.get(key)) {
            Some(v) => Ok(Some(self.record(key, v.value())?.to_kv(key))),
            None => Ok(None),
        }
    }

    /// A key's record, or an error naming the key when its bytes are damaged.
    fn record<'a>(&self, key: &str, bytes: &'a [u8]) -> Result<Record<'a>> {
        Record::decode(bytes).ok_or_else(|| db_err(&self.path)(format!("damaged record for key {key:?}")))
    }

    fn scan(&self, prefix: &str, keep: impl Fn(&Record) -> bool) -> Result<Vec<KeyValue>> {
        let read = tri!(self, self.db.begin_read());
        let table = match read.open_table(KV) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(db_err(&self.path)(e.to_string())),
        };
        let mut out = Vec::new();
        for entry in tri!(self, table.range(prefix..)) {
            let (key, value) = tri!(self, entry);
            if !key.value().starts_with(prefix) {
                break;
            }
            let record = self.record(key.value(), value.value())?;
            if keep(&record) {
                out.push(record.to_kv(key.value()));
            }
        }
        Ok(out)
    }

    /// The changes after `after` under `prefix`, or `None` when that history was compacted.
    fn history(&self, prefix: &str, after: Revision) -> Result<Option<Vec<WatchEvent>>> {
        if after < self.meta("compacted")? {
            return Ok(None);
        }
        let read = tri!(self, self.db.begin_read());
        let table = match read.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Some(vec![])),
            Err(e) => return Err(db_err(&self.path)(e.to_string())),
        };
        let mut out = Vec::new();
        for entry in tri!(self, table.range((after + 1, 0)..)) {
            let (key, value) = tri!(self, entry);
            let revision = key.value().0;
            let event = decode_event(revision, value.value())
                .ok_or_else(|| db_err(&self.path)(format!("damaged event log entry at revision {revision}")))?;
            if event_key(&event).starts_with(prefix) {
                out.push(event);
            }
        }
        Ok(Some(out))
    }

    async fn apply(self: Arc<Self>, txn: Txn) -> Result<TxnResult> {
        self.blocking(move |inner| inner.apply_blocking(txn)).await
    }

    fn apply_blocking(&self, txn: Txn) -> Result<TxnResult> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let write = tri!(self, self.db.begin_write());
        let mut events = Vec::new();
        let revision;
        {
            let mut kv = tri!(self, write.open_table(KV));
            let mut log = tri!(self, write.open_table(LOG));
            let mut meta = tri!(self, write.open_table(META));
            let current = tri!(self, meta.get("revision")).map_or(0, |v| v.value());
            for compare in &txn.compares {
                let found = match tri!(self, kv.get(compare.key.as_str())) {
                    Some(v) => self.record(&compare.key, v.value())?.modified,
                    None => 0,
                };
                if found != compare.revision {
                    return Ok(TxnResult { succeeded: false, revision: current });
                }
            }
            revision = current + 1;
            for op in txn.ops {
                match op {
                    Op::Put { key, value, lease } => {
                        let lease = match lease {
                            Some(id) => self.live_lease(&id)?,
                            None => 0,
                        };
                        let create = match tri!(self, kv.get(key.as_str())) {
                            Some(v) => self.record(&key, v.value())?.create,
                            None => revision,
                        };
                        let record = Record { create, modified: revision, lease, value: &value };
                        tri!(self, kv.insert(key.as_str(), record.encode().as_slice()));
                        events.push(WatchEvent::Put(record.to_kv(&key)));
                    }
                    Op::Delete { key } => {
                        if tri!(self, kv.remove(key.as_str())).is_some() {
                            events.push(WatchEvent::Delete { key, revision });
                        }
                    }
                    Op::DeletePrefix { prefix } => {
                        let mut doomed = Vec::new();
                        for entry in tri!(self, kv.range(prefix.as_str()..)) {
                            let (key, _) = tri!(self, entry);
                            if !key.value().starts_with(prefix.as_str()) {
                                break;
                            }
                            doomed.push(key.value().to_string());
                        }
                        for key in doomed {
                            tri!(self, kv.remove(key.as_str()));
                            events.push(WatchEvent::Delete { key, revision });
                        }
                    }
                }
            }
            if events.is_empty() {
                return Ok(TxnResult { succeeded: true, revision: current });
            }
            for (i, event) in events.iter().enumerate() {
                tri!(self, log.insert((revision, i as u32), encode_event(event).as_slice()));
            }
            tri!(self, meta.insert("revision", revision));
            if revision > HISTORY {
                let cut = revision - HISTORY;
                tri!(self, log.retain_in((0, 0)..(cut + 1, 0), |_, _| false));
                tri!(self, meta.insert("compacted", cut));
            }
        }
        tri!(self, write.commit());
        let _ = self.events.send(Arc::new(events));
        Ok(TxnResult { succeeded: true, revision })
    }

    fn live_lease(&self, id: &LeaseId) -> Result<u64> {
        let n: u64 = id.0.parse().map_err(|_| StoreError::LeaseLost(id.clone()))?;
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match leases.get(&n) {
            Some((_, deadline)) if *deadline > Instant::now() => Ok(n),
            _ => Err(StoreError::LeaseLost(id.clone())),
        }
    }

    async fn revoke(self: &Arc<Self>, lease: u64) -> Result<()> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner()).remove(&lease);
        let keys = self.blocking(move |i| i.scan("", |r| r.lease == lease)).await?;
        let ops = keys.into_iter().map(|kv| Op::Delete { key: kv.key }).collect::<Vec<_>>();
        if !ops.is_empty() {
            self.clone().apply(Txn { compares: vec![], ops }).await?;
        }
        Ok(())
    }
}

/// Revokes expired leases every 100 ms until the store is dropped.
async fn reap_leases(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<u64> = {
            let leases = inner.leases.lock().unwrap_or_else(|e| e.into_inner());
            leases.iter().filter(|(_, (_, deadline))| *deadline <= now).map(|(id, _)| *id).collect()
        };
        for lease in expired {
            if let Err(err) = inner.revoke(lease).await {
                tracing::warn!(lease, %err, "could not delete the keys of an expired lease");
            }
        }
    }
}

#[async_trait]
impl Backend for Embedded {
    fn name(&self) -> &'static str {
        "embedded store"
    }
    fn endpoint(&self) -> String {
        self.inner.path.display().to_string()
    }
    fn max_value_bytes(&self) -> usize {
        16 << 20
    }
    fn max_txn_ops(&self) -> usize {
        usize::MAX
    }
    fn keeps_history(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.inner.blocking(move |i| i.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let prefix = prefix.to_string();
        self.inner
            .blocking(move |i| {
                let _writer = i.writer.lock().unwrap_or_else(|e| e.into_inner());
                Ok(Listing { kvs: i.scan(&prefix, |_| true)?, revision: i.meta("revision")? })
            })
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.inner.clone().apply(txn).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let (tx, watch) = Watch::channel();
        let mut live = self.inner.events.subscribe();
        let (inner, prefix) = (self.inner.clone(), prefix.to_string());
        tokio::spawn(async move {
            let mut last = after;
            loop {
                let p = prefix.clone();
                let Ok(history) = inner.blocking(move |i| i.history(&p, last)).await else { return };
                let Some(history) = history else {
                    let revision = inner.blocking(|i| i.meta("revision")).await.unwrap_or(last);
                    let _ = tx.send(WatchEvent::Compacted { revision }).await;
                    return;
                };
                for event in history {
                    last = event.revision();
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                loop {
                    let batch = tokio::select! {
                        _ = tx.closed() => return,
                        batch = live.recv() => batch,
                    };
                    match batch {
                        Ok(batch) => {
                            for event in
                                batch.iter().filter(|e| e.revision() > last && event_key(e).starts_with(&prefix))
                            {
                                if tx.send(event.clone()).await.is_err() {
                                    return;
                                }
                            }
                            last = last.max(batch.first().map_or(last, WatchEvent::revision));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        });
        Ok(watch)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let id = self
            .inner
            .blocking(|i| {
                let write = tri!(i, i.db.begin_write());
                let id = {
                    let mut meta = tri!(i, write.open_table(META));
                    let id = tri!(i, meta.get("lease")).map_or(0, |v| v.value()) + 1;
                    tri!(i, meta.insert("lease", id));
                    id
                };
                tri!(i, write.commit());
                Ok(id)
            })
            .await?;
        self.inner.leases.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (ttl, Instant::now() + ttl));
        Ok(LeaseId(id.to_string()))
    }

    async fn keep_alive(&self, lease: &LeaseId) -> Result<()> {
        let n = self.inner.live_lease(lease)?;
        let mut leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ttl, deadline)) = leases.get_mut(&n) {
            *deadline = Instant::now() + *ttl;
        }
        Ok(())
    }

    async fn revoke_lease(&self, lease: &LeaseId) -> Result<()> {
        match lease.0.parse() {
            Ok(n) => self.inner.revoke(n).await,
            Err(_) => Ok(()),
        }
    }
}
