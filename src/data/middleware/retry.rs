//! `retry`: a request is sent again, up to `attempts` tries in all, when the service could not
//! be reached before anything was sent (every server refused the connection, or none was up),
//! or, with
//! `status`, when the answer's status is in those ranges (for idempotent methods only, unless
//! `retryNonIdempotentMethod`). Tries are `initialInterval` apart, the wait growing towards
//! twice that; `timeout` stops retrying once that long has passed. A request is only retried when
//! its body can be sent again: none, or one of known length up to `maxRequestBodyBytes`
//! (2 MiB), read first; an upgrade is never retried. The last try's answer is the client's.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use super::{errors::Codes, Next};
use crate::{
    config::Checker,
    data::proxy::{body::RequestBody, ProxyBody, ProxyError},
};

/// Marks an answer for a request that never reached a server: it is safe to send again.
#[derive(Clone, Copy, Debug)]
pub struct NotSent;

/// How long a body retried on its status may take to arrive whole.
const READ_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    attempts: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::duration")]
    initialinterval: Option<Duration>,
    #[serde(default, deserialize_with = "crate::config::lenient::duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    maxrequestbodybytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    status: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    disableretryonnetworkerror: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    retrynonidempotentmethod: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub attempts: u32,
    pub initial_interval: Duration,
    pub timeout: Option<Duration>,
    pub max_body: u64,
    pub status: Vec<Codes>,
    pub on_network_error: bool,
    pub non_idempotent: bool,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let attempts = match raw.attempts.map(u32::try_from) {
        Some(Ok(n)) if n > 0 => n,
        _ => {
            c.error(&format!("{path}.attempts"), "retry needs attempts, the number of tries in all (at least 1)");
            return None;
        }
    };
    let status = super::errors::statuses(raw.status.unwrap_or_default(), &format!("{path}.status"), c)?;
    let on_network_error = !raw.disableretryonnetworkerror.unwrap_or(false);
    if !on_network_error && status.is_empty() {
        c.error(path, "with disableRetryOnNetworkError, retry needs status codes to retry on");
        return None;
    }
    Some(Spec {
        attempts,
        initial_interval: raw.initialinterval.unwrap_or_default(),
        timeout: raw.timeout.filter(|t| !t.is_zero()),
        max_body: raw.maxrequestbodybytes.unwrap_or(2 * 1024 * 1024),
        status,
        on_network_error,
        non_idempotent: raw.retrynonidempotentmethod.unwrap_or(false),
    })
}

pub struct Retry {
    spec: Spec,
}

impl Retry {
    pub fn new(spec: &Spec) -> Retry {
        Retry { spec: spec.clone() }
    }

    pub async fn handle(&self, req: super::Req, mut next: Next<'_>) -> Response<ProxyBody> {
        let spec = &self.spec;
        let idempotent = !matches!(*req.method(), Method::POST | Method::PATCH) && req.method().as_str() != "LOCK";
        let on_status = !spec.status.is_empty() && (idempotent || spec.non_idempotent);
        if spec.attempts == 1 || req.headers().contains_key(header::UPGRADE) {
            return next.run(req).await;
        }
        let (head, body) = req.into_parts();
        let bytes = match body {
            RequestBody::Read(bytes) => bytes,
            RequestBody::Client(body) if body.is_end_stream() => Bytes::new(),
            RequestBody::Client(body) if on_status && body.size_hint().upper().is_some_and(|n| n <= spec.max_body) => {
                let limit = usize::try_from(spec.max_body).unwrap_or(usize::MAX);
                match tokio::time::timeout(READ_WITHIN, Limited::new(body, limit).collect()).await {
                    Ok(Ok(read)) => read.to_bytes(),
                    Ok(Err(e)) => return ProxyError::BadRequest(format!("reading the body: {e}")).response(),
                    Err(_) => {
                        return ProxyError::RequestTimeout(format!("the body took longer than {READ_WITHIN:?}"))
                            .response()
                    }
                }
            }
            // A body that streams once: sent once.
            body => return next.run(Request::from_parts(head, body)).await,
        };
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let req = Request::from_parts(head.clone(), RequestBody::Read(bytes.clone()));
            let response = next.again(req).await;
            let out_of_time = spec.timeout.is_some_and(|t| started.elapsed() >= t);
            let not_sent = spec.on_network_error && response.extensions().get::<NotSent>().is_some();
            let status = response.status().as_u16();
            let by_status = on_status && spec.status.iter().any(|(low, high)| (*low..=*high).contains(&status));
            if attempt == spec.attempts || out_of_time || !(not_sent || by_status) {
                return response;
            }
            drop(response);
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// The wait before retry `n` (1 for the first): `initialInterval`, growing by
    /// 2^(1/(attempts-1)) each time, as Traefik's backoff does (without its jitter).
    fn backoff(&self, n: u32) -> Duration {
        let steps = f64::from(self.spec.attempts.saturating_sub(1).max(1));
        self.spec.initial_interval.mul_f64(2f64.powf(f64::from(n - 1) / steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_to_twice_the_initial_interval() {
        let spec = Spec {
            attempts: 5,
            initial_interval: Duration::from_millis(100),
            timeout: None,
            max_body: 0,
            status: vec![],
            on_network_error: true,
            non_idempotent: false,
        };
        let r = Retry::new(&spec);
        assert_eq!(r.backoff(1), Duration::from_millis(100));
        // Traefik's multiplier is 2^(1/(attempts-1)): the fourth retry waits 2^(3/4) times as long.
        assert_eq!(r.backoff(4).as_millis(), 168);
    }
}
