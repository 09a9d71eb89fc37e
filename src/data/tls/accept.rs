//! The TLS handshake of every connection. The ClientHello is read first (rustls'
//! `LazyConfigAcceptor`) so that ACME can step in before a certificate is chosen: a handshake
//! that offers only `acme-tls/1` is a TLS-ALPN-01 validation and gets the challenge certificate
//! for its SNI; a name no certificate covers may be obtained on demand while the handshake waits.
//! Everything else gets the configuration of the TLS options its SNI names (see
//! [`super::handshakes`]). Nothing here reads the store: TLS-ALPN-01 answers and the
//! configurations are in the data plane's snapshot.

use std::{io, sync::Arc};

use rustls::{
    server::{Acceptor, ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use tokio::net::TcpStream;
use tokio_rustls::{server::TlsStream, LazyConfigAcceptor};

use crate::data::plane::Plane;

/// The ALPN protocol of TLS-ALPN-01 validations (RFC 8737).
pub const ACME_TLS: &[u8] = b"acme-tls/1";

pub enum Accepted {
    /// A client to serve HTTP to, and the options its handshake was made under.
    Serve(Box<TlsStream<TcpStream>>, super::Session),
    /// A TLS-ALPN-01 validation for this name, answered by the handshake itself.
    Validation(String),
}

/// Runs the handshake of `stream` on `entry_point`, whose configuration is `fallback` until
/// the control plane has built the TLS options. A TLS-ALPN-01 validation is answered from the
/// snapshot; a name no certificate covers waits for onDemand (when on), the one wait of the
/// data plane for the control plane.
pub async fn accept(
    plane: &Plane,
    entry_point: &str,
    fallback: &Arc<super::handshakes::Chosen>,
    stream: TcpStream,
) -> io::Result<Accepted> {
    let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let server_name = hello.server_name().map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    if let Some(name) = &server_name {
        if only_acme_tls(&hello) {
            let Some(key) = plane.load().answers.alpn(name) else {
                return Err(io::Error::other(format!("no TLS-ALPN-01 challenge pending for {name}")));
            };
            start.into_stream(validation_config(key)).await?;
            return Ok(Accepted::Validation(name.clone()));
        }
        if let Some(on_demand) = plane.on_demand() {
            if plane.load().certs.lookup(name).is_none() {
                on_demand.wait(plane, name).await;
            }
        }
    }
    let snapshot = plane.load();
    let chosen = snapshot.handshakes.choose(entry_point, server_name.as_deref()).unwrap_or(fallback).clone();
    drop(snapshot);
    let config = chosen.config.clone();
    let session = super::Session { server_name: server_name.unwrap_or_default().into(), chosen };
    Ok(Accepted::Serve(Box::new(start.into_stream(config).await?), session))
}

fn only_acme_tls(hello: &ClientHello<'_>) -> bool {
    hello.alpn().is_some_and(|mut protocols| protocols.next() == Some(ACME_TLS) && protocols.next().is_none())
}

/// A configuration that presents `key` and negotiates `acme-tls/1`.
fn validation_config(key: Arc<CertifiedKey>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(key)));
    config.alpn_protocols = vec![ACME_TLS.to_vec()];
    Arc::new(config)
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
