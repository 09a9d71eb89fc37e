//! When to renew each certificate. When the CA's directory offers ACME Renewal Information
//! (RFC 9773 `renewalInfo`), its suggested window decides: a uniformly random moment in the
//! window, asked again when the CA's `Retry-After` says so. Otherwise, and until the CA has
//! answered, a certificate is renewed when a third of its lifetime remains, moved earlier by up
//! to 5% of the lifetime per name so that certificates issued together do not renew together.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use instant_acme::{Account, CertificateIdentifier};
use rustls_pki_types::{pem::PemObject as _, CertificateDer};

use super::{progress::rand_unit, record::CertRecord};
use crate::der;

/// CA lookups per scheduling pass, so a large store does not burst.
const LOOKUPS_PER_PASS: usize = 8;
/// Bounds on how often the CA is asked again about one certificate.
const MIN_RECHECK: Duration = Duration::from_secs(60);
const MAX_RECHECK: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
pub struct Renewals {
    /// `Some(false)` once the CA said it has no renewal information.
    supported: Option<bool>,
    windows: HashMap<String, Window>,
}

struct Window {
    /// The notAfter of the certificate the window is for (a renewed one needs a new window).
    not_after: i64,
    renew_at: i64,
    next_check: Instant,
}

impl Renewals {
    /// Unix seconds at which `record` should be renewed.
    pub fn renew_at(&self, record: &CertRecord) -> i64 {
        let window = self.windows.get(&record.main).filter(|w| w.not_after == record.not_after);
        window.map_or_else(|| fallback(record), |w| w.renew_at)
    }

    /// Asks the CA for the windows it has not answered yet or wants asked again.
    pub async fn refresh(&mut self, account: &Account, certs: &BTreeMap<String, CertRecord>) {
        if self.supported == Some(false) {
            return;
        }
        self.windows.retain(|main, _| certs.contains_key(main));
        let now = Instant::now();
        let due: Vec<(&String, &CertRecord, CertificateIdentifier)> = certs
            .iter()
            .filter(|(main, record)| {
                self.windows.get(*main).is_none_or(|w| w.not_after != record.not_after || now >= w.next_check)
            })
            .filter_map(|(main, record)| Some((main, record, identifier(record)?)))
            .take(LOOKUPS_PER_PASS)
            .collect();
        for (main, record, id) in due {
            let (renew_at, recheck) = match account.renewal_info(&id).await {
                Ok((info, retry_after)) => {
                    self.supported = Some(true);
                    let (start, end) =
                        (info.suggested_window.start.unix_timestamp(), info.suggested_window.end.unix_timestamp());
                    let at = start + ((end - start).max(0) as f64 * rand_unit()) as i64;
                    tracing::debug!(domain = %main, start, end, at, "ACME renewal window");
                    (at, retry_after)
                }
                Err(instant_acme::Error::Unsupported(_)) => {
                    tracing::info!("the ACME directory offers no renewal information; renewing at 2/3 of lifetime");
                    self.supported = Some(false);
                    return;
                }
                Err(err) => {
                    tracing::debug!(domain = %main, "ACME renewal information: {err}");
                    (fallback(record), Duration::from_secs(3600))
                }
            };
            let next_check = Instant::now() + recheck.clamp(MIN_RECHECK, MAX_RECHECK);
            self.windows.insert(main.clone(), Window { not_after: record.not_after, renew_at, next_check });
        }
    }
}

/// A third of the lifetime before expiry, minus a per-name spread of up to 5% of it.
fn fallback(record: &CertRecord) -> i64 {
    let lifetime = (record.not_after - record.not_before).max(0);
    let spread = record.main.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) % 1000;
    record.renew_at() - lifetime * 5 / 100 * spread as i64 / 1000
}

/// The certificate's RFC 9773 identifier (`base64url(AKI).base64url(serial)`).
fn identifier(record: &CertRecord) -> Option<CertificateIdentifier<'static>> {
    let leaf = CertificateDer::from_pem_slice(record.chain.as_bytes()).ok()?;
    let (key_id, serial) = der::renewal_parts(&leaf)?;
    Some(CertificateIdentifier::new(key_id.as_slice().into(), serial.as_slice().into()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(main: &str, not_before: i64, not_after: i64) -> CertRecord {
        CertRecord {
            main: main.into(),
            names: vec![main.into()],
            chain: String::new(),
            key: String::new(),
            not_before,
            not_after,
            issuer: String::new(),
            ca: String::new(),
            on_demand: false,
        }
    }

    #[test]
    fn without_a_window_renewal_is_at_two_thirds_spread_earlier_by_name() {
        let renewals = Renewals::default();
        let lifetime = 90 * 86_400;
        let mut times = Vec::new();
        for name in ["a.example", "b.example", "c.example", "shop.example"] {
            let r = record(name, 0, lifetime);
            let at = renewals.renew_at(&r);
            assert!(at <= r.renew_at() && at >= r.renew_at() - lifetime / 20, "{name}: {at}");
            assert_eq!(at, renewals.renew_at(&r), "the same name renews at the same time on every replica");
            times.push(at);
        }
        times.dedup();
        assert!(times.len() > 1, "names issued together do not all renew together");
        // Six-day certificates: renewal two days before expiry, give or take the spread.
        let six_days = record("a.example", 0, 6 * 86_400);
        assert!(renewals.renew_at(&six_days) >= 4 * 86_400 - 6 * 86_400 / 20);
    }

    #[test]
    fn a_window_applies_only_to_the_certificate_it_was_given_for() {
        let mut renewals = Renewals::default();
        let old = record("a.example", 0, 1_000);
        renewals
            .windows
            .insert("a.example".into(), Window { not_after: old.not_after, renew_at: 500, next_check: Instant::now() });
        assert_eq!(renewals.renew_at(&old), 500);
        let renewed = record("a.example", 900, 1_900);
        assert_eq!(renewals.renew_at(&renewed), fallback(&renewed));
    }
}
