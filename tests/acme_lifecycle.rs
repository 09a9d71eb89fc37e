//! The life of a certificate in the cluster, against a real Pebble: renewal of short-lived
//! certificates by one replica without a failed request, the operator's `pylon acme`
//! commands, and private keys sealed at rest.

mod support;

use std::time::{Duration, Instant};

use support::{
    eventually, free_port,
    pebble::{Options, Pebble},
    pylon,
    replica::Replica,
    tls::fetch,
    upstream::Upstream,
    Etcd,
};

const NAME: &str = "r.pylon.test";
const DOMAIN: &str = "[[acme.domains]]\nmain = \"r.pylon.test\"";

#[tokio::test(flavor = "multi_thread")]
async fn short_certificates_are_renewed_once_by_one_replica_without_a_failed_request() {
    let etcd = Etcd::start().await;
    let web = free_port();
    let pebble = Pebble::start(Options { http_port: web, validity: Some(24), ..Options::default() }).await;
    let flags = etcd.flags();
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let app = Upstream::start("app").await;
    store.put("traefik/http/routers/r/rule", format!("Host(`{NAME}`)")).await.unwrap();
    store.put("traefik/http/routers/r/service", "app").await.unwrap();
    store.put("traefik/http/services/app/loadbalancer/servers/0/url", app.url()).await.unwrap();
    let section = pebble.acme_section(DOMAIN);
    let replicas = [
        Replica::start_with_web(&flags, &section, web).await,
        Replica::start(&flags, &section).await,
        Replica::start(&flags, &section).await,
    ];
    let root = pebble.issuing_root().await;
    eventually("all three serve the first certificate", Duration::from_secs(60), || async {
        for r in &replicas {
            if fetch(r.websecure, NAME, &root).await.is_err() {
                return false;
            }
        }
        true
    })
    .await;
    let first = fetch(replicas[0].websecure, NAME, &root).await.unwrap().leaf;

    // Requests to all three replicas, one after another, until each serves a new certificate.
    let (mut requests, mut renewed) = (0, [false; 3]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !renewed.iter().all(|r| *r) {
        assert!(Instant::now() < deadline, "renewed within 30 s: {renewed:?}");
        for (i, r) in replicas.iter().enumerate() {
            let served =
                fetch(r.websecure, NAME, &root).await.unwrap_or_else(|e| panic!("request {requests} failed: {e}"));
            assert_eq!(served.status, 200, "request {requests}");
            renewed[i] |= served.leaf != first;
            requests += 1;
        }
    }
    assert!(requests > 30, "the load ran through the change ({requests} requests)");
    assert_eq!(pebble.orders(), 2, "one first order and one renewal");
    let renewals: usize = replicas.iter().map(|r| r.events("certificate.renewed").len()).sum();
    assert_eq!(renewals, 1, "one replica renewed");
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_list_renew_and_revoke_through_the_cluster() {
    let etcd = Etcd::start().await;
    let web = free_port();
    let pebble = Pebble::start(Options { http_port: web, ..Options::default() }).await;
    let replica = Replica::start_with_web(&etcd.flags(), &pebble.acme_section(DOMAIN), web).await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let cert_key = format!("traefik/acme/certs/{NAME}");
    eventually("the certificate is stored", Duration::from_secs(60), || async {
        store.get(&cert_key).await.unwrap().is_some()
    })
    .await;
    let root = pebble.issuing_root().await;
    let acme = |args: &[&str]| {
        let out = pylon()
            .arg(format!("--configfile={}", replica.config.display()))
            .args(etcd.flags())
            .arg("acme")
            .args(args)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };

    let (ok, list) = acme(&["list"]);
    assert!(ok, "{list}");
    let row = list.lines().find(|l| l.starts_with(NAME)).unwrap_or_else(|| panic!("{NAME} listed:\n{list}"));
    assert!(row.contains("Pebble Intermediate CA") && row.contains(" ok") && row.contains("d "), "{list}");

    let before = fetch(replica.websecure, NAME, &root).await.unwrap().leaf;
    let (ok, renewed) = acme(&["renew", NAME]);
    assert!(ok && renewed.contains(&format!("renewed {NAME}")), "{renewed}");
    eventually("the renewed certificate is served", Duration::from_secs(1), || async {
        fetch(replica.websecure, NAME, &root).await.is_ok_and(|s| s.leaf != before)
    })
    .await;
    assert_eq!(pebble.orders(), 2);

    let current = fetch(replica.websecure, NAME, &root).await.unwrap().leaf;
    assert_eq!(pebble.status_of(&current).await, "Valid");
    let (ok, revoked) = acme(&["revoke", NAME]);
    assert!(ok && revoked.contains(&format!("revoked {NAME}")), "{revoked}");
    assert_eq!(pebble.status_of(&current).await, "Revoked", "Pebble revoked it");
    eventually("the replica orders a new certificate", Duration::from_secs(30), || async { pebble.orders() == 3 })
        .await;
    eventually("and stores it", Duration::from_secs(30), || async { store.get(&cert_key).await.unwrap().is_some() })
        .await;

    let (ok, missing) = acme(&["renew", "nothing.pylon.test"]);
    assert!(!ok && missing.contains("no stored certificate covers nothing.pylon.test"), "{missing}");
}

#[tokio::test(flavor = "multi_thread")]
async fn private_keys_are_sealed_at_rest_and_a_replica_with_the_wrong_key_says_so() {
    let etcd = Etcd::start().await;
    let web = free_port();
    let pebble = Pebble::start(Options { http_port: web, ..Options::default() }).await;
    let flags = etcd.flags();
    let right = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let wrong = "k2:HxwdHh8AAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRo=";
    let a = Replica::start_with(&flags, &pebble.acme_section(DOMAIN), web, &[("PYLON_STORAGE_KEY", right)]).await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let cert_key = format!("traefik/acme/certs/{NAME}");
    eventually("the certificate is stored", Duration::from_secs(60), || async {
        store.get(&cert_key).await.unwrap().is_some()
    })
    .await;
    let value = String::from_utf8(store.get(&cert_key).await.unwrap().unwrap().value).unwrap();
    let record: serde_json::Value = serde_json::from_str(&value).unwrap();
    assert!(record["key"].as_str().unwrap().starts_with("pylon-sealed:v1:k1:"), "{value}");
    assert!(!value.contains("PRIVATE KEY"), "no PEM key at rest");
    let account = store.list("traefik/acme/account/").await.unwrap().kvs.remove(0);
    assert!(String::from_utf8_lossy(&account.value).starts_with("pylon-sealed:v1:k1:"), "the account is sealed too");

    let root = pebble.issuing_root().await;
    assert!(fetch(a.websecure, NAME, &root).await.is_ok(), "the replica with the key serves it");
    let b =
        Replica::start_with(&flags, &pebble.acme_section(DOMAIN), free_port(), &[("PYLON_STORAGE_KEY", wrong)]).await;
    eventually("B reports the key it cannot open", Duration::from_secs(5), || async {
        b.log().contains(&format!("certificate not served: KV key {cert_key}"))
    })
    .await;
    assert!(b.log().contains("k1"), "B names the missing key id:\n{}", b.log());
    assert!(fetch(b.websecure, NAME, &root).await.is_err(), "B cannot serve what it cannot open");
    assert!(fetch(a.websecure, NAME, &root).await.is_ok(), "A still serves it");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pebble.orders(), 1, "B never orders over the stored certificate");
}
