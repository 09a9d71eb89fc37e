//! The Consul backend over its HTTP API: KV with `?recurse`, transactions on `/v1/txn`, leases as
//! sessions with `Behavior=delete`, watches as blocking queries diffed against a local mirror.
//!
//! Consul keeps no history: a watch asked to resume from a past index reports `Compacted` (the
//! caller re-lists), and several changes to one key between two blocking answers arrive as one.
//! A Consul session is invalidated up to twice its TTL after the last renewal, so a lease of TTL
//! `t` is a session of TTL `t/2`: keys vanish within `t` like on etcd.

mod api;

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use http::{Method, StatusCode};

use self::api::{check, encode_key, Api, Entry, TxnAnswer, TxnKv};
use super::{Backend, KeyValue, LeaseId, Listing, Op, Result, Revision, StoreError, Txn, TxnResult, Watch, WatchEvent};

/// Consul refuses values over 512 KiB.
const MAX_VALUE: usize = 512 * 1024;
/// Consul 1.8 refuses transactions of more than 64 operations; one is kept for the write that
/// makes a delete-only transaction report its index (see [`txn_ops`]).
const MAX_TXN_OPS: usize = 63;
/// The largest value written through `/v1/txn`, which caps the whole request at 512 KiB and
/// carries values in base64; larger ones take the KV endpoint.
const MAX_TXN_VALUE: usize = 256 * 1024;
/// How long a blocking query waits for a change before answering unchanged.
const BLOCKING_WAIT: Duration = Duration::from_secs(60);

pub struct Consul {
    api: Api,
}

impl Consul {
    /// Connects and checks that the agent has a leader, so a bad endpoint fails now.
    pub async fn connect(endpoint: &str, token: Option<String>, tls: Option<&super::tls::StoreTls>) -> Result<Consul> {
        let api = Api::new(endpoint, token, tls)?;
        let answer = api.request(Method::GET, "/v1/status/leader", None).await?;
        let leader = String::from_utf8_lossy(&answer.body).trim().trim_matches('"').to_string();
        if leader.is_empty() {
            return Err(StoreError::Unreachable {
                backend: "Consul",
                endpoint: api.endpoint().to_string(),
                detail: "the agent answers but the cluster has no leader".into(),
            });
        }
        Ok(Consul { api })
    }

    async fn entries(
        &self,
        prefix: &str,
        recurse: bool,
        index: u64,
        wait: Option<Duration>,
    ) -> Result<(u64, Vec<KeyValue>)> {
        let mut path = format!("/v1/kv/{}?", encode_key(prefix));
        if recurse {
            path.push_str("recurse&");
        }
        let timeout = match wait {
            Some(wait) => {
                path.push_str(&format!("index={index}&wait={}s", wait.as_secs()));
                // Consul adds up to wait/16 of jitter.
                wait + wait / 8 + api::REQUEST_TIMEOUT
            }
            None => api::REQUEST_TIMEOUT,
        };
        let request = format!("GET {path}");
        let answer = check(&request, self.api.call(Method::GET, &path, None, timeout).await?)?;
        let unreadable = |detail: String| StoreError::BadAnswer { backend: "Consul", request: request.clone(), detail };
        match answer.status {
            StatusCode::NOT_FOUND => Ok((answer.index, vec![])),
            StatusCode::OK => {
                let entries: Vec<Entry> =
                    serde_json::from_slice(&answer.body).map_err(|e| unreadable(e.to_string()))?;
                let kvs = entries.into_iter().map(Entry::into_kv).collect::<Result<_, _>>().map_err(unreadable)?;
                Ok((answer.index, kvs))
            }
            other => Err(StoreError::Rejected { backend: "Consul", request, detail: format!("answered {other}") }),
        }
    }

