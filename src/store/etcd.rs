//! The etcd v3 backend, through the `etcd-client` crate. Revisions, leases and compaction are
//! etcd's own; a watch that loses its stream re-creates it from the last delivered revision.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, TxnOp,
    WatchOptions,
};

use super::{Backend, KeyValue, LeaseId, Listing, Op, Result, Revision, StoreError, Txn, TxnResult, Watch, WatchEvent};

/// How long one request may take before the endpoint is reported unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// etcd refuses requests over 1.5 MiB by default; leave room for the key and the envelope.
const MAX_VALUE: usize = 1024 * 1024;
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

pub struct Etcd {
    client: Client,
    endpoints: Vec<String>,
}

/// Where and how to reach etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Etcd {
    pub async fn connect(options: &EtcdOptions) -> Result<Etcd> {
        let endpoints = options.endpoints.clone();
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(password)) = (&options.username, &options.password) {
            connect = connect.with_user(user.clone(), password.clone());
        }
        let unreachable =
            |detail: String| StoreError::Unreachable { backend: "etcd", endpoint: endpoints.join(","), detail };
        let client = tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(&endpoints, Some(connect)))
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let etcd = Etcd { client, endpoints };
        // The connection is lazy on some paths: prove the cluster answers now.
        etcd.call(|mut c| async move { c.get("pylon-ping", Some(GetOptions::new().with_count_only())).await }).await?;
        Ok(etcd)
    }

    /// Runs one request with a deadline, mapping failures to errors that name the endpoint.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(REQUEST_TIMEOUT, f(self.client.clone())).await {
            Err(_) => Err(self.unreachable(format!("no answer within {REQUEST_TIMEOUT:?}"))),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(etcd_client::Error::GRpcStatus(status))) if status.code() != tonic::Code::Unavailable => {
                Err(StoreError::Rejected { backend: "etcd", detail: status.message().to_string() })
            }
            Ok(Err(err)) => Err(self.unreachable(err.to_string())),
        }
    }

    fn unreachable(&self, detail: String) -> StoreError {
        StoreError::Unreachable { backend: "etcd", endpoint: self.endpoints.join(","), detail }
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision() as u64,
        mod_revision: kv.mod_revision() as u64,
        lease: (kv.lease() != 0).then(|| LeaseId(kv.lease().to_string())),
    }
}

/// The store a watch has followed so far. A store restored from a backup, or wiped and started
/// again on the same address, answers with a lower revision or raft term (or another cluster
/// id): its history is not the one the watch was following, and only a new listing is right.
struct Seen {
    cluster: Option<u64>,
    term: u64,
    revision: Revision,
}

impl Seen {
    /// Records `header`; false when it comes from a store other than the one seen so far.
    fn same_store(&mut self, header: &etcd_client::ResponseHeader) -> bool {
        let (cluster, term, revision) = (header.cluster_id(), header.raft_term(), header.revision() as u64);
        let same = self.cluster.is_none_or(|c| c == cluster) && term >= self.term && revision >= self.revision;
        *self = Seen { cluster: Some(cluster), term, revision };
        same
    }
}

fn lease_number(lease: &LeaseId) -> Result<i64> {
    lease.0.parse().map_err(|_| StoreError::LeaseLost(lease.clone()))
}

