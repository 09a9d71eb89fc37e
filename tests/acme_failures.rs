//! Distributed ACME when things go wrong, against a real Pebble: a lock holder killed mid-order,
//! a lock lost mid-order, a CA rejecting half of its nonces, validations that cannot succeed,
//! and a CA that would reuse a previous validation.

mod support;

use std::time::{Duration, Instant};

use pylon::control::store::{Op, Txn};
use support::{
    eventually, free_port,
    gate::Gate,
    pebble::{Options, Pebble},
    replica::Replica,
    terminate,
    tls::fetch,
    Etcd,
};

const NAME: &str = "k.pylon.test";
const DOMAIN: &str = "[[acme.domains]]\nmain = \"k.pylon.test\"";

#[tokio::test(flavor = "multi_thread")]
async fn when_the_lock_holder_is_killed_mid_order_another_replica_completes_after_the_lease_expires() {
    let etcd = Etcd::start().await;
    // Pebble's validation connects to a gate that holds it: A's order cannot finish.
    let gate = Gate::holding().await;
    let pebble = Pebble::start(Options { http_port: gate.port, ..Options::default() }).await;
    let flags = etcd.flags();
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let mut a = Replica::start(&flags, &pebble.acme_section(DOMAIN)).await;
    let marker = format!("traefik/acme/orders/{NAME}");
    eventually("A starts ordering", Duration::from_secs(30), || async { store.get(&marker).await.unwrap().is_some() })
        .await;
    let a_holder = String::from_utf8(store.get(&marker).await.unwrap().unwrap().value).unwrap();
    assert!(a_holder.contains(&format!("/{}\"", a.child.id())), "A holds the order: {a_holder}");
    a.child.kill().unwrap();
    let killed = Instant::now();

    let b = Replica::start(&flags, &pebble.acme_section(DOMAIN)).await;
    let c = Replica::start(&flags, &pebble.acme_section(DOMAIN)).await;
    gate.open_to(b.web);
    eventually("the certificate is stored", Duration::from_secs(60), || async {
        store.get(&format!("traefik/acme/certs/{NAME}")).await.unwrap().is_some()
    })
    .await;
    let waited = killed.elapsed();
    assert!(waited >= Duration::from_secs(3), "nobody took A's lock before its 5s lease ran out: {waited:?}");
    let took_over = || [&b, &c].into_iter().find(|r| !r.events("certificate.taken_over").is_empty());
    eventually("B or C reports the takeover", Duration::from_secs(5), || async { took_over().is_some() }).await;
    let taker = took_over().unwrap();
    let taken = taker.events("certificate.taken_over");
    assert!(taken[0].contains(&format!("/{}", a.child.id())), "the takeover names A: {taken:?}");
    let root = pebble.issuing_root().await;
    for replica in [&b, &c] {
        eventually("served", Duration::from_secs(1), || async { fetch(replica.websecure, NAME, &root).await.is_ok() })
            .await;
    }
    assert!(store.get(&marker).await.unwrap().is_none(), "the order marker is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_holder_stopped_with_sigterm_hands_its_lock_over_at_once() {
    let etcd = Etcd::start().await;
    let gate = Gate::holding().await;
    let pebble = Pebble::start(Options { http_port: gate.port, ..Options::default() }).await;
    let flags = etcd.flags();
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let section = pebble.acme_section(DOMAIN);
    let lifecycle = "[lifeCycle]\nrequestAcceptGraceTimeout = \"0s\"\ngraceTimeOut = \"1s\"\n";
    let mut a = Replica::start(&flags, &format!("{lifecycle}{section}")).await;
    let lock = format!("traefik/acme/locks/cert/{NAME}");
    let holder = || async { store.get(&lock).await.unwrap().map(|kv| String::from_utf8(kv.value).unwrap()) };
    eventually("A holds the lock", Duration::from_secs(30), || async { holder().await.is_some() }).await;
    assert!(holder().await.unwrap().ends_with(&format!("/{}", a.child.id())), "A holds it");
    let b = Replica::start(&flags, &section).await;
    eventually("B follows the ACME state", Duration::from_secs(5), || async {
        b.log().contains("ACME state followed")
    })
    .await;

    terminate(&a.child);
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(status) = a.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("A exits within its grace time");
    let exited = Instant::now();
    assert!(status.success(), "A exits 0 after SIGTERM: {status}\n{}", a.log());
    assert!(holder().await.is_none_or(|h| !h.ends_with(&format!("/{}", a.child.id()))), "A released its lock");
    let b_suffix = format!("/{}", b.child.id());
    while !holder().await.is_some_and(|h| h.ends_with(&b_suffix)) {
        assert!(exited.elapsed() < Duration::from_secs(1), "B took A's lock within 1 s (lease TTL 5 s)\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = exited.elapsed();
    eprintln!("B took the lock {took:?} after A exited");
    assert!(a.log().contains("lease revoked"), "A revoked its lease:\n{}", a.log());

    gate.open_to(b.web);
    eventually("B issues the certificate", Duration::from_secs(60), || async {
        !b.events("certificate.issued").is_empty()
    })
    .await;
    let taken = b.events("certificate.taken_over");
    assert!(taken.iter().any(|e| e.contains(&format!("/{}", a.child.id()))), "B took over from A: {taken:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_task_that_panics_is_reported_and_its_name_retried() {
    let etcd = Etcd::start().await;
    let web = free_port();
    let pebble = Pebble::start(Options { http_port: web, ..Options::default() }).await;
    let env = [("PYLON_TEST_PANIC_ORDER", NAME)];
    let a = Replica::start_with(&etcd.flags(), &pebble.acme_section(DOMAIN), web, &env).await;
    eventually("the certificate is issued after the panic", Duration::from_secs(60), || async {
        !a.events("certificate.issued").is_empty()
    })
    .await;
    let failed = a.events("certificate.failed");
    assert!(
        failed.iter().any(|e| e.contains(NAME) && e.contains("the order task stopped") && e.contains("panic")),
        "the panic is reported as a failed order: {failed:?}"
    );
    assert_eq!(pebble.orders(), 1, "the panic came before any order; the retry ordered once");
}

#[tokio::test(flavor = "multi_thread")]
async fn issuance_succeeds_while_the_ca_rejects_half_of_its_nonces() {
    let etcd = Etcd::start().await;
    let web = free_port();
    let pebble = Pebble::start(Options { http_port: web, nonce_reject: 50, ..Options::default() }).await;
    let names = ["n1.pylon.test", "n2.pylon.test", "n3.pylon.test"];
    let domains: String = names.iter().map(|n| format!("[[acme.domains]]\nmain = \"{n}\"\n")).collect();
    let a = Replica::start_with_web(&etcd.flags(), &pebble.acme_section(&domains), web).await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    eventually("the certificates are stored", Duration::from_secs(60), || async {
        store.list("traefik/acme/certs/").await.unwrap().kvs.len() == names.len()
    })
    .await;
    assert!(a.events("certificate.failed").is_empty(), "no order failed:\n{}", a.log());
    assert_eq!(pebble.orders(), names.len());
    // Requests made once per account (sign-me-up) or once per order (order-plz, chalZ,
    // finalize-order, certZ): any count above that is a request Pebble rejected for its nonce
    // and Pylon sent again. With 13 such requests at 50%, none rejected has odds of 1 in 8192.
    let once = ["POST /sign-me-up", "POST /order-plz", "POST /chalZ/", "POST /finalize-order/", "POST /certZ/"];
    let sent = pebble.log().lines().filter(|l| once.iter().any(|o| l.contains(o))).count();
    assert!(sent > 1 + 4 * names.len(), "some requests were rejected and retried ({sent} sent)");
    let root = pebble.issuing_root().await;
    for name in names {
        assert!(fetch(a.websecure, name, &root).await.is_ok(), "{name} served");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_renewals_back_off_across_the_cluster_and_the_previous_certificate_stays() {
    let etcd = Etcd::start().await;
    let gate = Gate::holding().await;
    // 45 s certificates: renewal is due after about 30 s, and three failed renewals 2 s, 4 s
    // apart (each order waiting for its answer to be served) fit before the certificate expires.
    let pebble = Pebble::start(Options { http_port: gate.port, validity: Some(45), ..Options::default() }).await;
    let flags = etcd.flags();
    let section = pebble.acme_section(&format!("failureBackoff = \"2s\"\n{DOMAIN}"));
    let a_web = free_port();
    gate.open_to(a_web);
    let a = Replica::start_with_web(&flags, &section, a_web).await;
    let b = Replica::start(&flags, &section).await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let cert_key = format!("traefik/acme/certs/{NAME}");
    eventually("the certificate is stored", Duration::from_secs(60), || async {
        store.get(&cert_key).await.unwrap().is_some()
    })
    .await;
    let root = pebble.issuing_root().await;
    let first = fetch(a.websecure, NAME, &root).await.unwrap().leaf;
    gate.refuse();

    // Watch the cluster's failure record until three renewals failed; the certificate must be
    // served unchanged by both replicas all along.
    let failure_key = format!("traefik/acme/failures/{NAME}");
    let mut seen: Vec<(u32, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(55);
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "three failures within 55 s; saw {seen:?}\n{}", a.log());
        if let Some(kv) = store.get(&failure_key).await.unwrap() {
            let record: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            let failures = record["failures"].as_u64().unwrap() as u32;
            if seen.last().is_none_or(|(n, _)| *n != failures) {
                seen.push((failures, Instant::now()));
            }
        }
        for replica in [&a, &b] {
            let served = fetch(replica.websecure, NAME, &root).await.expect("the certificate is still served");
            assert!(
                served.leaf == first,
                "the previous certificate is served while renewal fails; failures seen {seen:?}\n\
                 A:\n{}\nB:\n{}\nPebble:\n{}",
                a.log(),
                b.log(),
                pebble.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let numbers: Vec<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [1, 2, 3], "every failure is counted once, cluster-wide");
    // Nominal delays 2 s then 4 s, with ±20% jitter.
    let gap = |i: usize| seen[i + 1].1 - seen[i].1;
    assert!(gap(0) >= Duration::from_millis(1_500), "first retry after ~2 s: {:?}", gap(0));
    assert!(gap(1) >= Duration::from_millis(3_100), "second retry after ~4 s: {:?}", gap(1));
    assert_eq!(pebble.orders(), 1 + 3, "one order per attempt, whichever replica made it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_validates_again_even_where_the_ca_would_reuse_the_previous_authorization() {
    let etcd = Etcd::start().await;
    let gate = Gate::holding().await;
    // Pebble hands every order an existing valid authorization: only a deactivated one is not.
    let pebble = Pebble::start(Options { http_port: gate.port, authz_reuse: Some(100), ..Options::default() }).await;
    let a_web = free_port();
    gate.open_to(a_web);
    let a = Replica::start_with_web(&etcd.flags(), &pebble.acme_section(DOMAIN), a_web).await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    eventually("the certificate is stored", Duration::from_secs(60), || async {
        store.get(&format!("traefik/acme/certs/{NAME}")).await.unwrap().is_some()
    })
    .await;
    eventually("the authorizations are deactivated", Duration::from_secs(5), || async {
        a.log().contains("the order's authorizations are deactivated")
    })
    .await;

    gate.refuse();
    let out = support::pylon()
        .arg(format!("--configfile={}", a.config.display()))
        .args(etcd.flags())
        .args(["acme", "renew", NAME])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the renewal could not validate, so it must fail:\n{text}");
    assert!(text.contains(&format!("renewing {NAME}")) && text.contains("previous certificate stays"), "{text}");
    assert_eq!(pebble.orders(), 2);
}

/// A replica whose order for NAME waits at validation (Pebble's connection held by `gate`)
/// when its lock is deleted, as when its lease ran out in a partition and another replica's
/// lock replaced it.
async fn an_order_whose_lock_is_lost(etcd: &Etcd, pebble: &Pebble) -> Replica {
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let extra = format!("[api]\ninsecure = true\n[metrics.prometheus]\n{}", pebble.acme_section(DOMAIN));
    let a = Replica::start(&etcd.flags(), &extra).await;
    eventually("the order waits at validation", Duration::from_secs(30), || async {
        let (_, body) = support::get(&format!("http://127.0.0.1:{}/api/pylon/cluster", a.admin)).await.unwrap();
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let certs = view["certificates"].as_array().cloned().unwrap_or_default();
        certs.iter().any(|c| c["main"] == NAME && c["order"]["stage"] == "validating")
    })
    .await;
    let ops = vec![Op::Delete { key: format!("traefik/acme/locks/cert/{NAME}") }];
    assert!(store.txn(Txn { compares: vec![], ops }).await.unwrap().succeeded);
    a
}

/// The replica's lost-lock reports: its `pylon_acme_orders_total{result="lock_lost"}` and the
/// domain of the `certificate.lock_lost` event in its recent-events list.
async fn lock_lost_reports(a: &Replica) -> (f64, Option<serde_json::Value>) {
    let admin = |path: &str| format!("http://127.0.0.1:{}{path}", a.admin);
    let (_, metrics) = support::get(&admin("/metrics")).await.unwrap();
    let counted = support::sum(&metrics, "pylon_acme_orders_total", &["result=\"lock_lost\""]);
    let (_, events) = support::get(&admin("/api/pylon/events")).await.unwrap();
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let lost = events.as_array().unwrap().iter().find(|e| e["kind"] == "certificate.lock_lost").cloned();
    (counted, lost.map(|e| e["fields"]["domain"].clone()))
}

/// An order that succeeds after its lock was lost stores nothing: the fenced write fails, the
/// event and the counter say so, and the name is ordered again.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_ordered_under_a_lost_lock_is_not_stored() {
    let etcd = Etcd::start().await;
    let gate = Gate::holding().await;
    let pebble = Pebble::start(Options { http_port: gate.port, ..Options::default() }).await;
    let a = an_order_whose_lock_is_lost(&etcd, &pebble).await;
    gate.release_held_to(a.web);
    eventually("A reports the lost lock", Duration::from_secs(30), || async {
        !a.events("certificate.lock_lost").is_empty()
    })
    .await;
    assert!(a.events("certificate.issued").is_empty(), "nothing issued under a lost lock:\n{}", a.log());
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let cert = format!("traefik/acme/certs/{NAME}");
    assert!(store.get(&cert).await.unwrap().is_none(), "the certificate ordered under a lost lock is not stored");
    assert_eq!(lock_lost_reports(&a).await, (1.0, Some(NAME.into())));

    eventually("the name is ordered again and issued", Duration::from_secs(60), || async {
        !a.events("certificate.issued").is_empty()
    })
    .await;
    assert!(store.get(&cert).await.unwrap().is_some());
}

/// An order that fails after its lock was lost ends as a lost lock, not a failed order: whether
/// and when the name failed is the new holder's to record.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_under_a_lost_lock_is_not_recorded() {
    let etcd = Etcd::start().await;
    let gate = Gate::holding().await;
    let pebble = Pebble::start(Options { http_port: gate.port, ..Options::default() }).await;
    let a = an_order_whose_lock_is_lost(&etcd, &pebble).await;
    gate.refuse();
    eventually("A reports the lost lock", Duration::from_secs(30), || async {
        !a.events("certificate.lock_lost").is_empty()
    })
    .await;
    let log = a.log();
    let outcomes: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            ["certificate.lock_lost", "certificate.failed"].into_iter().find(|k| l.contains(&format!("event=\"{k}\"")))
        })
        .collect();
    assert_eq!(outcomes.first(), Some(&"certificate.lock_lost"), "the first order ends as a lost lock:\n{log}");
    assert_eq!(lock_lost_reports(&a).await, (1.0, Some(NAME.into())));
}
