//! The proxy-test fixture: a store server, a client of it writing Traefik's KV layout, and a
//! replica watching it; helpers that spell routers and services as KV pairs.

use std::time::{Duration, Instant};

use pylon::control::store::{self, Op, Store, Txn};

use super::{get_host, replica::Replica, upstream::Upstream, Consul, Etcd};

/// A store server, a client of it, and a replica watching it.
pub struct Fixture {
    pub store: Store,
    pub replica: Replica,
    /// The `pylon` flags that select the store.
    pub flags: Vec<String>,
    pub server: Box<dyn std::any::Any>,
}

pub async fn on_etcd(extra: &str) -> Fixture {
    let etcd = Etcd::start().await;
    let store = store::open(&etcd.spec()).await.unwrap();
    let replica = Replica::start(&etcd.flags(), extra).await;
    Fixture { store, replica, flags: etcd.flags(), server: Box::new(etcd) }
}

pub async fn on_consul(extra: &str) -> Fixture {
    let consul = Consul::start().await;
    let store = store::open(&consul.spec()).await.unwrap();
    let replica = Replica::start(&consul.flags(), extra).await;
    Fixture { store, replica, flags: consul.flags(), server: Box::new(consul) }
}

impl Fixture {
    /// Writes `pairs` under `traefik/`, in transactions small enough for every backend.
    pub async fn write(&self, pairs: &[(&str, String)]) {
        for chunk in pairs.chunks(60) {
            let ops = chunk.iter().map(|(k, v)| Op::put(format!("traefik/{k}"), v.as_bytes())).collect();
            self.store.txn(Txn { compares: vec![], ops }).await.unwrap();
        }
    }

    pub async fn delete_prefix(&self, prefix: &str) {
        self.store.delete_prefix(&format!("traefik/{prefix}")).await.unwrap();
    }

    /// GETs `path` with `host` until `check` passes, failing after a second.
    pub async fn within_a_second(&self, host: &str, path: &str, what: &str, check: impl Fn(&super::Reply) -> bool) {
        let start = Instant::now();
        loop {
            let reply = get_host(&self.replica.web(path), host).await;
            if check(&reply) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{what}: last answer {} {:?}\n{}",
                reply.status,
                reply.body,
                self.replica.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Fixture {
    /// Starts an upstream named `app`, routes `rule` to it (router and service `app`), and waits
    /// until a request for `host` and `path` reaches it.
    pub async fn serve_app(&self, rule: &str, host: &str, path: &str) -> Upstream {
        let app = Upstream::start("app").await;
        let mut pairs = router("app", rule, "app");
        pairs.extend(servers("app", &[&app]));
        self.write(&pairs).await;
        self.within_a_second(host, path, "the route to app", |r| r.body.starts_with("app ")).await;
        app
    }
}

/// Routes `host` to a fresh upstream through `middlewares` (their KV pairs under
/// `http/middlewares/` in `defs`), and waits until the route answers anything but 404. The
/// router and service are named after the host's first label.
pub async fn routed(f: &Fixture, host: &str, middlewares: &[&str], defs: &[(&str, &str)]) -> Upstream {
    let app = Upstream::start("app").await;
    let name = host.split('.').next().unwrap();
    let mut pairs = router(name, &format!("Host(`{host}`)"), name);
    for (i, m) in middlewares.iter().enumerate() {
        pairs.push((leak(format!("http/routers/{name}/middlewares/{i}")), m.to_string()));
    }
    pairs.extend(defs.iter().map(|(k, v)| (leak(format!("http/middlewares/{k}")), v.to_string())));
    pairs.extend(servers(name, &[&app]));
    f.write(&pairs).await;
    f.within_a_second(host, "/", "the route", |r| r.status != 404).await;
    app
}

/// Sends `method path` to the replica's plain entrypoint with `host` and `headers`.
pub async fn request(f: &Fixture, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> super::Reply {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    super::send(method, &f.replica.web(path), &all).await.unwrap()
}

/// A key built at run time, kept for the test's life so pairs can mix it with literals.
pub fn leak(key: String) -> &'static str {
    Box::leak(key.into_boxed_str())
}

pub fn router(name: &str, rule: &str, service: &str) -> Vec<(&'static str, String)> {
    vec![
        (leak(format!("http/routers/{name}/rule")), rule.to_string()),
        (leak(format!("http/routers/{name}/service")), service.to_string()),
    ]
}

pub fn servers(service: &str, upstreams: &[&Upstream]) -> Vec<(&'static str, String)> {
    upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (leak(format!("http/services/{service}/loadBalancer/servers/{i}/url")), u.url()))
        .collect()
}
