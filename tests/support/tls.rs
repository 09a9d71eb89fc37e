//! TLS for tests: a real client that connects to a loopback port with an SNI, verifies the
//! chain against a given root (Pebble's), sends one HTTP/1.1 request and returns the leaf
//! certificate it was shown and the response status; and a throwaway CA that signs a
//! certificate for given names.

use std::{sync::Arc, time::Duration};

use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub struct Served {
    pub leaf: Vec<u8>,
    pub status: u16,
}

/// `GET /` to `host` on `port`, trusting only `root_pem`; errors say what failed.
pub async fn fetch(port: u16, host: &str, root_pem: &str) -> Result<Served, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
        let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let status =
            text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(format!("no status in {text:?}"))?;
        Ok(Served { leaf, status })
    };
    tokio::time::timeout(Duration::from_secs(30), exchange).await.map_err(|_| "timed out".to_string())?
}

/// A CA and a certificate it signed for `names`: (CA PEM, chain PEM, key PEM).
pub fn issue(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Pylon test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}
