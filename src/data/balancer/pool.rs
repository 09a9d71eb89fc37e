//! A load balancer over servers: smooth weighted round robin (nginx's algorithm, lock-free,
//! see [`super::schedule`]) among the servers that are up. A server is down while its active health check fails, or for a moment
//! after a connection to it failed (passive). A pool lives across reloads as long as its
//! configuration is unchanged, so its health state survives them.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use http::Uri;

use super::schedule::Schedule;
use crate::dynamic::LoadBalancer;

/// How long a server that refused a connection stays out of rotation.
pub const PASSIVE_DOWN: Duration = Duration::from_secs(5);

pub struct Upstream {
    pub url: Uri,
    pub weight: u32,
    /// The sticky cookie's value for this server: a hash of its URL.
    pub cookie_value: String,
    /// False while the active health check fails.
    healthy: AtomicBool,
    /// Milliseconds since the pool's epoch until which the server is out after a failure.
    down_until: AtomicU64,
}

pub struct Pool {
    pub service: String,
    /// The service's name, as the metrics count it.
    pub metric: crate::data::metrics::Name,
    /// The configuration this pool was built from; a reload reuses the pool when it is equal.
    pub spec: LoadBalancer,
    pub servers: Vec<Upstream>,
    /// Smooth weighted round robin over the servers' weights.
    schedule: Schedule,
    epoch: Instant,
}

impl Pool {
    pub fn new(service: &str, spec: LoadBalancer) -> Pool {
        let servers: Vec<Upstream> = spec
            .servers
            .iter()
            .map(|s| Upstream {
                url: s.url.clone(),
                weight: s.weight,
                cookie_value: format!("{:016x}", fnv1a(s.url.to_string().as_bytes())),
                healthy: AtomicBool::new(true),
                down_until: AtomicU64::new(0),
            })
            .collect();
        let schedule = Schedule::new(&servers.iter().map(|s| s.weight).collect::<Vec<_>>());
        let metric = crate::data::metrics::intern(crate::data::metrics::names::Kind::Service, service);
        Pool { service: service.to_string(), metric, spec, servers, schedule, epoch: Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether server `i` may take requests now.
    pub fn is_up(&self, i: usize) -> bool {
        self.up_at(i, self.now_ms())
    }

    fn up_at(&self, i: usize, now_ms: u64) -> bool {
        let s = &self.servers[i];
        s.weight > 0 && s.healthy.load(Ordering::Relaxed) && s.down_until.load(Ordering::Relaxed) <= now_ms
    }

    /// Whether server `i` passes its active health check (true without one).
    pub fn is_healthy(&self, i: usize) -> bool {
        self.servers[i].healthy.load(Ordering::Relaxed)
    }

    pub fn has_up(&self) -> bool {
        (0..self.servers.len()).any(|i| self.is_up(i))
    }

    /// The next server by smooth weighted round robin among those up and not in `exclude`.
    pub fn next(&self, exclude: &[usize]) -> Option<usize> {
        let now = self.now_ms();
        self.schedule.next(|i| self.up_at(i, now) && !exclude.contains(&i))
    }

    /// The server a sticky cookie names, if it is up.
    pub fn by_cookie(&self, value: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.cookie_value == value).filter(|i| self.is_up(*i))
    }

    /// Takes server `i` out of rotation for [`PASSIVE_DOWN`] after a failed connection.
    pub fn mark_failed(&self, i: usize) {
        let until = self.now_ms() + PASSIVE_DOWN.as_millis() as u64;
        self.servers[i].down_until.store(until, Ordering::Relaxed);
    }

    /// Records an active health check's verdict; returns true when it changed.
    pub fn set_healthy(&self, i: usize, healthy: bool) -> bool {
        self.servers[i].healthy.swap(healthy, Ordering::Relaxed) != healthy
    }
}

/// FNV-1a, 64 bits: a stable, cheap hash for cookie values (not a secret).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamic::Server;

    fn pool(weights: &[u32]) -> Pool {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Server { url: format!("http://127.0.0.1:{}", 1000 + i).parse().unwrap(), weight: *w })
            .collect();
        Pool::new(
            "s",
            LoadBalancer { servers, pass_host_header: true, health_check: None, sticky: None, flush_interval: None },
        )
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_by_weight() {
        let p = pool(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| p.next(&[]).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_hold_over_many_picks() {
        let p = pool(&[3, 1]);
        let mut counts = [0; 2];
        for _ in 0..10_000 {
            counts[p.next(&[]).unwrap()] += 1;
        }
        assert_eq!(counts, [7_500, 2_500]);
    }

    #[test]
    fn failed_unhealthy_and_zero_weight_servers_are_skipped() {
        let p = pool(&[1, 1, 0]);
        p.mark_failed(0);
        assert_eq!((0..4).map(|_| p.next(&[]).unwrap()).collect::<Vec<_>>(), [1, 1, 1, 1]);
        assert!(p.set_healthy(1, false));
        assert!(!p.set_healthy(1, false));
        assert_eq!(p.next(&[]), None);
        assert!(!p.has_up());
        p.set_healthy(1, true);
        assert_eq!(p.next(&[1]), None, "excluded by the caller");
    }

    #[test]
    fn a_cookie_names_its_server_only_while_it_is_up() {
        let p = pool(&[1, 1]);
        let value = p.servers[1].cookie_value.clone();
        assert_eq!(p.by_cookie(&value), Some(1));
        p.set_healthy(1, false);
        assert_eq!(p.by_cookie(&value), None);
        assert_eq!(p.by_cookie("nonsense"), None);
    }
}
