//! Request metrics as Traefik's Prometheus families count them (entrypoint, router and service
//! levels), recorded on the request path without a lock or a shared cache line: each worker
//! thread writes its own series ([`shard`]), and a scrape sums them. Names are small numbers
//! ([`names`]) fixed when a table is built; a request's numbers are gathered in a [`meter::Meter`]
//! and written when its response body ends or is dropped.

pub mod meter;
pub mod names;
mod shard;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

pub use names::{intern, Kind, Name};
use shard::{add, Shard};

/// What the static configuration asks to be counted (`metrics.prometheus`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub entry_points: bool,
    pub routers: bool,
    pub services: bool,
    /// Upper bounds of the duration histograms, in seconds, ascending.
    pub buckets: Arc<[f64]>,
}

/// Which family a series belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    EntryPoint,
    Router,
    Service,
    EntryPointTls,
    RouterTls,
    ServiceTls,
    Retries,
    /// `traefik_open_connections`: a gauge.
    OpenConnections,
}

impl Level {
    fn has_histogram(self) -> bool {
        matches!(self, Level::EntryPoint | Level::Router | Level::Service)
    }
}

/// One series' labels, as numbers. `a` and `b` are the status code and the method and protocol
/// (`method << 8 | protocol`) for requests, the TLS version and cipher suite for TLS counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub level: Level,
    /// The entrypoint, router or service.
    pub name: Name,
    /// A router's service.
    pub service: Name,
    pub a: u16,
    pub b: u16,
}

/// The standard methods Traefik names; anything else is `EXTENSION_METHOD`.
pub const METHODS: [&str; 11] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI", "EXTENSION_METHOD"];

/// The `protocol` label's values, by number.
pub const PROTOCOLS: [&str; 5] = ["http", "websocket", "sse", "grpc-web", "grpc"];
pub const GRPC_WEB: u8 = 3;
pub const GRPC: u8 = 4;

/// One finished request at one level.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub code: u16,
    pub method: u8,
    pub protocol: u8,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub elapsed: Duration,
}

/// A series summed over every thread, at scrape time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub count: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub seconds: f64,
    /// Cumulative, one per bucket bound.
    pub buckets: Vec<u64>,
}

impl Totals {
    /// A gauge's value.
    pub fn gauge(&self) -> i64 {
        self.count as i64
    }
}

/// One open connection, counted in `traefik_open_connections` until dropped.
pub struct Open {
    metrics: &'static Metrics,
    entry_point: Name,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.connection(self.entry_point, -1);
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The request metrics of one process: per-thread shards and what is counted.
pub struct Metrics {
    id: u64,
    pub settings: Settings,
    shards: Mutex<Vec<Arc<Shard>>>,
    /// Bumped when a scrape prunes series, so that threads drop the ones they cached.
    epoch: AtomicU64,
}

impl Metrics {
    pub fn new(settings: Settings) -> Metrics {
        Metrics {
            id: NEXT_ID.fetch_add(1, Relaxed),
            settings,
            shards: Mutex::new(Vec::new()),
            epoch: AtomicU64::new(0),
        }
    }

    fn counts(&self, level: Level) -> bool {
        match level {
            // Traefik's open connections are counted whatever the labels settings say.
            Level::OpenConnections => true,
            Level::EntryPoint | Level::EntryPointTls => self.settings.entry_points,
            Level::Router | Level::RouterTls => self.settings.routers,
            Level::Service | Level::ServiceTls | Level::Retries => self.settings.services,
        }
    }

