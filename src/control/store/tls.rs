//! TLS to etcd and Consul: the CA that signs the store's certificate (else the system's roots)
//! and, for stores that verify clients, this replica's certificate and key. Each is a PEM file
//! path or PEM text, read when the store is opened; an unreadable one is an error naming it.

use std::sync::Arc;

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::StoreError;

/// `tls.ca`, `tls.cert`, `tls.key` of `[etcd]`/`[consul]` (v3: `providers.etcd.tls`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// A PEM file's text, or `value` itself when it is PEM text.
pub fn pem(value: &str, what: &str) -> Result<String, StoreError> {
    if value.contains("-----BEGIN") {
        return Ok(value.to_string());
    }
    std::fs::read_to_string(value).map_err(|e| setup(format!("tls.{what} {value}: {e}")))
}

fn setup(detail: String) -> StoreError {
    StoreError::Tls { detail }
}

impl StoreTls {
    /// The CA's PEM, if one is set.
    pub fn ca_pem(&self) -> Result<Option<String>, StoreError> {
        self.ca.as_deref().map(|ca| pem(ca, "ca")).transpose()
    }

    /// The client certificate and key PEMs, if set.
    pub fn identity_pem(&self) -> Result<Option<(String, String)>, StoreError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((pem(cert, "cert")?, pem(key, "key")?))),
            (None, None) => Ok(None),
            _ => Err(setup("tls.cert and tls.key go together".into())),
        }
    }

    /// A rustls client configuration: the CA (else the system's roots), and the identity.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, StoreError> {
        let mut roots = rustls::RootCertStore::empty();
        match self.ca_pem()? {
            Some(ca) => {
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    let cert = cert.map_err(|e| setup(format!("tls.ca: {e}")))?;
                    roots.add(cert).map_err(|e| setup(format!("tls.ca: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(setup("tls.ca holds no certificate".into()));
                }
            }
            None => drop(roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs)),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?
            .with_root_certificates(roots);
        let config = match self.identity_pem()? {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| setup(format!("tls.cert: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| setup(format!("tls.key: {e}")))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| setup(format!("tls.cert/tls.key: {e}")))?
            }
        };
        Ok(config)
    }
}
