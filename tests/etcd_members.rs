//! A replica on a real three-member etcd cluster whose members hang (SIGSTOP: the sockets stay
//! open, nothing is answered): it starts as fast with a hung first member as with a dead one
//! (and gives that member requests again once it answers),
//! when the member carrying its watch hangs, changes still reach it within seconds; and a
//! member cut off from its leader is left (etcd's `require_leader`).

mod support;

use std::time::{Duration, Instant};

use pylon::control::store::{self, Store};
use support::{etcd_cluster::EtcdCluster, free_port, get_host, replica::Replica, upstream::Upstream};

fn flags(endpoints: &[String]) -> Vec<String> {
    vec!["--etcd".into(), format!("--etcd.endpoint={}", endpoints.join(","))]
}

/// Routes `Host(host)` to `app` through `store`, retrying while the cluster elects a leader
/// (the frozen member may have been it).
async fn route(store: &Store, host: &str, app: &Upstream) {
    let router = format!("traefik/http/routers/{host}");
    let pairs = [
        (format!("{router}/rule"), format!("Host(`{host}`)")),
        (format!("{router}/service"), "app".to_string()),
        ("traefik/http/services/app/loadbalancer/servers/0/url".to_string(), app.url()),
    ];
    let start = Instant::now();
    for (key, value) in pairs {
        while let Err(err) = store.put(&key, value.clone()).await {
            assert!(start.elapsed() < Duration::from_secs(10), "cannot write {key}: {err}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How long until `replica` routes `host` to the upstream, failing after `limit`.
async fn routed_within(replica: &Replica, host: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if get_host(&replica.web("/"), host).await.status == 200 {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{host} not routed within {limit:?}:\n{}", replica.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_first_member_delays_start_no_more_than_a_dead_one() {
    let cluster = EtcdCluster::start().await;
    // A follower: freezing the leader would stall the whole cluster for an election.
    let first = cluster.follower().await;
    let store = store::open(&cluster.spec_without(first)).await.unwrap();
    let app = Upstream::start("app").await;
    route(&store, "a.example", &app).await;
    let endpoints = cluster.endpoints_from(first);

    let dead = [vec![format!("127.0.0.1:{}", free_port())], endpoints[1..].to_vec()].concat();
    let started = Instant::now();
    let with_dead = Replica::start(&flags(&dead), "").await;
    let dead_took = started.elapsed();
    routed_within(&with_dead, "a.example", Duration::from_secs(2)).await;

    cluster.freeze(first);
    let started = Instant::now();
    let with_hung = Replica::start(&flags(&endpoints), "").await;
    let hung_took = started.elapsed();
    routed_within(&with_hung, "a.example", Duration::from_secs(2)).await;
    eprintln!("start with the first member dead: {dead_took:?}; hung: {hung_took:?}");
    assert!(
        hung_took < dead_took + Duration::from_secs(1),
        "with the first member hung the replica took {hung_took:?} to start, with it dead {dead_took:?}"
    );
    assert!(with_hung.log().contains("did not answer at start"), "the hung member is named:\n{}", with_hung.log());

    // Once it answers again, it is given requests again (probed every 10 s).
    cluster.thaw(first);
    let thawed = Instant::now();
    while !with_hung.log().contains("answers again") {
        assert!(thawed.elapsed() < Duration::from_secs(15), "the member was never readmitted:\n{}", with_hung.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_member_carrying_the_watch_hangs_changes_arrive_within_seconds() {
    let cluster = EtcdCluster::start().await;
    // The watch starts on the first member listed; a follower, so that the cluster stays up.
    let watched = cluster.follower().await;
    let replica = Replica::start(&flags(&cluster.endpoints_from(watched)), "").await;
    let app = Upstream::start("app").await;
    let store = store::open(&cluster.spec_without(watched)).await.unwrap();
    route(&store, "before.example", &app).await;
    routed_within(&replica, "before.example", Duration::from_secs(2)).await;

    let metrics = support::get(&format!("http://{}/metrics", cluster.members[watched].endpoint)).await.unwrap().1;
    let watchers = metrics.lines().find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "));
    assert!(watchers.is_some_and(|n| n.trim() != "0"), "the watch is on the first member listed: {watchers:?}");

    cluster.freeze(watched);
    let hung = Instant::now();
    route(&store, "after.example", &app).await;
    let written = hung.elapsed();
    routed_within(&replica, "after.example", Duration::from_secs(8)).await;
    let took = hung.elapsed();
    eprintln!("written {written:?} and routed {took:?} after the member carrying the watch hung");
    // Probed after 1 s of silence, left after 3 s: HTTP/2 keepalive alone took 10-15 s.
    assert!(took < Duration::from_secs(5), "the change took {took:?} to arrive");
    assert!(replica.log().contains("answered nothing"), "the move is logged:\n{}", replica.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_lost_its_leader_is_left_by_the_watch() {
    let cluster = EtcdCluster::start().await;
    let watched = cluster.follower().await;
    let replica = Replica::start(&flags(&cluster.endpoints_from(watched)), "").await;
    let app = Upstream::start("app").await;
    let store = store::open(&cluster.spec_without(watched)).await.unwrap();
    route(&store, "before.example", &app).await;
    routed_within(&replica, "before.example", Duration::from_secs(2)).await;

    // The watched member is cut off from the other two: it still answers, but has no leader,
    // and would serve a watch that never sees another change.
    let others: Vec<usize> = (0..3).filter(|i| *i != watched).collect();
    for &i in &others {
        cluster.freeze(i);
    }
    let cut = Instant::now();
    while !replica.log().contains("no leader") {
        assert!(cut.elapsed() < Duration::from_secs(8), "the watch stayed on a leaderless member:\n{}", replica.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the watch left the leaderless member after {:?}", cut.elapsed());
    for &i in &others {
        cluster.thaw(i);
    }
    route(&store, "after.example", &app).await;
    routed_within(&replica, "after.example", Duration::from_secs(8)).await;
}
