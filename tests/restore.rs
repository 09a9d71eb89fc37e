//! A store restored from a backup under running replicas: etcd from `etcdctl snapshot restore`
//! (its revision goes back, the watch's resume point is in its future), Consul from `consul
//! snapshot restore` (its index goes back). The replicas notice, re-list, and agree with a
//! replica started afterwards: the restore's removals are gone, later writes are served.

mod support;

use std::time::Duration;

use support::{
    eventually,
    fixture::{router, servers, Fixture},
    get_host,
    replica::Replica,
    upstream::Upstream,
    Consul, Etcd,
};

/// Serves `app` for `kept.example`, then writes a router `lost.example` after the backup.
async fn before_the_restore(f: &Fixture, app: &Upstream) {
    let mut pairs = router("kept", "Host(`kept.example`)", "app");
    pairs.extend(servers("app", &[app]));
    f.write(&pairs).await;
    f.within_a_second("kept.example", "/", "the first table", |r| r.status == 200).await;
}

/// After the restore: the router written after the backup is gone, and new writes are served,
/// on the running replica and on a fresh one alike.
async fn after_the_restore(f: &Fixture) {
    let gone = || async { get_host(&f.replica.web("/"), "lost.example").await.status == 404 };
    eventually("the router the restore removed stops answering", Duration::from_secs(10), gone).await;
    f.write(&router("later", "Host(`later.example`)", "app")).await;
    let later = || async { get_host(&f.replica.web("/"), "later.example").await.status == 200 };
    eventually("a router written after the restore is served", Duration::from_secs(10), later).await;
    let fresh = Replica::start(&f.flags, "").await;
    for (host, status) in [("kept.example", 200), ("lost.example", 404), ("later.example", 200)] {
        assert_eq!(get_host(&fresh.web("/"), host).await.status, status, "fresh replica, {host}");
        assert_eq!(get_host(&f.replica.web("/"), host).await.status, status, "running replica, {host}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_restored_from_a_snapshot_is_followed() {
    let mut etcd = Etcd::start().await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let replica = Replica::start(&etcd.flags(), "").await;
    let flags = etcd.flags();
    let app = Upstream::start("app").await;
    let f = Fixture { store, replica, flags, server: Box::new(()) };
    before_the_restore(&f, &app).await;
    let backup = tempfile::tempdir().unwrap();
    let file = backup.path().join("snapshot.db");
    etcd.snapshot(&file);
    f.write(&router("lost", "Host(`lost.example`)", "app")).await;
    f.within_a_second("lost.example", "/", "the router written after the backup", |r| r.status == 200).await;
    etcd.restore(&file).await;
    after_the_restore(&f).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_restored_from_a_snapshot_is_followed() {
    let consul = Consul::start().await;
    let store = pylon::control::store::open(&consul.spec()).await.unwrap();
    let replica = Replica::start(&consul.flags(), "").await;
    let app = Upstream::start("app").await;
    let f = Fixture { store, replica, flags: consul.flags(), server: Box::new(()) };
    before_the_restore(&f, &app).await;
    let backup = tempfile::tempdir().unwrap();
    let file = backup.path().join("backup.snap");
    consul.snapshot("save", &file);
    f.write(&router("lost", "Host(`lost.example`)", "app")).await;
    f.within_a_second("lost.example", "/", "the router written after the backup", |r| r.status == 200).await;
    consul.snapshot("restore", &file);
    after_the_restore(&f).await;
}
