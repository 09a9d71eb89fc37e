//! The cluster as any replica sees it (`/api/pylon/cluster`, and `pylon cluster` from the
//! command line): the replicas' records, each certificate with its expiry, issuer, the
//! replica holding its lock, the order in progress and its stage, the recorded failures and
//! when their backoff ends; and the locks. Built from what the control plane follows (the
//! replicas' records, the ACME state), never from a store read per request.

use std::{collections::BTreeSet, sync::Arc};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::control::{
    acme::follow::Stored,
    replicas::{Replicas, HEARTBEAT},
};

/// What the view is built from.
pub struct Cluster {
    pub replicas: watch::Receiver<Arc<Replicas>>,
    /// The ACME state, when ACME is on.
    pub acme: Option<watch::Receiver<Arc<Stored>>>,
}

impl Cluster {
    pub fn view(&self) -> Value {
        let replicas = self.replicas.borrow().clone();
        let stored = self.acme.as_ref().map(|s| s.borrow().clone()).unwrap_or_default();
        view(&replicas, &stored, crate::calendar::unix_now())
    }
}

/// The view at `now` (Unix seconds).
pub fn view(replicas: &Replicas, stored: &Stored, now: i64) -> Value {
    let replicas: Vec<Value> = replicas
        .values()
        .map(|r| {
            // A replica writes every HEARTBEAT; one that missed two is late (its record goes
            // when its lease runs out).
            let late = now.saturating_sub(r.heartbeat) > 2 * HEARTBEAT.as_secs() as i64;
            json!({
                "id": r.id, "name": r.name, "holder": r.holder, "version": r.version, "addresses": r.addresses,
                "started": rfc3339(r.started), "revision": r.revision, "lastHeartbeat": rfc3339(r.heartbeat),
                "status": if late { "late" } else { "up" },
            })
        })
        .collect();
    let mains: BTreeSet<&String> = stored
        .certs
        .keys()
        .chain(stored.orders.keys())
        .chain(stored.failures.keys())
        .chain(stored.locked.keys())
        .collect();
    let certificates: Vec<Value> = mains
        .into_iter()
        .map(|main| {
            let cert = stored.certs.get(main);
            let order = stored.orders.get(main).map(|o| {
                json!({ "holder": o.holder, "started": rfc3339(o.started), "stage": if o.stage.is_empty() { "ordering" } else { &o.stage } })
            });
            let failure = stored.failures.get(main).map(|f| {
                json!({ "failures": f.failures, "error": f.error, "holder": f.holder, "retryAt": rfc3339(f.retry_at_ms / 1000) })
            });
            json!({
                "main": main,
                "names": cert.map_or_else(Vec::new, |c| c.names.clone()),
                "notBefore": cert.map(|c| rfc3339(c.not_before)),
                "notAfter": cert.map(|c| rfc3339(c.not_after)),
                "daysLeft": cert.map(|c| c.not_after.saturating_sub(now).div_euclid(86_400)),
                "lifetimeDays": cert.map(|c| c.not_after.saturating_sub(c.not_before) / 86_400),
                "issuer": cert.map(|c| c.issuer.clone()),
                "onDemand": cert.is_some_and(|c| c.on_demand),
                "lockedBy": stored.locked.get(main).map(|(holder, _)| holder),
                "order": order,
                "failure": failure,
            })
        })
        .collect();
    let locks: Vec<Value> = stored
        .locked
        .iter()
        .map(|(main, (holder, _))| json!({ "name": format!("cert/{main}"), "holder": holder }))
        .collect();
    json!({ "replicas": replicas, "certificates": certificates, "locks": locks })
}

fn rfc3339(unix: i64) -> String {
    crate::calendar::rfc3339(unix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{
        acme::{progress::OrderMarker, record::CertRecord},
        replicas::ReplicaRecord,
    };

    #[test]
    fn the_view_names_lock_holders_orders_and_late_replicas() {
        let now = 1_800_000_000;
        let mut replicas = Replicas::new();
        for (id, heartbeat) in [("a-1", now - 1), ("b-2", now - 60)] {
            replicas.insert(id.into(), ReplicaRecord { id: id.into(), heartbeat, ..Default::default() });
        }
        let mut stored = Stored::default();
        stored.certs.insert(
            "a.example".into(),
            CertRecord {
                main: "a.example".into(),
                names: vec!["a.example".into()],
                chain: String::new(),
                key: String::new(),
                not_before: now - 30 * 86_400,
                not_after: now + 60 * 86_400,
                issuer: "Pebble".into(),
                ca: String::new(),
                on_demand: false,
            },
        );
        stored.orders.insert(
            "b.example".into(),
            OrderMarker { holder: "a-1".into(), started: now - 3, stage: "validating".into() },
        );
        stored.locked.insert("b.example".into(), ("host/1".into(), 5));
        let v = view(&replicas, &stored, now);
        assert_eq!(v["replicas"][0]["status"], "up");
        assert_eq!(v["replicas"][1]["status"], "late");
        assert_eq!(v["certificates"][0]["daysLeft"], 60);
        assert_eq!(v["certificates"][0]["lifetimeDays"], 90);
        assert_eq!(v["certificates"][1]["order"]["stage"], "validating");
        assert_eq!(v["certificates"][1]["lockedBy"], "host/1");
        assert_eq!(v["locks"], json!([{ "name": "cert/b.example", "holder": "host/1" }]));
    }
}
