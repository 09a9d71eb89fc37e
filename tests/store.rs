//! The store conformance suite: the same test functions against the embedded store, a real etcd
//! and a real Consul agent. Each test gets a fresh server.

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use pylon::control::store::{self, Compare, Op, Store, StoreError, StoreSpec, Txn, Watch, WatchEvent};

/// A store and whatever keeps its server alive.
struct Backend {
    store: Store,
    _server: Box<dyn std::any::Any + Send>,
}

async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&StoreSpec::Embedded { dir: dir.path().into() }).await.unwrap();
    Backend { store, _server: Box::new(dir) }
}

async fn etcd() -> Backend {
    let server = support::Etcd::start().await;
    let spec = server.spec();
    Backend { store: store::open(&spec).await.unwrap(), _server: Box::new(server) }
}

async fn consul() -> Backend {
    let server = support::Consul::start().await;
    let spec = server.spec();
    Backend { store: store::open(&spec).await.unwrap(), _server: Box::new(server) }
}

/// The next event, or a panic naming what was awaited.
async fn next(watch: &mut Watch, what: &str) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap_or_else(|_| panic!("no watch event within 5 s: {what}"))
        .expect("watch ended")
}

/// An event as (key, value or None for a delete), for comparisons.
fn brief(event: &WatchEvent) -> (String, Option<String>) {
    match event {
        WatchEvent::Put(kv) => (kv.key.clone(), Some(String::from_utf8_lossy(&kv.value).into_owned())),
        WatchEvent::Delete { key, .. } => (key.clone(), None),
        WatchEvent::Compacted { .. } => ("<compacted>".into(), None),
    }
}

fn apply(mirror: &mut BTreeMap<String, String>, event: &WatchEvent) {
    match brief(event) {
        (key, Some(value)) => mirror.insert(key, value),
        (key, None) => mirror.remove(&key),
    };
}

async fn snapshot(store: &Store, prefix: &str) -> BTreeMap<String, String> {
    let listing = store.list(prefix).await.unwrap();
    listing.kvs.into_iter().map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned())).collect()
}

