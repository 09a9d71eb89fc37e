//! `circuitBreaker`: while its `expression` holds over the recent responses (a 10 s window of
//! statuses and a 60 s one of latencies), requests are answered with `responseCode` (503) and
//! its reason, not forwarded. The breaker checks at most once per `checkPeriod` (100 ms);
//! once tripped it stays open for `fallbackDuration` (10 s), then lets a growing share of
//! requests through for `recoveryDuration` (10 s; from none to half), tripping again if the
//! expression holds, and closes after that. State is per router and per replica.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

use http::{Response, StatusCode};
use serde::Deserialize;

use super::{
    expression::{Expr, Metrics},
    Next,
};
use crate::{config::Checker, data::proxy::ProxyBody};

#[derive(Debug, Default, Deserialize)]
struct Raw {
    expression: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::duration")]
    checkperiod: Option<Duration>,
    #[serde(default, deserialize_with = "crate::config::lenient::duration")]
    fallbackduration: Option<Duration>,
    #[serde(default, deserialize_with = "crate::config::lenient::duration")]
    recoveryduration: Option<Duration>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    responsecode: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub text: String,
    pub expression: Expr,
    pub check_period: Duration,
    pub fallback: Duration,
    pub recovery: Duration,
    pub response_code: StatusCode,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let text = raw.expression.unwrap_or_default();
    let expression = match Expr::parse(&text) {
        Ok(e) => e,
        Err(why) => {
            c.error(&format!("{path}.expression"), format!("expression {}: {why}", crate::limits::shown(&text)));
            return None;
        }
    };
    let positive =
        |d: Option<Duration>, default: u64| d.filter(|d| !d.is_zero()).unwrap_or(Duration::from_millis(default));
    let response_code = match raw.responsecode.map(|c| u16::try_from(c).ok().and_then(|c| StatusCode::from_u16(c).ok()))
    {
        None => StatusCode::SERVICE_UNAVAILABLE,
        Some(Some(code)) => code,
        Some(None) => {
            c.error(&format!("{path}.responsecode"), "responseCode is not an HTTP status code");
            return None;
        }
    };
    Some(Spec {
        text,
        expression,
        check_period: positive(raw.checkperiod, 100),
        fallback: positive(raw.fallbackduration, 10_000),
        recovery: positive(raw.recoveryduration, 10_000),
        response_code,
    })
}

/// Ten one-second buckets of response counts.
#[derive(Default)]
struct Window {
    /// `(second, status counts)`, oldest first.
    buckets: VecDeque<(u64, Vec<(u16, u32)>)>,
    /// `(when, latency)`, oldest first, at most [`MAX_LATENCIES`] over 60 s.
    latencies: VecDeque<(Instant, Duration)>,
}

const MAX_LATENCIES: usize = 8192;

impl Window {
    fn record(&mut self, second: u64, status: u16, at: Instant, latency: Duration) {
        while self.buckets.front().is_some_and(|(s, _)| *s + 10 <= second) {
            self.buckets.pop_front();
        }
        if self.buckets.back().is_none_or(|(s, _)| *s != second) {
            self.buckets.push_back((second, Vec::new()));
        }
        if let Some((_, counts)) = self.buckets.back_mut() {
            match counts.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => counts.push((status, 1)),
            }
        }
        while self.latencies.front().is_some_and(|(t, _)| at.duration_since(*t) > Duration::from_secs(60))
            || self.latencies.len() >= MAX_LATENCIES
        {
            self.latencies.pop_front();
        }
        self.latencies.push_back((at, latency));
    }

    fn count(&self, matches: impl Fn(u16) -> bool) -> u64 {
        self.buckets.iter().flat_map(|(_, c)| c).filter(|(s, _)| matches(*s)).map(|(_, n)| u64::from(*n)).sum()
    }
}

impl Metrics for Window {
    fn network_error_ratio(&self) -> f64 {
        let total = self.count(|_| true);
        if total == 0 {
            0.0
        } else {
            self.count(|s| s == 502 || s == 504) as f64 / total as f64
        }
    }

    fn response_code_ratio(&self, a: u16, b: u16, c: u16, d: u16) -> f64 {
        let below = self.count(|s| (c..d).contains(&s));
        if below == 0 {
            0.0
        } else {
            self.count(|s| (a..b).contains(&s)) as f64 / below as f64
        }
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        let mut all: Vec<Duration> = self.latencies.iter().map(|(_, l)| *l).collect();
        if all.is_empty() {
            return 0.0;
        }
        all.sort_unstable();
        let i = ((quantile / 100.0) * all.len() as f64).ceil() as usize;
        all[i.clamp(1, all.len()) - 1].as_millis() as f64
    }
}

