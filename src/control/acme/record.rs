//! What the store holds for ACME, one value per thing: a certificate at
//! `<prefix>/acme/certs/<main>` (chain, private key, names, validity, issuer) and the account at
//! `<prefix>/acme/account/<CA id>` (its credentials). Private parts are sealed when the replica
//! has storage keys (see [`super::sealed`]). A value that does not decode is reported with its
//! KV key and skipped; it never stops a replica.

use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

use super::sealed::Keyring;
use crate::data::tls::Loaded;
use crate::der;

/// A certificate as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertRecord {
    pub main: String,
    /// Every name the certificate covers, `main` first.
    pub names: Vec<String>,
    /// The PEM chain, leaf first.
    pub chain: String,
    /// The PEM private key, or its sealed form.
    pub key: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub issuer: String,
    /// The ACME directory it came from.
    pub ca: String,
    /// Ordered at a handshake (onDemand): renewed while onDemand is on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("KV key {key}: not a certificate record: {reason}")]
    Decode { key: String, reason: String },
    #[error("KV key {key}: private key: {source}")]
    Sealed { key: String, source: super::sealed::SealError },
    #[error("KV key {key}: {source}")]
    Tls { key: String, source: crate::data::tls::TlsError },
}

impl CertRecord {
    /// A record for a freshly issued chain; the key is sealed for `kv_key`.
    pub fn new(
        main: &str,
        names: Vec<String>,
        chain: String,
        key_pem: &str,
        ca: &str,
        keyring: &Keyring,
        kv_key: &str,
    ) -> Option<CertRecord> {
        let leaf = rustls_pki_types::CertificateDer::from_pem_slice(chain.as_bytes()).ok()?;
        let facts = der::facts(&leaf)?;
        Some(CertRecord {
            main: main.to_string(),
            names,
            chain,
            key: keyring.seal(kv_key, key_pem),
            not_before: facts.not_before,
            not_after: facts.not_after,
            issuer: facts.issuer,
            ca: ca.to_string(),
            on_demand: false,
        })
    }

    pub fn decode(kv_key: &str, value: &[u8]) -> Result<CertRecord, RecordError> {
        serde_json::from_slice(value)
            .map_err(|e| RecordError::Decode { key: kv_key.to_string(), reason: e.to_string() })
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a certificate record serializes")
    }

    /// The certificate ready for the TLS resolver.
    pub fn load(&self, kv_key: &str, keyring: &Keyring) -> Result<Loaded, RecordError> {
        let key_pem = keyring
            .open(kv_key, &self.key)
            .map_err(|source| RecordError::Sealed { key: kv_key.to_string(), source })?;
        let mut loaded = Loaded::from_pem(&self.chain, &key_pem)
            .map_err(|source| RecordError::Tls { key: kv_key.to_string(), source })?;
        loaded.names.clone_from(&self.names);
        Ok(loaded)
    }

    /// Whether the certificate covers every one of `names` and is valid at `now` (Unix seconds).
    pub fn covers(&self, names: &[String], now: i64) -> bool {
        self.not_before <= now && now < self.not_after && names.iter().all(|n| self.names.contains(n))
    }

    /// A third of the lifetime before expiry; see [`super::ari`] for when renewal starts.
    pub fn renew_at(&self) -> i64 {
        self.not_after - (self.not_after - self.not_before) / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_record_round_trips_and_loads_for_its_names() {
        let (chain, key) = issued(&["a.example", "www.a.example"]);
        let keyring = Keyring::default();
        let names = vec!["a.example".to_string(), "www.a.example".to_string()];
        let kv = "traefik/acme/certs/a.example";
        let record = CertRecord::new("a.example", names.clone(), chain, &key, "https://ca/dir", &keyring, kv).unwrap();
        assert_eq!(record.not_after - record.not_before, 90 * 86_400);
        let back = CertRecord::decode(kv, &record.encode()).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.load(kv, &keyring).unwrap().names, names);
        let jan_2 = 1_767_312_000;
        assert!(back.covers(&names[..1], jan_2));
        assert!(!back.covers(&["b.example".to_string()], jan_2));
        assert!(!back.covers(&names, record.not_after));
        assert_eq!(back.renew_at(), record.not_after - 30 * 86_400);
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = CertRecord::decode("traefik/acme/certs/x", b"{not json").unwrap_err();
        assert!(err.to_string().starts_with("KV key traefik/acme/certs/x: not a certificate record"), "{err}");
    }
}
