//! A Traefik v3 `traefik.yml` as its users bring it: two certificate resolvers (HTTP-01 and
//! TLS-ALPN-01) against a real Pebble, routers in real etcd naming each, three replicas started
//! with Traefik v3's flag forms; the file stored by `storeconfig`, or read from `--configfile`.

mod support;

use std::{path::Path, process::Child, time::Duration};

use support::{
    eventually, free_port, get,
    pebble::{Options, Pebble},
    pylon, pylon_output,
    tls::fetch,
    Etcd,
};

/// The v3 file, as a user would write it; Pebble's directory and CA are the only test parts.
fn traefik_yml(pebble: &Pebble) -> String {
    format!(
        "\
entryPoints:
  web:
    address: ':80'
  websecure:
    address: ':443'
    http:
      tls: {{}}
certificatesResolvers:
  le:
    acme:
      email: ops@pylon.test
      caServer: {directory}
      caCertificates: ['{ca}']
      leaseTTL: 5s
      httpChallenge:
        entryPoint: web
  alpn:
    acme:
      email: ops@pylon.test
      caServer: {directory}
      caCertificates: ['{ca}']
      leaseTTL: 5s
      tlsChallenge: {{}}
ping: {{}}
log:
  level: INFO
",
        directory = pebble.directory,
        ca = pebble.api_ca.display()
    )
}

struct V3Replica {
    child: Child,
    websecure: u16,
    log: std::path::PathBuf,
}

impl Drop for V3Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A replica started the way a v3 user starts Traefik: only `--providers.etcd.*` and
/// `--entryPoints.*` flags (each replica on its own loopback ports), plus `extra`.
async fn start(dir: &Path, etcd: &Etcd, (web, websecure): (u16, u16), extra: &[String]) -> V3Replica {
    let admin = free_port();
    let log = dir.join(format!("pylon-{websecure}.log"));
    let child = pylon()
        .arg(format!("--providers.etcd.endpoints={}", etcd.endpoint))
        .arg("--providers.etcd.rootKey=traefik")
        .arg(format!("--entryPoints.web.address=127.0.0.1:{web}"))
        .arg(format!("--entryPoints.websecure.address=127.0.0.1:{websecure}"))
        .arg(format!("--entryPoints.traefik.address=127.0.0.1:{admin}"))
        .args(extra)
        .current_dir(dir)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let replica = V3Replica { child, websecure, log };
    let ping = format!("http://127.0.0.1:{admin}/ping");
    eventually("the replica answers /ping", Duration::from_secs(20), || async {
        matches!(get(&ping).await, Ok((200, _)))
    })
    .await;
    replica
}

/// Routers in etcd, one per resolver.
async fn routers(store: &pylon::control::store::Store) {
    for (key, value) in [
        ("traefik/http/routers/viahttp/rule", "Host(`http01.pylon.test`)"),
        ("traefik/http/routers/viahttp/service", "app"),
        ("traefik/http/routers/viahttp/tls/certResolver", "le"),
        ("traefik/http/routers/viaalpn/rule", "Host(`alpn.pylon.test`)"),
        ("traefik/http/routers/viaalpn/service", "app"),
        ("traefik/http/routers/viaalpn/tls/certResolver", "alpn"),
        ("traefik/http/services/app/loadBalancer/servers/0/url", "http://127.0.0.1:9"),
    ] {
        store.put(key, value.as_bytes().to_vec()).await.unwrap();
    }
}

