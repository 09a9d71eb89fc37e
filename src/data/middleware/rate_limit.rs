//! `rateLimit`: a token bucket per source (the client IP by default), refilled at
//! `average` per `period` and holding at most `burst`, full when a source is first seen. A
//! request that finds a token goes on; one that would get a token within a short delay
//! (half the interval between tokens, at most 500 ms) waits for it and goes on; the others get
//! 429 `Too Many Requests` with `Retry-After` (whole seconds, rounded up) and `X-Retry-In`, and
//! take no token. `average` 0 means no limit. Buckets live in this replica's memory: with N
//! replicas behind a load balancer a client gets up to N times the rate.

use std::{
    collections::{hash_map::RandomState, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{HeaderValue, Request, Response, StatusCode};
use serde::Deserialize;

use super::source::{self, Source};
use crate::{
    config::Checker,
    data::proxy::{Connection, ProxyBody},
};

/// At most this many sources have a bucket; more evict the idle ones (Traefik's bound).
pub const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    average: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::duration")]
    period: Option<Duration>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    burst: Option<u64>,
    sourcecriterion: Option<source::Raw>,
    redis: Option<toml::Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Tokens per second; `None`: no limit.
    pub rate: Option<f64>,
    pub burst: f64,
    pub source: Source,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    if raw.redis.is_some() {
        c.error(
            &format!("{path}.redis"),
            "rateLimit.redis is not implemented: Pylon's buckets are per replica, and a limit meant for the \
             whole cluster would let N replicas through N times over",
        );
        return None;
    }
    let period = raw.period.filter(|p| !p.is_zero()).unwrap_or(Duration::from_secs(1));
    // Bounded so that every duration derived from them fits: a token per day at the slowest.
    let rate = raw.average.filter(|a| *a > 0).map(|a| (a as f64 / period.as_secs_f64()).clamp(1.0 / 86_400.0, 1e9));
    let source =
        source::decode(raw.sourcecriterion, Source::Ip(Default::default()), &format!("{path}.sourcecriterion"), c)?;
    Some(Spec { rate, burst: raw.burst.unwrap_or(1).max(1) as f64, source })
}

/// A request let through, now or after a wait, or the answer of one refused.
pub type Admitted<B> = Result<(Request<B>, Option<Duration>), Box<Response<ProxyBody>>>;

struct Bucket {
    tokens: f64,
    at: Instant,
    /// When an idle bucket may be forgotten (it would be full again by then).
    expires: Instant,
}

pub struct RateLimit {
    spec: Spec,
    /// How long a request may wait for its token instead of being refused.
    max_delay: Duration,
    /// How long an untouched bucket is kept.
    ttl: Duration,
    /// Keyed by a hash of the source, so that a client choosing long sources (a header's
    /// value) cannot make the table large; two sources that collide share a bucket.
    buckets: Mutex<HashMap<u64, Bucket>>,
    keys: RandomState,
}

/// Why a request may not go on yet.
pub enum Verdict {
    Now,
    After(Duration),
    Refused(Duration),
}

impl RateLimit {
    pub fn new(spec: &Spec) -> RateLimit {
        let rate = spec.rate.unwrap_or(f64::INFINITY);
        let max_delay = match rate {
            r if r < 1.0 => Duration::from_millis(500),
            r if r.is_infinite() => Duration::ZERO,
            r => Duration::from_nanos(1_000_000_000 / (2 * (r as u64).clamp(1, 1_000_000_000))),
        };
        let ttl = Duration::from_secs(1 + if rate >= 1.0 { 1 } else { (1.0 / rate) as u64 });
        RateLimit { spec: spec.clone(), max_delay, ttl, buckets: Mutex::new(HashMap::new()), keys: RandomState::new() }
    }

    /// What becomes of a request: on now, on after a wait, or refused (the answer).
    pub fn request<B>(&self, req: Request<B>, conn: Connection) -> Admitted<B> {
        if self.spec.rate.is_none() {
            return Ok((req, None));
        }
        match self.take(self.spec.source.hash_of(&req, conn, &self.keys), Instant::now()) {
            Verdict::Now => Ok((req, None)),
            Verdict::After(delay) => Ok((req, Some(delay))),
            Verdict::Refused(delay) => {
                let mut response = crate::data::proxy::error::text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
                let headers = response.headers_mut();
                headers.insert("retry-after", HeaderValue::from(delay.as_secs_f64().ceil().max(1.0) as u64));
                if let Ok(value) = HeaderValue::from_str(&go_duration(delay)) {
                    headers.insert("x-retry-in", value);
                }
                Err(Box::new(response))
            }
        }
    }

    /// Takes a token from `source`'s bucket at `now`, or says how long until one is there.
    pub fn take(&self, source: u64, now: Instant) -> Verdict {
        let Some(rate) = self.spec.rate else { return Verdict::Now };
        let burst = self.spec.burst;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            evict(&mut buckets, now);
        }
        let bucket = buckets.entry(source).or_insert(Bucket { tokens: burst, at: now, expires: now });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        bucket.expires = now + self.ttl;
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            return Verdict::Now;
        }
        let delay = Duration::try_from_secs_f64(-bucket.tokens / rate).unwrap_or(Duration::from_secs(86_400));
        if delay > self.max_delay {
            bucket.tokens += 1.0;
            return Verdict::Refused(delay);
        }
        Verdict::After(delay)
    }
}