    /// A put of one value too large for `/v1/txn` ([`MAX_TXN_VALUE`]), at most compared with its
    /// own key, goes through `PUT /v1/kv/<key>?cas=`, the only path that takes values up to
    /// Consul's 512 KiB limit. That endpoint does not say at which index it wrote, so the index
    /// is read back: the one case where a write's revision may be a later writer's. `None`
    /// when `txn` is not of that shape.
    async fn single_put(&self, txn: &Txn) -> Result<Option<TxnResult>> {
        let [Op::Put { key, value, lease: None }] = txn.ops.as_slice() else { return Ok(None) };
        if value.len() <= MAX_TXN_VALUE {
            return Ok(None);
        }
        let cas = match txn.compares.as_slice() {
            [] => None,
            [c] if c.key == *key => Some(c.revision),
            _ => return Ok(None),
        };
        let mut path = format!("/v1/kv/{}", encode_key(key));
        if let Some(index) = cas {
            path.push_str(&format!("?cas={index}"));
        }
        let answer = self.api.request(Method::PUT, &path, Some(value.clone())).await?;
        if answer.status != StatusCode::OK {
            return Err(StoreError::Rejected {
                backend: "Consul",
                request: format!("a write of {key:?}"),
                detail: format!("answered {}: {}", answer.status, String::from_utf8_lossy(&answer.body).trim()),
            });
        }
        let succeeded = answer.body.trim_ascii() == b"true";
        // The KV endpoint does not say at which index it wrote: read it back.
        let revision = match self.entries(key, false, 0, None).await? {
            (_, kvs) if succeeded => kvs.iter().find(|kv| kv.key == *key).map_or(0, |kv| kv.mod_revision),
            (index, _) => index,
        };
        Ok(Some(TxnResult { succeeded, revision }))
    }