    /// Counts one finished request at `level`.
    pub fn request(&self, level: Level, name: Name, service: Name, sample: &Sample) {
        if !self.counts(level) {
            return;
        }
        let b = u16::from(sample.method) << 8 | u16::from(sample.protocol);
        let key = Key { level, name, service, a: sample.code, b };
        let bucket = self.settings.buckets.iter().position(|&bound| sample.elapsed.as_secs_f64() <= bound);
        self.with_series(key, |series| {
            add(&series.count, 1);
            add(&series.request_bytes, sample.request_bytes);
            add(&series.response_bytes, sample.response_bytes);
            add(&series.nanos, u64::try_from(sample.elapsed.as_nanos()).unwrap_or(u64::MAX));
            if let Some(slot) = bucket.and_then(|i| series.buckets.get(i)) {
                add(slot, 1);
            }
        });
    }

    /// Counts one request over TLS at `level` (`*_requests_tls_total`).
    pub fn tls(&self, level: Level, name: Name, service: Name, version: u16, cipher: u16) {
        if self.counts(level) {
            self.with_series(Key { level, name, service, a: version, b: cipher }, |s| add(&s.count, 1));
        }
    }

    /// Counts one retry of `service`'s requests.
    pub fn retry(&self, service: Name) {
        if self.counts(Level::Retries) {
            let key = Key { level: Level::Retries, name: service, service: Name::NONE, a: 0, b: 0 };
            self.with_series(key, |s| add(&s.count, 1));
        }
    }

    /// A connection opened (`+1`) or closed (`-1`) on `entry_point`.
    pub fn connection(&self, entry_point: Name, delta: i64) {
        if self.counts(Level::OpenConnections) {
            let key = Key { level: Level::OpenConnections, name: entry_point, service: Name::NONE, a: 0, b: 0 };
            self.with_series(key, |s| add(&s.count, delta as u64));
        }
    }

    /// Counts a connection open on `entry_point` until the guard drops.
    pub fn open(&'static self, entry_point: Name) -> Open {
        self.connection(entry_point, 1);
        Open { metrics: self, entry_point }
    }