/// Three replicas on one etcd: Pebble validates HTTP-01 at B's plain port and TLS-ALPN-01 at
/// C's TLS port; each router's certificate comes through its own resolver, one order each, and
/// every replica serves both.
async fn two_resolvers_three_replicas(from_configfile: bool) {
    let etcd = Etcd::start().await;
    let (b_web, c_tls) = (free_port(), free_port());
    let pebble = Pebble::start(Options { http_port: b_web, tls_port: Some(c_tls), ..Options::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traefik.yml");
    std::fs::write(&file, traefik_yml(&pebble)).unwrap();
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    routers(&store).await;

    let mut extra = Vec::new();
    if from_configfile {
        extra.push(format!("--configfile={}", file.display()));
    } else {
        let config = format!("--configfile={}", file.display());
        let stores =
            [format!("--providers.etcd.endpoints={}", etcd.endpoint), "--providers.etcd.rootKey=traefik".into()];
        let mut args = vec!["storeconfig", config.as_str()];
        args.extend(stores.iter().map(String::as_str));
        let (code, out, err) = pylon_output(&args, dir.path());
        assert_eq!(code, 0, "storeconfig: {out}{err}");
        assert!(err.lines().all(|l| !l.contains("WARN")), "a v3 file stores without warnings:\n{err}");
    }
    let a = start(dir.path(), &etcd, (free_port(), free_port()), &extra).await;
    let b = start(dir.path(), &etcd, (b_web, free_port()), &extra).await;
    let c = start(dir.path(), &etcd, (free_port(), c_tls), &extra).await;

    let root = pebble.issuing_root().await;
    for name in ["http01.pylon.test", "alpn.pylon.test"] {
        let key = format!("traefik/acme/certs/{name}");
        eventually(&format!("{name}'s certificate is stored"), Duration::from_secs(60), || async {
            store.get(&key).await.unwrap().is_some()
        })
        .await;
        for replica in [&a, &b, &c] {
            eventually(&format!("{name} is served on :{}", replica.websecure), Duration::from_secs(1), || async {
                fetch(replica.websecure, name, &root).await.is_ok()
            })
            .await;
        }
    }
    let logs: Vec<String> = [&a, &b, &c].iter().map(|r| std::fs::read_to_string(&r.log).unwrap()).collect();
    let issued = logs.iter().flat_map(|l| l.lines()).filter(|l| l.contains("event=\"certificate.issued\"")).count();
    assert_eq!(issued, 2, "one order per router:\n{}", logs.join("\n"));
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    // Each certificate was validated by its resolver's challenge, at the replica Pebble reached.
    let pebble_log = pebble.log();
    let over_http: Vec<&str> = pebble_log.lines().filter(|l| l.contains("Attempting to validate w/ HTTP")).collect();
    assert!(over_http.iter().all(|l| l.contains("http://http01.pylon.test:")), "{pebble_log}");
    assert!(!over_http.is_empty(), "{pebble_log}");
    assert!(logs[2].contains("answered a TLS-ALPN-01 validation"), "C answered TLS-ALPN-01:\n{}", logs[2]);
    assert!(!logs[0].contains("answered a TLS-ALPN-01") && !logs[1].contains("answered a TLS-ALPN-01"));
    let accounts = store.list("traefik/acme/account/").await.unwrap();
    assert_eq!(accounts.kvs.len(), 1, "one account per CA, shared by both resolvers");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v3_file_through_storeconfig_two_resolvers_three_replicas() {
    two_resolvers_three_replicas(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v3_file_from_configfile_two_resolvers_three_replicas() {
    two_resolvers_three_replicas(true).await;
}

/// Traefik v3 takes its whole static configuration from flags and `TRAEFIK_*` variables; so does
/// Pylon (as `PYLON_*`), here on the embedded store with the file provider.
#[tokio::test(flavor = "multi_thread")]
async fn flags_and_pylon_variables_alone_configure_a_replica() {
    let upstream = support::upstream::Upstream::start("flagged").await;
    let dir = tempfile::tempdir().unwrap();
    let dynamic = dir.path().join("dynamic.yml");
    let routes = format!(
        "http:\n  routers:\n    r: {{ rule: Host(`flags.pylon.test`), service: s }}\n  services:\n    s:\n      loadBalancer:\n        servers: [{{ url: '{}' }}]\n",
        upstream.url()
    );
    std::fs::write(&dynamic, routes).unwrap();
    let (web, admin) = (free_port(), free_port());
    let log = dir.path().join("pylon.log");
    let child = pylon()
        .arg(format!("--entryPoints.web.address=127.0.0.1:{web}"))
        .arg(format!("--providers.file.filename={}", dynamic.display()))
        .arg("--ping=true")
        .env("PYLON_ENTRYPOINTS_TRAEFIK_ADDRESS", format!("127.0.0.1:{admin}"))
        .env("PYLON_LOG_LEVEL", "DEBUG")
        .arg(format!("--datadir={}", dir.path().join("data").display()))
        .current_dir(dir.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let replica = V3Replica { child, websecure: 0, log };
    let ping = format!("http://127.0.0.1:{admin}/ping");
    eventually("the replica answers /ping", Duration::from_secs(20), || async {
        matches!(get(&ping).await, Ok((200, _)))
    })
    .await;
    let reply = support::get_host(&format!("http://127.0.0.1:{web}/"), "flags.pylon.test").await;
    assert_eq!(reply.status, 200, "{}", std::fs::read_to_string(&replica.log).unwrap());
    assert!(reply.body.starts_with("flagged"));
    let logged = std::fs::read_to_string(&replica.log).unwrap();
    assert!(logged.contains("DEBUG"), "PYLON_LOG_LEVEL is log.level");
}
