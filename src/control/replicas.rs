//! The cluster's replicas, as the store knows them: each replica keeps a record of itself at
//! `<prefix>/replicas/<id>` (name, version, addresses, start time, the configuration revision
//! it serves, its last heartbeat), bound to a lease of its own, so that the record disappears
//! within the lease's TTL when the replica dies, and at once when it stops. Every replica
//! follows all the records, for the API's cluster view.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control::{
    store::{keys::Keys, Lease, Store, WatchEvent},
    watcher::Status,
};

/// How long a dead replica's record outlives it.
pub const TTL: Duration = Duration::from_secs(10);
/// How often a replica rewrites its record.
pub const HEARTBEAT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRecord {
    pub id: String,
    /// The host name (the pod's name on Kubernetes).
    pub name: String,
    /// Its name in lock keys (`host/pid`): who holds a lock.
    pub holder: String,
    pub version: String,
    /// Each entrypoint's listening address.
    pub addresses: BTreeMap<String, String>,
    /// Unix seconds.
    pub started: i64,
    /// The store revision of the dynamic configuration it serves.
    pub revision: u64,
    /// Unix seconds of its last write.
    pub heartbeat: i64,
}

/// Every replica's record, by id.
pub type Replicas = BTreeMap<String, ReplicaRecord>;

/// The records under `<prefix>/replicas/` now: for `pylon cluster`.
pub async fn list(store: &Store, keys: &Keys) -> crate::control::store::Result<Replicas> {
    let prefix = keys.replicas();
    let mut replicas = Replicas::new();
    for kv in store.list(&prefix).await?.kvs {
        put(&mut replicas, &prefix, &kv.key, &kv.value);
    }
    Ok(replicas)
}

/// The replicas as a table, for the command line.
pub fn table(replicas: &Replicas, now: i64, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<28} {:<9} {:>9} {:>10}  {:<20} ADDRESSES",
        "REPLICA", "VERSION", "REVISION", "HEARTBEAT", "STARTED (UTC)"
    )?;
    for r in replicas.values() {
        let addresses: Vec<String> = r.addresses.iter().map(|(ep, a)| format!("{ep}={a}")).collect();
        let started = crate::calendar::rfc3339(r.started).replace('T', " ").trim_end_matches('Z').to_string();
        let age = format!("{}s ago", now.saturating_sub(r.heartbeat).max(0));
        writeln!(
            out,
            "{:<28} {:<9} {:>9} {:>10}  {:<20} {}",
            r.id,
            r.version,
            r.revision,
            age,
            started,
            addresses.join(" ")
        )?;
    }
    if replicas.is_empty() {
        writeln!(out, "(no replica is registered)")?;
    }
    Ok(())
}

/// An id fit for a key: the host name and the process id.
pub fn id(host: &str) -> String {
    let clean: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    format!("{clean}-{}", std::process::id())
}

/// Keeps this replica's record until `shutdown`, then revokes its lease (the record goes).
pub async fn register(
    store: Store,
    keys: Keys,
    me: ReplicaRecord,
    mut status: watch::Receiver<Status>,
    shutdown: CancellationToken,
) {
    let key = keys.replica(&me.id);
    let mut lease: Option<Lease> = None;
    let mut record = me;
    loop {
        if lease.as_ref().is_none_or(Lease::is_lost) {
            lease = match store.lease(TTL).await {
                Ok(granted) => Some(granted),
                Err(err) => {
                    tracing::warn!("cannot get a lease for this replica's record: {err}; retrying");
                    None
                }
            };
        }
        if let Some(held) = &lease {
            record.revision = status.borrow_and_update().revision;
            record.heartbeat = crate::calendar::unix_now();
            let value = serde_json::to_vec(&record).unwrap_or_default();
            if let Err(err) = store.put_with_lease(&key, value, held).await {
                tracing::warn!(key, "writing this replica's record: {err}");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // Once the watcher is gone its status never changes: heartbeats only.
            Ok(()) = status.changed() => {}
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
    if let Some(lease) = lease {
        if let Err(err) = lease.revoke().await {
            tracing::warn!("revoking this replica's lease: {err}; its record goes when the lease runs out");
        }
    }
}

/// Follows every replica's record into `out` until `shutdown`.
pub async fn follow(store: Store, keys: Keys, out: watch::Sender<Arc<Replicas>>, shutdown: CancellationToken) {
    let prefix = keys.replicas();
    let mut delay = Duration::from_millis(250);
    loop {
        let listing = tokio::select! {
            _ = shutdown.cancelled() => return,
            listing = store.list(&prefix) => listing,
        };
        let mut replicas = Replicas::new();
        let watch = match listing {
            Ok(listing) => {
                for kv in &listing.kvs {
                    put(&mut replicas, &prefix, &kv.key, &kv.value);
                }
                out.send_replace(Arc::new(replicas.clone()));
                store.watch(&prefix, listing.revision).await
            }
            Err(err) => Err(err),
        };
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!("following the replicas' records: {err}; retrying in {delay:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(250);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = watch.next() => event,
            };
            match event {
                Some(WatchEvent::Put(kv)) => put(&mut replicas, &prefix, &kv.key, &kv.value),
                Some(WatchEvent::Delete { key, .. }) => {
                    drop(replicas.remove(key.strip_prefix(&prefix).unwrap_or(&key)))
                }
                Some(WatchEvent::Compacted { .. }) | None => break,
            }
            out.send_replace(Arc::new(replicas.clone()));
        }
    }
}

fn put(replicas: &mut Replicas, prefix: &str, key: &str, value: &[u8]) {
    let id = key.strip_prefix(prefix).unwrap_or(key);
    match serde_json::from_slice::<ReplicaRecord>(value) {
        Ok(record) => drop(replicas.insert(id.to_string(), record)),
        Err(err) => tracing::warn!(key, "not a replica record: {err}; left out of the cluster view"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_key_safe_and_records_round_trip() {
        let id = id("pod/a b");
        assert!(id.starts_with("pod_a_b-"), "{id}");
        let record =
            ReplicaRecord { id, name: "pod".into(), version: "0.1.0".into(), revision: 7, ..Default::default() };
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains("\"heartbeat\":0") && text.contains("\"revision\":7"), "{text}");
        let mut replicas = Replicas::new();
        put(&mut replicas, "p/replicas/", "p/replicas/x", text.as_bytes());
        put(&mut replicas, "p/replicas/", "p/replicas/y", b"{not json");
        assert_eq!(replicas.len(), 1);
        assert_eq!(replicas["x"], record);
    }
}
