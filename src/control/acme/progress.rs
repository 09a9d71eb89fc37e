//! What the store records about orders besides certificates, so that every replica (and
//! `pylon acme list`) sees the same state:
//! - `acme/orders/<main>`: an order in progress and its holder, written when the order starts
//!   and deleted when it ends either way. Its lock is lease-bound but this marker is not, so a
//!   replica that takes the lock and still finds it knows the previous holder died mid-order.
//! - `acme/failures/<main>`: the cluster's count of consecutive failed orders for a name, when
//!   the next may start, and the last error. Backoff is shared: three replicas do not make three
//!   times as many attempts against the CA's limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Backoff stops doubling here.
pub const BACKOFF_CAP: Duration = Duration::from_secs(6 * 3600);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrderMarker {
    pub holder: String,
    /// Unix seconds.
    pub started: i64,
    /// Where the order is: `ordering` (the CA is asked for an order), `validating` (the
    /// challenges are answered and the CA validates), `finalizing` (the certificate is being
    /// issued). Informational, for the cluster view.
    #[serde(default)]
    pub stage: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailureRecord {
    /// Consecutive failed orders.
    pub failures: u32,
    /// Unix milliseconds: no replica starts another order for the name before.
    pub retry_at_ms: i64,
    /// The last error (ACME problem type and detail when the CA sent one).
    pub error: String,
    pub holder: String,
}

impl FailureRecord {
    /// The record after one more failure, given the previous one.
    pub fn next(previous: Option<&FailureRecord>, base: Duration, error: String, holder: &str) -> FailureRecord {
        let failures = previous.map_or(1, |p| p.failures + 1);
        let delay = backoff(failures, base);
        let retry_at_ms = now_ms() + delay.as_millis() as i64;
        FailureRecord { failures, retry_at_ms, error, holder: holder.to_string() }
    }

    /// How long until the next attempt may start (zero when it may start now).
    pub fn wait(&self) -> Duration {
        Duration::from_millis((self.retry_at_ms - now_ms()).max(0) as u64)
    }
}

/// Decodes one of these JSON values, naming the KV key when it is unreadable.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("KV key {key}: unreadable: {e}"))
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("progress records serialize")
}

/// The delay before attempt `failures + 1`: `base` doubled per failure after the first, capped
/// at [`BACKOFF_CAP`], with ±20% jitter so that replicas and names do not retry in step. With
/// the default two minutes a failing name gets five attempts in its first hour at most, Let's
/// Encrypt's limit of failed validations per name per hour.
pub fn backoff(failures: u32, base: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let delay = base.saturating_mul(1 << exponent).min(BACKOFF_CAP);
    delay.mul_f64(0.8 + 0.4 * rand_unit())
}

/// A uniform random number in [0, 1].
pub fn rand_unit() -> f64 {
    let mut bytes = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let base = Duration::from_secs(120);
        for failures in 1..=6 {
            let nominal = base * (1 << (failures - 1));
            let delay = backoff(failures, base);
            assert!(delay >= nominal.mul_f64(0.8) && delay <= nominal.mul_f64(1.2), "{failures}: {delay:?}");
        }
        assert!(backoff(40, base) <= BACKOFF_CAP.mul_f64(1.2));
        // Five attempts fit in the first hour at most: 0, 2, 6, 14, 30 minutes (nominal).
        let first_hour: f64 = (1..=4).map(|n| backoff(n, base).as_secs_f64()).sum();
        assert!(first_hour > 1_400.0, "{first_hour}");
    }

    #[test]
    fn failures_count_up_and_name_their_key_when_unreadable() {
        let first = FailureRecord::next(None, Duration::from_secs(60), "boom".into(), "a");
        let second = FailureRecord::next(Some(&first), Duration::from_secs(60), "boom".into(), "b");
        assert_eq!((first.failures, second.failures), (1, 2));
        assert!(second.wait() > Duration::from_secs(90));
        let back: FailureRecord = decode("k", &encode(&second)).unwrap();
        assert_eq!(back, second);
        let err = decode::<FailureRecord>("traefik/acme/failures/x", b"[").unwrap_err();
        assert!(err.starts_with("KV key traefik/acme/failures/x: unreadable"), "{err}");
    }
}