#[async_trait]
impl Backend for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn endpoint(&self) -> String {
        self.endpoints.join(",")
    }
    fn max_value_bytes(&self) -> usize {
        MAX_VALUE
    }
    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }
    fn keeps_history(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        let resp = self.call(|mut c| async move { c.get(key, None).await }).await?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let prefix = prefix.to_string();
        let resp = self.call(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }).await?;
        let revision = resp.header().map_or(0, |h| h.revision() as u64);
        Ok(Listing { kvs: resp.kvs().iter().map(to_kv).collect(), revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| EtcdCompare::mod_revision(c.key.clone(), CompareOp::Equal, c.revision as i64))
            .collect();
        let lease = txn.ops.iter().find_map(|op| match op {
            Op::Put { lease: Some(lease), .. } => Some(lease.clone()),
            _ => None,
        });
        let mut ops = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            ops.push(match op {
                Op::Put { key, value, lease: None } => TxnOp::put(key, value, None),
                Op::Put { key, value, lease: Some(lease) } => {
                    TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease_number(&lease)?)))
                }
                Op::Delete { key } => TxnOp::delete(key, None),
                Op::DeletePrefix { prefix } => TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix())),
            });
        }
        let request = etcd_client::Txn::new().when(compares).and_then(ops);
        let resp = match self.call(|mut c| async move { c.txn(request).await }).await {
            // A put bound to an expired lease: etcd says "requested lease not found".
            Err(StoreError::Rejected { detail, .. }) if detail.contains("lease not found") => {
                return Err(StoreError::LeaseLost(lease.unwrap_or_else(|| LeaseId(String::new()))));
            }
            other => other?,
        };
        let revision = resp.header().map_or(0, |h| h.revision() as u64);
        Ok(TxnResult { succeeded: resp.succeeded(), revision })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let (tx, watch) = Watch::channel();
        let (client, prefix) = (self.client.clone(), prefix.to_string());
        let endpoint = self.endpoint();
        tokio::spawn(async move {
            let mut last = after;
            let mut seen = Seen { cluster: None, term: 0, revision: after };
            let mut backoff = Duration::from_millis(100);
            loop {
                let options = WatchOptions::new().with_prefix().with_start_revision(last as i64 + 1);
                let mut watcher = client.clone();
                let stream = tokio::select! {
                    _ = tx.closed() => return,
                    stream = watcher.watch(prefix.clone(), Some(options)) => stream,
                };
                let mut stream = match stream {
                    Ok(stream) => stream,
                    Err(err) => {
                        tracing::warn!(%endpoint, %err, "etcd watch failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                loop {
                    let message = tokio::select! {
                        _ = tx.closed() => return,
                        message = stream.message() => message,
                    };
                    let resp = match message {
                        Ok(Some(resp)) => resp,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(%endpoint, %err, "etcd watch stream broke; resuming after revision {last}");
                            break;
                        }
                    };
                    backoff = Duration::from_millis(100);
                    if let Some(header) = resp.header() {
                        if !seen.same_store(header) {
                            tracing::warn!(%endpoint, "etcd was restored or replaced (its history went backwards); re-listing");
                            let _ = tx.send(WatchEvent::Compacted { revision: header.revision() as u64 }).await;
                            return;
                        }
                    }
                    if resp.compact_revision() > 0 {
                        let revision = resp.compact_revision() as u64;
                        let _ = tx.send(WatchEvent::Compacted { revision }).await;
                        return;
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        let revision = kv.mod_revision() as u64;
                        let event = match event.event_type() {
                            EventType::Put => WatchEvent::Put(to_kv(kv)),
                            EventType::Delete => {
                                WatchEvent::Delete { key: String::from_utf8_lossy(kv.key()).into_owned(), revision }
                            }
                        };
                        last = revision;
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    if resp.canceled() {
                        break;
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Ok(watch)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().max(1) as i64;
        let resp = self.call(|mut c| async move { c.lease_grant(secs, None).await }).await?;
        Ok(LeaseId(resp.id().to_string()))
    }

    async fn keep_alive(&self, lease: &LeaseId) -> Result<()> {
        let id = lease_number(lease)?;
        let resp = self
            .call(|mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await?;
        match resp {
            Some(resp) if resp.ttl() > 0 => Ok(()),
            _ => Err(StoreError::LeaseLost(lease.clone())),
        }
    }

    async fn revoke_lease(&self, lease: &LeaseId) -> Result<()> {
        let id = lease_number(lease)?;
        match self.call(|mut c| async move { c.lease_revoke(id).await }).await {
            Ok(_) => Ok(()),
            Err(StoreError::Rejected { detail, .. }) if detail.contains("not found") => Ok(()),
            Err(err) => Err(err),
        }
    }
}