/// Makes room in a full table: the expired buckets go, and if that is not enough, an eighth of
/// the others (their sources start again with a full bucket).
fn evict(buckets: &mut HashMap<u64, Bucket>, now: Instant) {
    buckets.retain(|_, b| b.expires > now);
    // Room for an eighth more either way, so that a flood of sources scans once per 8,192.
    if buckets.len() >= MAX_SOURCES - MAX_SOURCES / 8 {
        let doomed: Vec<u64> = buckets.keys().take(MAX_SOURCES / 8).copied().collect();
        for key in doomed {
            buckets.remove(&key);
        }
    }
}

/// A duration as Go prints it (`1.5s`, `9.998123ms`, `1m0.5s`), as Traefik's `X-Retry-In`.
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let trim = |whole: u128, frac: u128, digits: usize, unit: &str| {
        let frac = format!("{frac:0digits$}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{whole}{unit}")
        } else {
            format!("{whole}.{frac}{unit}")
        }
    };
    match ns {
        0 => "0s".to_string(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => trim(n / 1_000, n % 1_000, 3, "µs"),
        n if n < 1_000_000_000 => trim(n / 1_000_000, n % 1_000_000, 6, "ms"),
        n => {
            let (h, m) = (n / 3_600_000_000_000, n / 60_000_000_000 % 60);
            let s = trim(n / 1_000_000_000 % 60, n % 1_000_000_000, 9, "s");
            match (h, m) {
                (0, 0) => s,
                (0, m) => format!("{m}m{s}"),
                (h, m) => format!("{h}h{m}m{s}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(average: u64, period: u64, burst: u64) -> RateLimit {
        let rate = Some(average as f64 / period as f64);
        RateLimit::new(&Spec { rate, burst: burst as f64, source: Source::Host })
    }

    #[test]
    fn a_bucket_starts_full_and_refills_at_the_rate() {
        let rl = limiter(10, 1, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(matches!(rl.take(1, t0), Verdict::Now), "a full bucket");
        }
        // 10/s: the next token is 100 ms away, beyond the 50 ms a request may wait.
        assert!(matches!(rl.take(1, t0), Verdict::Refused(d) if d == Duration::from_millis(100)));
        assert!(matches!(rl.take(2, t0), Verdict::Now), "another source has its own bucket");
        assert!(
            matches!(rl.take(1, t0 + Duration::from_millis(60)), Verdict::After(d) if d < Duration::from_millis(50))
        );
        assert!(matches!(rl.take(1, t0 + Duration::from_millis(1000)), Verdict::Now));
    }

    #[test]
    fn a_refused_request_takes_no_token() {
        let rl = limiter(1, 1, 1);
        let t0 = Instant::now();
        assert!(matches!(rl.take(1, t0), Verdict::Now));
        for ms in [100, 200, 300] {
            assert!(matches!(rl.take(1, t0 + Duration::from_millis(ms)), Verdict::Refused(_)));
        }
        assert!(matches!(rl.take(1, t0 + Duration::from_millis(1001)), Verdict::Now));
    }

    #[test]
    fn slow_rates_wait_up_to_half_a_second() {
        let rl = limiter(1, 60, 1);
        assert_eq!(rl.max_delay, Duration::from_millis(500));
        assert_eq!(rl.ttl, Duration::from_secs(61));
        assert_eq!(limiter(100, 1, 1).max_delay, Duration::from_millis(5));
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_nanos(9_998_123)), "9.998123ms");
        assert_eq!(go_duration(Duration::from_millis(60_500)), "1m0.5s");
        assert_eq!(go_duration(Duration::from_micros(999)), "999µs");
    }
}