    /// Sends `first`, then follows `prefix` with blocking queries from `index`, diffing each
    /// answer against `mirror` (the state the caller has seen).
    fn follow(
        &self,
        prefix: &str,
        mut mirror: BTreeMap<String, KeyValue>,
        mut index: u64,
        first: Vec<WatchEvent>,
    ) -> Watch {
        let (tx, watch) = Watch::channel();
        let (this, prefix) = (Consul { api: self.api.clone() }, prefix.to_string());
        tokio::spawn(async move {
            for event in first {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            let mut backoff = Duration::from_millis(100);
            // After an answer that changed nothing, read once without blocking: a snapshot
            // restore wakes blocking queries with the old state, then moves the index backwards,
            // which a query blocked on the old index would not see until its wait ran out.
            let mut verify = false;
            loop {
                let wait = (!verify).then_some(BLOCKING_WAIT);
                let answer = tokio::select! {
                    _ = tx.closed() => return,
                    answer = this.entries(&prefix, true, if verify { 0 } else { index }, wait) => answer,
                };
                let (next, entries) = match answer {
                    Ok(answer) => answer,
                    Err(err) => {
                        tracing::warn!(endpoint = %this.api.endpoint(), %err, "Consul watch failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        // The agent may come back restored, its index below ours: a query
                        // blocking on our index would wait its whole time before saying so.
                        verify = true;
                        continue;
                    }
                };
                backoff = Duration::from_millis(100);
                for event in diff(&mut mirror, entries, next) {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                verify = !verify && next == index;
                // Consul's advice: start over when the index goes backwards (a restored snapshot).
                index = if next < index { 0 } else { next };
            }
        });
        watch
    }

    /// Whether `lease`'s session still exists.
    async fn session_exists(&self, lease: &LeaseId) -> Result<bool> {
        let path = format!("/v1/session/info/{}", encode_key(&lease.0));
        let answer = self.api.request(Method::GET, &path, None).await?;
        // Older agents answer `null` for an unknown session.
        let sessions: Option<Vec<serde_json::Value>> = match answer.status {
            StatusCode::NOT_FOUND => None,
            _ => serde_json::from_slice(&answer.body).map_err(|e| StoreError::BadAnswer {
                backend: "Consul",
                request: format!("GET {path}"),
                detail: e.to_string(),
            })?,
        };
        Ok(sessions.is_some_and(|s| !s.is_empty()))
    }

    /// The current raft index, read as the index of a (cheap) single-key query.
    async fn current_index(&self, key: &str) -> Result<u64> {
        Ok(self.entries(key, false, 0, None).await?.0)
    }
}

/// The transaction in Consul's terms. Consul answers a `set` with the index it wrote at and a
/// `delete` with nothing, so a transaction that only deletes first sets the key (or the
/// prefix's own key) it then deletes: the answer carries the transaction's index, and the
/// stored result is the same.
fn txn_ops(txn: &Txn) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let deletes_only = txn.ops.iter().all(|op| !matches!(op, Op::Put { .. }));
    for c in &txn.compares {
        let op = match c.revision {
            0 => TxnKv::new("check-not-exists", &c.key),
            r => TxnKv { index: Some(r), ..TxnKv::new("check-index", &c.key) },
        };
        out.push(serde_json::json!({ "KV": op }));
    }
    for op in &txn.ops {
        let op = match op {
            Op::Put { key, value, lease: None } => TxnKv::new("set", key).with_value(value),
            Op::Put { key, value, lease: Some(lease) } => {
                TxnKv { session: Some(lease.0.clone()), ..TxnKv::new("lock", key).with_value(value) }
            }
            Op::Delete { key } => TxnKv::new("delete", key),
            Op::DeletePrefix { prefix } => TxnKv::new("delete-tree", prefix),
        };
        if deletes_only && out.len() == txn.compares.len() {
            out.push(serde_json::json!({ "KV": TxnKv::new("set", &op.key) }));
        }
        out.push(serde_json::json!({ "KV": op }));
    }
    out
}

/// Turns the difference between two states of a prefix into events, in index order.
fn diff(mirror: &mut BTreeMap<String, KeyValue>, kvs: Vec<KeyValue>, index: u64) -> Vec<WatchEvent> {
    let mut next: BTreeMap<String, KeyValue> = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    let mut events: Vec<WatchEvent> = next
        .values()
        .filter(|kv| mirror.get(&kv.key).is_none_or(|old| old.mod_revision != kv.mod_revision))
        .map(|kv| WatchEvent::Put(kv.clone()))
        .collect();
    events.sort_by_key(WatchEvent::revision);
    let revision = index.max(events.last().map_or(0, WatchEvent::revision));
    for key in mirror.keys().filter(|k| !next.contains_key(*k)) {
        events.push(WatchEvent::Delete { key: key.clone(), revision });
    }
    std::mem::swap(mirror, &mut next);
    events
}

#[async_trait]
impl Backend for Consul {
    fn name(&self) -> &'static str {
        "Consul"
    }
    fn endpoint(&self) -> String {
        self.api.endpoint().to_string()
    }
    fn max_value_bytes(&self) -> usize {
        MAX_VALUE
    }
    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }
    fn keeps_history(&self) -> bool {
        false
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (_, kvs) = self.entries(key, false, 0, None).await?;
        Ok(kvs.into_iter().find(|kv| kv.key == key))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let (revision, kvs) = self.entries(prefix, true, 0, None).await?;
        Ok(Listing { kvs, revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        if let Some(result) = self.single_put(&txn).await? {
            return Ok(result);
        }
        let body = serde_json::to_vec(&txn_ops(&txn)).expect("JSON of plain values");
        let answer = self.api.request(Method::PUT, "/v1/txn", Some(body)).await?;
        let probe = txn.compares.first().map(|c| c.key.clone());
        match answer.status {
            StatusCode::OK => {
                let parsed: TxnAnswer = serde_json::from_slice(&answer.body).map_err(|e| StoreError::BadAnswer {
                    backend: "Consul",
                    request: txn.describe(),
                    detail: e.to_string(),
                })?;
                let written =
                    parsed.results.unwrap_or_default().into_iter().filter_map(|r| r.kv).map(|kv| kv.modify_index).max();
                // Every transaction that writes has a `set` (see `txn_ops`); one with no op
                // at all writes nothing and is at the current index.
                let revision = match written {
                    Some(index) => index,
                    None => self.current_index(probe.as_deref().unwrap_or("pylon")).await?,
                };
                Ok(TxnResult { succeeded: true, revision })
            }
            StatusCode::CONFLICT => {
                // A "lock" op fails when its session is gone: that is a lost lease, not a
                // failed compare. Consul says which only in prose, so the session is asked for.
                let lease = txn.ops.iter().find_map(|op| match op {
                    Op::Put { lease: Some(l), .. } => Some(l),
                    _ => None,
                });
                if let Some(lease) = lease {
                    if !self.session_exists(lease).await? {
                        return Err(StoreError::LeaseLost(lease.clone()));
                    }
                }
                // Nothing was written: the revision is the store's current one.
                let revision = self.current_index(probe.as_deref().unwrap_or("pylon")).await?;
                Ok(TxnResult { succeeded: false, revision })
            }
            other => Err(StoreError::Rejected {
                backend: "Consul",
                request: txn.describe(),
                detail: format!("answered {other}: {}", String::from_utf8_lossy(&answer.body)),
            }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        // Read the prefix now, so that changes made after this call returns are never missed.
        let (index, entries) = self.entries(prefix, true, 0, None).await?;
        let mut mirror = BTreeMap::new();
        diff(&mut mirror, entries, index);
        if index != after {
            let (tx, watch) = Watch::channel();
            let _ = tx.send(WatchEvent::Compacted { revision: index }).await;
            return Ok(watch);
        }
        Ok(self.follow(prefix, mirror, index, Vec::new()))
    }

    /// Consul has no history to resume from, but the listing says what the caller knows: the
    /// prefix read now, diffed against it, is exactly what changed since. So a watch on part
    /// of a listed prefix needs no index of its own (a sub-prefix's index is not the
    /// listing's, and an empty one's is Consul's global index).
    async fn watch_listed(&self, prefix: &str, listed: &Listing) -> Result<Watch> {
        let known = listed.kvs.iter().filter(|kv| kv.key.starts_with(prefix));
        let mut mirror: BTreeMap<String, KeyValue> = known.map(|kv| (kv.key.clone(), kv.clone())).collect();
        let (index, entries) = self.entries(prefix, true, 0, None).await?;
        let since = diff(&mut mirror, entries, index.max(listed.revision));
        Ok(self.follow(prefix, mirror, index, since))
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let session_ttl = ttl.as_secs().div_ceil(2).max(1);
        let body = serde_json::json!({
            "Name": "pylon",
            "TTL": format!("{session_ttl}s"),
            "Behavior": "delete",
            "LockDelay": "0s",
        });
        // A freshly started agent answers 500 until its node is registered: server errors are
        // retried for up to 5 s, then reported.
        let request = "PUT /v1/session/create";
        let mut attempts = 0;
        let answer = loop {
            let body = Some(body.to_string().into_bytes());
            let answer = self.api.call(Method::PUT, "/v1/session/create", body, api::REQUEST_TIMEOUT).await?;
            if answer.status.is_server_error() && attempts < 50 {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            break check(request, answer)?;
        };
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let created: Created = serde_json::from_slice(&answer.body).map_err(|e| StoreError::BadAnswer {
            backend: "Consul",
            request: "PUT /v1/session/create".into(),
            detail: format!("{e}: {}", String::from_utf8_lossy(&answer.body)),
        })?;
        Ok(LeaseId(created.id))
    }

    async fn keep_alive(&self, lease: &LeaseId) -> Result<()> {
        let answer =
            self.api.request(Method::PUT, &format!("/v1/session/renew/{}", encode_key(&lease.0)), None).await?;
        match answer.status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(StoreError::LeaseLost(lease.clone())),
            other => Err(StoreError::Rejected {
                backend: "Consul",
                request: format!("a renewal of session {lease}"),
                detail: format!("answered {other}"),
            }),
        }
    }

    async fn revoke_lease(&self, lease: &LeaseId) -> Result<()> {
        self.api.request(Method::PUT, &format!("/v1/session/destroy/{}", encode_key(&lease.0)), None).await?;
        Ok(())
    }
}
