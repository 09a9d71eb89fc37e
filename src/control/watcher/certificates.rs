//! The dynamic configuration's certificates (`tls/certificates`, the default certificate, and
//! the file provider's), loaded into the certificate store, a bad one rejected alone.

use super::Watcher;
use crate::{
    data::tls::{self, Source},
    dynamic::DynamicConfig,
};

impl Watcher {
    /// Loads `tls/certificates` and the default certificate, counting them; a bad one is
    /// rejected alone.
    pub(super) fn load_certificates(&self, config: &DynamicConfig) -> (usize, Vec<String>) {
        let mut rejected = Vec::new();
        let mut loaded = Vec::new();
        for (i, cert) in config.certificates.iter().enumerate() {
            match tls::Loaded::from_pem(&cert.cert, &cert.key) {
                Ok(l) => loaded.push(l),
                Err(err) => rejected.push(format!("KV key {}/tls/certificates/{i}: {err}", self.keys.prefix())),
            }
        }
        let count = loaded.len();
        self.certs.replace(Source::Dynamic, loaded);
        let default = config.default_certificate.as_ref().and_then(|cert| {
            tls::Loaded::from_pem(&cert.cert, &cert.key)
                .map_err(|err| {
                    let key = format!("{}/tls/stores/default/defaultcertificate", self.keys.prefix());
                    rejected.push(format!("KV key {key}: {err}"));
                })
                .ok()
        });
        self.certs.set_default(default);
        (count, rejected)
    }
}
