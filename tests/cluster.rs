//! The cluster seen from any replica: three replicas on real etcd register themselves under
//! their leases; during an order (held at validation by a gate in front of Pebble's HTTP-01
//! connection) `/api/pylon/cluster` and `pylon cluster` name the lock's holder and the order's
//! stage; a replica SIGKILLed drops out within the lease's TTL; when Pebble gives up, both
//! show the failure and its backoff, and the holder counts it in `pylon_acme_orders_total`.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    eventually,
    gate::Gate,
    get,
    pebble::{Options, Pebble},
    pylon_output,
    replica::Replica,
    sum, Etcd,
};

/// The replicas' lease TTL (`control::replicas::TTL`).
const TTL: Duration = pylon::control::replicas::TTL;

const NAME: &str = "cluster.pylon.test";

async fn cluster(replica: &Replica) -> Value {
    let (status, body) = get(&format!("http://127.0.0.1:{}/api/pylon/cluster", replica.admin)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn ids(view: &Value) -> Vec<String> {
    view["replicas"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_shows_the_cluster_and_a_dead_one_drops_out() {
    let etcd = Etcd::start().await;
    let gate = Gate::holding().await;
    let pebble = Pebble::start(Options { http_port: gate.port, ..Options::default() }).await;
    let extra = format!(
        "[api]\ninsecure = true\n[metrics.prometheus]\n{}",
        pebble.acme_section(&format!("[[acme.domains]]\nmain = \"{NAME}\""))
    );
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&etcd.flags(), &extra).await);
    }
    for replica in &replicas {
        eventually("every replica sees the three", Duration::from_secs(10), || async {
            ids(&cluster(replica).await).len() == 3
        })
        .await;
    }
    let view = cluster(&replicas[0]).await;
    for replica in &replicas {
        let pid = replica.child.id();
        let record = view["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"].as_str().unwrap().ends_with(&format!("-{pid}")));
        let record = record.unwrap_or_else(|| panic!("replica {pid} is registered: {view}"));
        assert_eq!(record["status"], "up");
        assert_eq!(record["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(record["addresses"]["web"], format!("127.0.0.1:{}", replica.web));
    }

    // The order waits at validation: the view names the lock's holder and the stage.
    eventually("the order is shown validating under its lock", Duration::from_secs(30), || async {
        let view = cluster(&replicas[1]).await;
        let cert = view["certificates"].as_array().and_then(|c| c.iter().find(|c| c["main"] == NAME)).cloned();
        cert.is_some_and(|c| c["lockedBy"].is_string() && c["order"]["stage"] == "validating")
    })
    .await;
    let view = cluster(&replicas[2]).await;
    let cert = view["certificates"].as_array().unwrap().iter().find(|c| c["main"] == NAME).unwrap().clone();
    let holder = cert["lockedBy"].as_str().unwrap();
    let holding = view["replicas"].as_array().unwrap().iter().find(|r| r["holder"] == holder);
    assert!(holding.is_some(), "the lock's holder {holder} is one of the replicas: {view}");
    assert_eq!(view["locks"][0]["holder"], holder);
    let mut held = Vec::new();
    for replica in &replicas {
        let (_, metrics) = get(&format!("http://127.0.0.1:{}/metrics", replica.admin)).await.unwrap();
        let line =
            metrics.lines().find(|l| l.starts_with("pylon_acme_locks_held ")).unwrap_or_else(|| panic!("{metrics}"));
        held.push(line.rsplit(' ').next().unwrap().parse::<f64>().unwrap());
    }
    held.sort_by(f64::total_cmp);
    assert_eq!(held, [0.0, 0.0, 1.0], "the holder, and only it, counts the lock in pylon_acme_locks_held");
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["cluster".to_string()];
    args.extend(etcd.flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = pylon_output(&args, dir.path());
    assert_eq!(code, 0, "{err}");
    for id in ids(&view) {
        assert!(out.contains(&id), "pylon cluster lists {id}:\n{out}");
    }
    assert_eq!(replica_rows(&out), 3, "pylon cluster lists three replicas:\n{out}");
    assert!(out.contains(&format!("locked by {holder}")), "pylon cluster names the holder:\n{out}");
    assert!(out.contains(&format!("validating by {holder}")), "pylon cluster names the order's stage:\n{out}");
    let lock_row = format!("cert/{NAME}");
    assert!(
        out.lines().skip_while(|l| !l.starts_with("LOCK ")).any(|l| l.starts_with(&lock_row) && l.ends_with(holder)),
        "pylon cluster's LOCKS section names the lock and its holder:\n{out}"
    );

    // SIGKILL: no goodbye; the record goes with the lease.
    let victim = replicas.iter().position(|r| !holder.ends_with(&format!("/{}", r.child.id()))).unwrap();
    let gone = replicas[victim].child.id();
    replicas[victim].child.kill().unwrap();
    let killed = Instant::now();
    for (_, replica) in replicas.iter().enumerate().filter(|(i, _)| *i != victim) {
        eventually("the killed replica drops out", TTL * 3, || async {
            let ids = ids(&cluster(replica).await);
            ids.len() == 2 && !ids.iter().any(|id| id.ends_with(&format!("-{gone}")))
        })
        .await;
    }
    // etcd expires leases on its own half-second tick; the watch then reaches both replicas.
    let took = killed.elapsed();
    assert!(took <= TTL + Duration::from_secs(2), "the killed replica dropped out within the lease TTL: {took:?}");
    let (_, out, _) = pylon_output(&args, dir.path());
    assert!(!out.contains(&format!("-{gone} ")), "pylon cluster no longer lists the killed replica:\n{out}");
    assert_eq!(replica_rows(&out), 2, "pylon cluster lists two replicas:\n{out}");

    // Pebble gives up on the held validation: every survivor shows the failure and when the
    // cluster's backoff ends, and the holder counts a failed order.
    for replica in replicas.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, r)| r) {
        eventually("the failed order is shown with its backoff", Duration::from_secs(60), || async {
            let view = cluster(replica).await;
            let cert = view["certificates"].as_array().and_then(|c| c.iter().find(|c| c["main"] == NAME)).cloned();
            cert.is_some_and(|c| c["failure"]["failures"] == 1 && c["order"].is_null())
        })
        .await;
        let view = cluster(replica).await;
        let cert = view["certificates"].as_array().unwrap().iter().find(|c| c["main"] == NAME).unwrap();
        let failure = &cert["failure"];
        assert!(failure["error"].as_str().unwrap().contains("acme:error:connection"), "{failure}");
        assert_eq!(failure["holder"], holder);
        let retry_at = failure["retryAt"].as_str().unwrap();
        assert!(retry_at > view["replicas"][0]["lastHeartbeat"].as_str().unwrap(), "the backoff ends later: {view}");
        assert!(cert["lockedBy"].is_null() && view["locks"] == serde_json::json!([]), "the lock is released: {view}");
    }
    let (_, out, _) = pylon_output(&args, dir.path());
    assert!(out.contains("1 failed orders, next in"), "pylon cluster shows the failure and its backoff:\n{out}");
    assert!(out.contains("(no lock is held)"), "{out}");
    let mut failed = 0.0;
    for replica in replicas.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, r)| r) {
        let (_, metrics) = get(&format!("http://127.0.0.1:{}/metrics", replica.admin)).await.unwrap();
        failed += sum(&metrics, "pylon_acme_orders_total", &["result=\"failed\""]);
        assert_eq!(sum(&metrics, "pylon_store_up", &[]), 1.0, "{metrics}");
        assert!(sum(&metrics, "pylon_config_revision", &[]) > 0.0, "{metrics}");
        let reloaded = sum(&metrics, "traefik_config_last_reload_success", &[]);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(reloaded > now - 600.0 && reloaded <= now + 1.0, "last reload is a recent Unix time:\n{metrics}");
        assert!(sum(&metrics, "pylon_config_apply_delay_seconds_count", &[]) >= 1.0, "{metrics}");
    }
    assert_eq!(failed, 1.0, "one failed order, counted by its replica alone");
}

/// The rows of `pylon cluster`'s replica table.
fn replica_rows(out: &str) -> usize {
    out.lines().skip(1).take_while(|l| !l.is_empty()).count()
}
