//! The HTTP client Pylon forwards requests and runs health checks with: HTTP/1.1 connections
//! kept alive for every upstream server ([`http1`], a pool per worker), plain HTTP or HTTPS
//! (rustls, trusting the system's roots plus `rootCAs`), with the dial timeout of
//! `[forwardingTimeouts]`; and HTTP/2 by prior knowledge to `h2c://` servers (gRPC), with
//! `TE: trailers`.

mod http1;

use std::{fmt, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;

pub use self::http1::SendError;
use crate::config::transport::Transport;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of a request sent upstream: the client's streamed body, a buffered copy, or nothing.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

#[derive(Debug, thiserror::Error)]
#[error("rootCAs entry {entry:?}: {message}")]
pub struct RootCaError {
    pub entry: String,
    pub message: String,
}

#[derive(Clone)]
pub struct Upstream {
    /// hyper-util's pooled client, for requests off the proxy's path (health checks, ACME,
    /// `forwardAuth`, `errors` pages).
    pub client: Client<HttpsConnector<HttpConnector>, Body>,
    /// The proxy's HTTP/1.1 connections.
    http1: Arc<http1::Http1>,
    /// HTTP/2 without TLS, for `h2c://` servers.
    h2c: Client<HttpsConnector<HttpConnector>, Body>,
    /// How long a server may take to send its response head (`None`: no limit).
    pub response_header_timeout: Option<Duration>,
    connector: HttpsConnector<HttpConnector>,
    max_idle_per_host: usize,
}

impl Upstream {
    pub fn new(transport: &Transport) -> Result<Upstream, RootCaError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let tls = if transport.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
        } else {
            builder.with_root_certificates(roots(&transport.root_cas)?).with_no_client_auth()
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(transport.dial_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Upstream {
            client: pool(connector.clone(), transport.max_idle_per_host),
            http1: Arc::new(http1::Http1::new(connector.clone(), transport.max_idle_per_host)),
            h2c: h2c_pool(connector.clone(), transport.max_idle_per_host),
            response_header_timeout: transport.response_header_timeout,
            connector,
            max_idle_per_host: transport.max_idle_per_host,
        })
    }

    /// The same client settings over a connection pool of its own.
    pub fn with_own_pool(&self) -> Upstream {
        Upstream {
            client: pool(self.connector.clone(), self.max_idle_per_host),
            http1: Arc::new(http1::Http1::new(self.connector.clone(), self.max_idle_per_host)),
            h2c: h2c_pool(self.connector.clone(), self.max_idle_per_host),
            ..self.clone()
        }
    }

    /// Sends `request`: over HTTP/2 by prior knowledge when its URL's scheme is `h2c` (the URL
    /// then says `http`), announcing that trailers are understood, as gRPC servers expect.
    pub fn request(
        &self,
        request: http::Request<Body>,
    ) -> impl Future<Output = Result<http::Response<hyper::body::Incoming>, SendError>> + Send + 'static + use<> {
        let sending = match request.uri().scheme_str() == Some("h2c") {
            false => Sending::Http1(self.http1.send(request)),
            true => Sending::H2c(self.h2c(request)),
        };
        async move {
            match sending {
                Sending::Http1(sent) => sent.await,
                Sending::H2c(sent) => Ok(sent.await?),
            }
        }
    }

    fn h2c(&self, mut request: http::Request<Body>) -> ResponseFuture {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = http::Version::HTTP_2;
        request.headers_mut().insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        self.h2c.request(request)
    }
}

type ResponseFuture = hyper_util::client::legacy::ResponseFuture;

/// A request on its way, over HTTP/1.1 or to an `h2c://` server.
enum Sending<A> {
    Http1(A),
    H2c(ResponseFuture),
}

/// A pool speaking HTTP/2 only, by prior knowledge.
fn h2c_pool(
    connector: HttpsConnector<HttpConnector>,
    max_idle_per_host: usize,
) -> Client<HttpsConnector<HttpConnector>, Body> {
    builder(max_idle_per_host).http2_only(true).build(connector)
}

fn builder(max_idle_per_host: usize) -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_idle_timeout(Duration::from_secs(90)).pool_max_idle_per_host(max_idle_per_host);
    builder
}

fn pool(
    connector: HttpsConnector<HttpConnector>,
    max_idle_per_host: usize,
) -> Client<HttpsConnector<HttpConnector>, Body> {
    builder(max_idle_per_host).build(connector)
}

/// An error with its source chain: hyper's client errors hide the cause (connection refused,
/// reset, ...) there.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The system's roots (when it has any) and every `rootCAs` entry, a file path or PEM text.
fn roots(extra: &[String]) -> Result<RootCertStore, RootCaError> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(native.certs);
    for entry in extra {
        let pem = crate::data::tls::pem_or_file(entry)
            .map_err(|e| RootCaError { entry: entry.clone(), message: e.to_string() })?;
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RootCaError { entry: entry.clone(), message: e.to_string() })?;
        if certs.is_empty() {
            return Err(RootCaError { entry: entry.clone(), message: "holds no PEM certificate".into() });
        }
        for cert in certs {
            store.add(cert).map_err(|e| RootCaError { entry: entry.clone(), message: e.to_string() })?;
        }
    }
    Ok(store)
}

/// `insecureSkipVerify`: accepts any upstream certificate, still checking handshake signatures.
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl fmt::Debug for NoVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoVerify")
    }
}

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