enum Phase {
    Closed,
    Open { until: Instant },
    Recovering { start: Instant, until: Instant, allowed: u64, denied: u64 },
}

struct State {
    phase: Phase,
    window: Window,
    next_check: Option<Instant>,
}

pub struct CircuitBreaker {
    spec: Spec,
    started: Instant,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(spec: &Spec) -> CircuitBreaker {
        let state = State { phase: Phase::Closed, window: Window::default(), next_check: None };
        CircuitBreaker { spec: spec.clone(), started: Instant::now(), state: Mutex::new(state) }
    }

    pub async fn handle(&self, req: super::Req, next: Next<'_>) -> Response<ProxyBody> {
        let start = Instant::now();
        if !self.admit(start) {
            let code = self.spec.response_code;
            return crate::data::proxy::error::text(code, code.canonical_reason().unwrap_or(""));
        }
        let response = next.run(req).await;
        self.observe(response.status().as_u16(), start, Instant::now());
        response
    }

    /// Whether a request arriving at `now` goes on.
    fn admit(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Open { until } = state.phase {
            if now < until {
                return false;
            }
            state.phase = Phase::Recovering { start: now, until: now + self.spec.recovery, allowed: 0, denied: 0 };
        }
        match &mut state.phase {
            Phase::Closed | Phase::Open { .. } => true,
            Phase::Recovering { until, .. } if now > *until => {
                state.phase = Phase::Closed;
                true
            }
            Phase::Recovering { start, allowed, denied, .. } => {
                let target = 0.5 * now.duration_since(*start).as_secs_f64() / self.spec.recovery.as_secs_f64();
                let share = (*allowed + 1) as f64 / (*allowed + *denied + 1) as f64;
                if share < target {
                    *allowed += 1;
                    true
                } else {
                    *denied += 1;
                    false
                }
            }
        }
    }

    /// Records a response and, at most once per `checkPeriod`, trips when the expression holds.
    fn observe(&self, status: u16, started: Instant, now: Instant) {
        let second = now.duration_since(self.started).as_secs();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.window.record(second, status, now, now.duration_since(started));
        if state.next_check.is_some_and(|at| now < at) {
            return;
        }
        state.next_check = Some(now + self.spec.check_period);
        if self.spec.expression.eval(&state.window) {
            tracing::warn!(expression = %self.spec.text, "circuit breaker tripped");
            state.phase = Phase::Open { until: now + self.spec.fallback };
            state.window = Window::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(expression: &str) -> CircuitBreaker {
        CircuitBreaker::new(&Spec {
            text: expression.into(),
            expression: Expr::parse(expression).unwrap(),
            check_period: Duration::from_millis(100),
            fallback: Duration::from_secs(10),
            recovery: Duration::from_secs(10),
            response_code: StatusCode::SERVICE_UNAVAILABLE,
        })
    }

    #[test]
    fn it_trips_on_errors_waits_then_recovers_gradually() {
        let cb = breaker("NetworkErrorRatio() > 0.5");
        let t0 = Instant::now();
        assert!(cb.admit(t0));
        cb.observe(200, t0, t0);
        assert!(cb.admit(t0 + Duration::from_millis(150)));
        cb.observe(502, t0, t0 + Duration::from_millis(150));
        cb.observe(502, t0, t0 + Duration::from_millis(160));
        assert!(cb.admit(t0 + Duration::from_millis(200)), "checked at most once per checkPeriod");
        cb.observe(502, t0, t0 + Duration::from_millis(300));
        assert!(!cb.admit(t0 + Duration::from_secs(5)), "open for fallbackDuration");
        let recovery = t0 + Duration::from_millis(300) + Duration::from_secs(10);
        assert!(!cb.admit(recovery), "the first request of recovery is refused");
        let let_through = (1..100).filter(|i| cb.admit(recovery + Duration::from_millis(100 * i))).count();
        assert!((10..=50).contains(&let_through), "{let_through} of 99 let through while recovering");
        assert!(cb.admit(recovery + Duration::from_secs(11)), "closed after recoveryDuration");
    }

    #[test]
    fn ratios_and_latencies_come_from_the_window() {
        let mut w = Window::default();
        let t0 = Instant::now();
        for (i, status) in [200, 200, 500, 502].iter().enumerate() {
            w.record(1, *status, t0, Duration::from_millis(10 * (i as u64 + 1)));
        }
        assert_eq!(w.network_error_ratio(), 0.25);
        assert_eq!(w.response_code_ratio(500, 600, 0, 600), 0.5);
        assert_eq!(w.latency_ms(50.0), 20.0);
        w.record(12, 200, t0, Duration::from_millis(1));
        assert_eq!(w.network_error_ratio(), 0.0, "older than ten seconds");
    }
}