async fn watcher_sees_every_put_and_delete_in_order(b: Backend) {
    let s = &b.store;
    s.put("w/old", "x").await.unwrap();
    let start = s.list("w/").await.unwrap();
    let mut watch = s.watch("w/", start.revision).await.unwrap();

    // Paced: each change is awaited before the next, so every backend must report each one.
    let steps: [(&str, Option<&str>); 5] =
        [("w/a", Some("1")), ("w/b", Some("1")), ("w/a", Some("2")), ("w/b", None), ("w/old", None)];
    let mut last_revision = start.revision;
    for (key, value) in steps {
        match value {
            Some(v) => s.put(key, v).await.unwrap(),
            None => s.delete(key).await.unwrap(),
        };
        let event = next(&mut watch, key).await;
        assert_eq!(brief(&event), (key.to_string(), value.map(String::from)));
        assert!(event.revision() > last_revision, "revisions increase: {event:?} after {last_revision}");
        last_revision = event.revision();
    }

    // A burst: history backends report every step in order; Consul may merge changes of one key
    // between two answers, but what it reports is in order and ends in the true state.
    let burst: [(&str, Option<&str>); 6] =
        [("w/c", Some("1")), ("w/d", Some("1")), ("w/c", Some("2")), ("w/d", None), ("w/e", Some("1")), ("w/a", None)];
    for (key, value) in burst {
        match value {
            Some(v) => s.put(key, v).await.unwrap(),
            None => s.delete(key).await.unwrap(),
        };
    }
    let truth = snapshot(s, "w/").await;
    let mut mirror: BTreeMap<String, String> =
        [("w/a", "2")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut seen = Vec::new();
    while mirror != truth {
        let event = next(&mut watch, "the burst").await;
        assert!(event.revision() >= last_revision, "revisions never go back: {event:?}");
        last_revision = event.revision();
        apply(&mut mirror, &event);
        seen.push(brief(&event));
    }
    if s.backend().keeps_history() {
        let expected: Vec<_> = burst.iter().map(|(k, v)| (k.to_string(), v.map(String::from))).collect();
        assert_eq!(seen, expected);
    }
}

async fn watch_resumed_from_an_old_revision_misses_nothing(b: Backend) {
    let s = &b.store;
    let start = s.list("r/").await.unwrap();
    let mut watch = s.watch("r/", start.revision).await.unwrap();
    s.put("r/1", "a").await.unwrap();
    let first = next(&mut watch, "r/1").await;
    drop(watch);

    // Changes while nobody watches.
    s.put("r/2", "b").await.unwrap();
    s.delete("r/1").await.unwrap();
    s.put("r/3", "c").await.unwrap();

    let mut mirror = BTreeMap::from([("r/1".to_string(), "a".to_string())]);
    let truth = snapshot(s, "r/").await;
    let mut watch = s.watch("r/", first.revision()).await.unwrap();
    let mut seen = Vec::new();
    while mirror != truth {
        match next(&mut watch, "the changes made while away").await {
            WatchEvent::Compacted { .. } => {
                assert!(
                    !s.backend().keeps_history(),
                    "{} keeps history: it must replay, not compact",
                    s.backend().name()
                );
                let listing = s.list("r/").await.unwrap();
                mirror = listing
                    .kvs
                    .iter()
                    .map(|kv| (kv.key.clone(), String::from_utf8_lossy(&kv.value).into_owned()))
                    .collect();
                watch = s.watch("r/", listing.revision).await.unwrap();
            }
            event => {
                apply(&mut mirror, &event);
                seen.push(brief(&event));
            }
        }
    }
    if s.backend().keeps_history() {
        let expected = vec![("r/2".into(), Some("b".into())), ("r/1".into(), None), ("r/3".into(), Some("c".into()))];
        assert_eq!(seen, expected);
    }
    // And the resumed watch keeps going.
    s.put("r/4", "d").await.unwrap();
    assert_eq!(brief(&next(&mut watch, "r/4").await), ("r/4".into(), Some("d".into())));
}

async fn compare_and_swap_with_a_stale_revision_fails(b: Backend) {
    let s = &b.store;
    let created = s.compare_and_swap("cas/k", 0, "v1").await.unwrap();
    assert!(created.succeeded);
    assert!(!s.compare_and_swap("cas/k", 0, "again").await.unwrap().succeeded, "create-if-absent twice");
    let r1 = s.get("cas/k").await.unwrap().unwrap().mod_revision;
    let swapped = s.compare_and_swap("cas/k", r1, "v2").await.unwrap();
    assert!(swapped.succeeded);
    let stale = s.compare_and_swap("cas/k", r1, "v3").await.unwrap();
    assert!(!stale.succeeded, "a swap on a stale revision must fail");
    let kv = s.get("cas/k").await.unwrap().unwrap();
    assert_eq!(kv.value, b"v2");
    assert_eq!(kv.mod_revision, swapped.revision);
}

async fn a_transaction_with_one_failing_compare_applies_nothing(b: Backend) {
    let s = &b.store;
    let ra = s.put("t/a", "1").await.unwrap();
    s.put("t/b", "1").await.unwrap();
    let txn = |b_rev| Txn {
        compares: vec![Compare::revision("t/a", ra), Compare::revision("t/b", b_rev)],
        ops: vec![
            Op::put("t/a", "2"),
            Op::Delete { key: "t/b".into() },
            Op::put("t/c", "new"),
            Op::DeletePrefix { prefix: "t/z".into() },
        ],
    };
    assert!(!s.txn(txn(ra.saturating_sub(1))).await.unwrap().succeeded);
    assert_eq!(snapshot(s, "t/").await, BTreeMap::from([("t/a".into(), "1".into()), ("t/b".into(), "1".into())]));
    let rb = s.get("t/b").await.unwrap().unwrap().mod_revision;
    assert!(s.txn(txn(rb)).await.unwrap().succeeded);
    assert_eq!(snapshot(s, "t/").await, BTreeMap::from([("t/a".into(), "2".into()), ("t/c".into(), "new".into())]));
}

async fn get_list_and_delete_a_prefix(b: Backend) {
    let s = &b.store;
    assert_eq!(s.get("g/missing").await.unwrap(), None);
    for k in ["g/x/1", "g/x/2", "g/y"] {
        s.put(k, k).await.unwrap();
    }
    let listing = s.list("g/x/").await.unwrap();
    assert_eq!(listing.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["g/x/1", "g/x/2"]);
    assert!(listing.revision >= listing.kvs.iter().map(|kv| kv.mod_revision).max().unwrap());
    s.delete_prefix("g/x/").await.unwrap();
    assert_eq!(snapshot(s, "g/").await.keys().collect::<Vec<_>>(), ["g/y"]);
}

const LEASE_TTL: Duration = Duration::from_secs(2);

async fn lease_keys_vanish_within_ttl_after_keep_alive_stops(b: Backend) {
    let s = &b.store;
    let lease = s.lease(LEASE_TTL).await.unwrap();
    s.put_with_lease("l/k", "held", &lease).await.unwrap();
    // Kept alive, the key outlives several TTLs.
    let listing = s.list("l/").await.unwrap();
    let mut watch = s.watch("l/", listing.revision).await.unwrap();
    if let Ok(event) = tokio::time::timeout(LEASE_TTL * 2, watch.next()).await {
        panic!("a kept-alive lease must not expire; got {event:?}");
    }
    assert!(s.get("l/k").await.unwrap().is_some());

    // The holder stops refreshing, as a crashed replica would.
    lease.abandon();
    let stopped = Instant::now();
    let event = tokio::time::timeout(LEASE_TTL + Duration::from_secs(3), watch.next())
        .await
        .expect("the key must vanish")
        .unwrap();
    assert_eq!(brief(&event), ("l/k".into(), None));
    assert!(stopped.elapsed() <= LEASE_TTL + Duration::from_secs(1), "vanished after {:?}", stopped.elapsed());
}

async fn a_dropped_lease_releases_its_keys_at_once(b: Backend) {
    let s = &b.store;
    let lease = s.lease(Duration::from_secs(30)).await.unwrap();
    s.put_with_lease("d/k", "v", &lease).await.unwrap();
    drop(lease);
    support::eventually("the key of a dropped lease disappears", Duration::from_secs(3), || async {
        s.get("d/k").await.unwrap().is_none()
    })
    .await;
}

async fn two_contenders_never_hold_one_lock_at_once(b: Backend) {
    let s = &b.store;
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for id in 0..3 {
        let (s, holders) = (s.clone(), holders.clone());
        tasks.push(tokio::spawn(async move {
            let lease = s.lease(Duration::from_secs(10)).await.unwrap();
            for _ in 0..3 {
                let guard = s.lock("locks/one", &format!("holder-{id}"), &lease).await.unwrap();
                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                assert!(guard.is_held().await.unwrap());
                tokio::task::yield_now().await;
                holders.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("lock round finished").unwrap();
    }
}

async fn a_write_fenced_by_a_lost_lock_fails(b: Backend) {
    let s = &b.store;
    let paused = s.lease(LEASE_TTL).await.unwrap();
    let old = s.lock("locks/cert", "a", &paused).await.unwrap();
    assert!(old.fenced(vec![Op::put("certs/x", "from a")]).await.unwrap().succeeded);

    // A pauses long enough for its lease to expire; B takes the lock.
    paused.abandon();
    let lease = s.lease(Duration::from_secs(10)).await.unwrap();
    let new = tokio::time::timeout(LEASE_TTL + Duration::from_secs(3), s.lock("locks/cert", "b", &lease))
        .await
        .expect("the lock is free once the old lease expires")
        .unwrap();
    assert!(new.fence() > old.fence());
    assert!(new.fenced(vec![Op::put("certs/x", "from b")]).await.unwrap().succeeded);

    // A wakes up and writes, conditioned on its old fence: refused.
    assert!(!old.fenced(vec![Op::put("certs/x", "stale from a")]).await.unwrap().succeeded);
    assert!(!old.is_held().await.unwrap());
    assert_eq!(s.get("certs/x").await.unwrap().unwrap().value, b"from b");
    assert!(s.try_lock("locks/cert", "c", &lease).await.unwrap().is_none(), "held by b");
}

async fn a_writes_revision_is_the_one_its_watch_event_carries_while_others_write(b: Backend) {
    let s = &b.store;
    let start = s.list("rv/").await.unwrap();
    let mut watch = s.watch("rv/", start.revision).await.unwrap();
    // Another writer moves the store's revision on all along (bounded: 2,000 writes at most).
    let noisy = b.store.clone();
    let noise = tokio::spawn(async move {
        for i in 0..2_000u32 {
            noisy.put("noise/k", i.to_string()).await.unwrap();
        }
    });
    for _ in 0..5 {
        let put = s.put("rv/a", "1").await.unwrap();
        assert_eq!(next(&mut watch, "the put").await.revision(), put, "a put's revision");
        let deleted = s.delete("rv/a").await.unwrap();
        assert_eq!(next(&mut watch, "the delete").await.revision(), deleted, "a delete's revision");
        s.put("rv/b", "1").await.unwrap();
        next(&mut watch, "the second put").await;
        let cleared = s.delete_prefix("rv/").await.unwrap();
        assert_eq!(next(&mut watch, "the prefix delete").await.revision(), cleared, "a prefix delete's revision");
    }
    noise.abort();
}

async fn an_oversized_value_gives_a_clear_error(b: Backend) {
    let s = &b.store;
    let limit = s.backend().max_value_bytes();
    s.put("big/at-limit", vec![b'x'; limit]).await.expect("a value of exactly the limit is accepted");
    match s.put("big/over", vec![b'x'; limit + 1]).await {
        Err(err @ StoreError::ValueTooLarge { .. }) => {
            let text = err.to_string();
            assert!(text.contains("big/over") && text.contains(&limit.to_string()), "{text}");
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(s.get("big/over").await.unwrap(), None);
}

async fn a_put_inside_a_prefix_deleted_in_the_same_transaction_is_refused(b: Backend) {
    let s = &b.store;
    s.put("p/old", "1").await.unwrap();
    let txn = Txn { compares: vec![], ops: vec![Op::DeletePrefix { prefix: "p/".into() }, Op::put("p/new", "2")] };
    match s.txn(txn).await {
        Err(err @ StoreError::Rejected { .. }) => assert!(err.to_string().contains("p/new"), "{err}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(snapshot(s, "p/").await, BTreeMap::from([("p/old".into(), "1".into())]));
}

/// etcd forgets history on compaction; a watch from before it must say so.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_reports_compacted_history() {
    let server = support::Etcd::start().await;
    let spec = server.spec();
    let s = store::open(&spec).await.unwrap();
    let old = s.put("c/k", "1").await.unwrap();
    s.put("c/k", "2").await.unwrap();
    let latest = s.put("c/k", "3").await.unwrap();
    let mut client = etcd_client::Client::connect([server.endpoint.as_str()], None).await.unwrap();
    client.compact(latest as i64, None).await.unwrap();
    let mut watch = s.watch("c/", old).await.unwrap();
    assert!(matches!(next(&mut watch, "compaction").await, WatchEvent::Compacted { .. }));
}

/// A Consul snapshot restore sends indexes backwards; the watch starts over and reports the
/// restored state.
#[tokio::test(flavor = "multi_thread")]
async fn consul_watch_follows_a_snapshot_restore() {
    let server = support::Consul::start().await;
    let s = store::open(&server.spec()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("kv.snap");
    let consul = |verb: &str| {
        let status = std::process::Command::new("consul")
            .args(["snapshot", verb, &format!("-http-addr={}", server.endpoint)])
            .arg(&snap)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "consul snapshot {verb}");
    };
    s.put("s/a", "1").await.unwrap();
    consul("save");
    s.put("s/b", "2").await.unwrap();
    s.put("s/a", "changed").await.unwrap();

    let listing = s.list("s/").await.unwrap();
    let mut mirror: BTreeMap<String, String> =
        listing.kvs.iter().map(|kv| (kv.key.clone(), String::from_utf8_lossy(&kv.value).into_owned())).collect();
    let mut watch = s.watch("s/", listing.revision).await.unwrap();
    consul("restore");
    let restored = BTreeMap::from([("s/a".to_string(), "1".to_string())]);
    while mirror != restored {
        apply(&mut mirror, &next(&mut watch, "the restored state").await);
    }
    // And it keeps following changes after the restore.
    s.put("s/c", "3").await.unwrap();
    loop {
        let event = next(&mut watch, "a change after the restore").await;
        if brief(&event) == ("s/c".into(), Some("3".into())) {
            break;
        }
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod embedded { $( #[tokio::test(flavor = "multi_thread")] async fn $test() { super::$test(super::embedded().await).await } )* }
        mod etcd { $( #[tokio::test(flavor = "multi_thread")] async fn $test() { super::$test(super::etcd().await).await } )* }
        mod consul { $( #[tokio::test(flavor = "multi_thread")] async fn $test() { super::$test(super::consul().await).await } )* }
    };
}

conformance!(
    watcher_sees_every_put_and_delete_in_order,
    watch_resumed_from_an_old_revision_misses_nothing,
    compare_and_swap_with_a_stale_revision_fails,
    a_transaction_with_one_failing_compare_applies_nothing,
    get_list_and_delete_a_prefix,
    lease_keys_vanish_within_ttl_after_keep_alive_stops,
    a_dropped_lease_releases_its_keys_at_once,
    two_contenders_never_hold_one_lock_at_once,
    a_write_fenced_by_a_lost_lock_fails,
    an_oversized_value_gives_a_clear_error,
    a_writes_revision_is_the_one_its_watch_event_carries_while_others_write,
    a_put_inside_a_prefix_deleted_in_the_same_transaction_is_refused,
);