    /// Every series summed over the threads. Series of routers and services for which `live`
    /// is false are dropped for good (entrypoints' always stay).
    pub fn collect(&self, live: impl Fn(Name) -> bool) -> BTreeMap<Key, Totals> {
        let bounds = self.settings.buckets.len();
        let mut totals: BTreeMap<Key, Totals> = BTreeMap::new();
        let mut pruned = false;
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for shard in shards {
            let mut series = shard.series.lock().unwrap_or_else(|e| e.into_inner());
            series.retain(|key, one| {
                let kept = match key.level {
                    Level::EntryPoint | Level::EntryPointTls | Level::OpenConnections => true,
                    _ => live(key.name) && (key.service == Name::NONE || live(key.service)),
                };
                if !kept {
                    pruned = true;
                    return false;
                }
                let sum =
                    totals.entry(*key).or_insert_with(|| Totals { buckets: vec![0; bounds], ..Totals::default() });
                sum.count = sum.count.wrapping_add(one.count.load(Relaxed));
                sum.request_bytes += one.request_bytes.load(Relaxed);
                sum.response_bytes += one.response_bytes.load(Relaxed);
                sum.seconds += one.nanos.load(Relaxed) as f64 / 1e9;
                let mut running = 0;
                for (total, slot) in sum.buckets.iter_mut().zip(one.buckets.iter()) {
                    running += slot.load(Relaxed);
                    *total += running;
                }
                true
            });
        }
        if pruned {
            self.epoch.fetch_add(1, Relaxed);
        }
        totals
    }
}

/// The method's number in [`METHODS`].
pub fn method(method: &http::Method) -> u8 {
    METHODS[..METHODS.len() - 1].iter().position(|m| *m == method.as_str()).unwrap_or(METHODS.len() - 1) as u8
}

/// The request's `protocol` label, as Traefik tells it: websocket, sse, grpc-web, grpc or http.
pub fn protocol(headers: &http::HeaderMap) -> u8 {
    use http::header;
    let lists = |name: header::HeaderName, value: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(value))
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if lists(header::CONNECTION, "upgrade") && lists(header::UPGRADE, "websocket") {
        1
    } else if lists(header::ACCEPT, "text/event-stream") {
        2
    } else if content_type.starts_with("application/grpc-web") {
        GRPC_WEB
    } else if content_type.starts_with("application/grpc") {
        GRPC
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(Settings {
            entry_points: true,
            routers: true,
            services: true,
            buckets: Arc::from([0.1, 0.3, 1.2, 5.0]),
        }))
    }

    fn sample(code: u16, millis: u64) -> Sample {
        Sample {
            code,
            elapsed: Duration::from_millis(millis),
            request_bytes: 10,
            response_bytes: 100,
            ..Sample::default()
        }
    }

    #[test]
    fn threads_count_apart_and_a_scrape_sums_them() {
        let metrics = metrics();
        let web = intern(Kind::EntryPoint, "metrics-test-web");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        metrics.request(
                            Level::EntryPoint,
                            web,
                            Name::NONE,
                            &sample(200, if i % 10 == 0 { 250 } else { 5 }),
                        );
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let totals = metrics.collect(|_| true);
        let key = Key { level: Level::EntryPoint, name: web, service: Name::NONE, a: 200, b: 0 };
        let t = &totals[&key];
        assert_eq!((t.count, t.request_bytes, t.response_bytes), (4000, 40_000, 400_000));
        assert_eq!(t.buckets, vec![3600, 4000, 4000, 4000], "cumulative: 10% took 250 ms");
        assert!((t.seconds - (3600.0 * 0.005 + 400.0 * 0.25)).abs() < 1e-6);
    }

    #[test]
    fn series_of_removed_routers_are_dropped_and_start_over() {
        let metrics = metrics();
        let (kept, gone, svc) = (
            intern(Kind::Router, "metrics-test-kept"),
            intern(Kind::Router, "metrics-test-gone"),
            intern(Kind::Service, "metrics-test-svc"),
        );
        for router in [kept, gone] {
            metrics.request(Level::Router, router, svc, &sample(200, 1));
        }
        let live = |n: Name| n != gone;
        assert_eq!(metrics.collect(|_| true).len(), 2, "both routers served");
        assert_eq!(metrics.collect(live).len(), 1, "the removed router's series is gone");
        assert_eq!(metrics.collect(|_| true).len(), 1, "for good");
        metrics.request(Level::Router, gone, svc, &sample(200, 1));
        let totals = metrics.collect(|_| true);
        let key = Key { level: Level::Router, name: gone, service: svc, a: 200, b: 0 };
        assert_eq!(totals[&key].count, 1, "a router that comes back starts from zero");
    }

    #[test]
    fn open_connections_go_up_and_down() {
        let metrics = metrics();
        let web = intern(Kind::EntryPoint, "metrics-test-open");
        metrics.connection(web, 1);
        metrics.connection(web, 1);
        metrics.connection(web, -1);
        let key = Key { level: Level::OpenConnections, name: web, service: Name::NONE, a: 0, b: 0 };
        assert_eq!(metrics.collect(|_| true)[&key].gauge(), 1);
    }

    #[test]
    fn methods_and_protocols_get_traefiks_labels() {
        assert_eq!(METHODS[method(&http::Method::PATCH) as usize], "PATCH");
        assert_eq!(METHODS[method(&http::Method::from_bytes(b"BREW").unwrap()) as usize], "EXTENSION_METHOD");
        let headers = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap())).collect::<http::HeaderMap>()
        };
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(PROTOCOLS[protocol(&ws) as usize], "websocket");
        assert_eq!(PROTOCOLS[protocol(&headers(&[("accept", "text/event-stream")])) as usize], "sse");
        assert_eq!(protocol(&headers(&[("content-type", "application/grpc-web+proto")])), GRPC_WEB);
        assert_eq!(protocol(&headers(&[("content-type", "application/grpc")])), GRPC);
        assert_eq!(PROTOCOLS[protocol(&headers(&[("content-type", "text/html")])) as usize], "http");
    }
}
