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

use super::{der, progress::rand_unit, record::CertRecord};

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
    /// The certificate the window is for (a renewed certificate needs a new window).
    id: String,
    renew_at: i64,
    next_check: Instant,
}

impl Renewals {
    /// Unix seconds at which `record` should be renewed.
    pub fn renew_at(&self, record: &CertRecord) -> i64 {
        let id = identifier(record).map(|id| id.to_string());
        let window = self.windows.get(&record.main).filter(|w| Some(&w.id) == id.as_ref());
        window.map_or_else(|| fallback(record), |w| w.renew_at)
    }

    /// Asks the CA for the windows it has not answered yet or wants asked again.
    pub async fn refresh(&mut self, account: &Account, certs: &BTreeMap<String, CertRecord>) {
        if self.supported == Some(false) {
            return;
        }
        self.windows.retain(|main, _| certs.contains_key(main));
        let due: Vec<(&String, CertificateIdentifier)> = certs
            .iter()
            .filter_map(|(main, record)| Some((main, identifier(record)?)))
            .filter(|(main, id)| {
                self.windows.get(*main).is_none_or(|w| w.id != id.to_string() || Instant::now() >= w.next_check)
            })
            .take(LOOKUPS_PER_PASS)
            .collect();
        for (main, parsed) in due {
            let id = parsed.to_string();
            let (renew_at, recheck) = match account.renewal_info(&parsed).await {
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
                    (fallback(&certs[main]), Duration::from_secs(3600))
                }
            };
            let next_check = Instant::now() + recheck.clamp(MIN_RECHECK, MAX_RECHECK);
            self.windows.insert(main.clone(), Window { id, renew_at, next_check });
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
