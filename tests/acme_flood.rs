//! Floods of ACME challenge requests no order of the cluster is waiting for (HTTP-01 tokens,
//! TLS-ALPN-01 handshakes): each is refused from the data plane's snapshot, with not one store
//! read (counted on etcd's own metrics), and at once even while etcd is frozen, when the
//! answers of pending orders are still served.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use support::{fixture::Fixture, get, replica::Replica, Etcd};

/// `[acme]` with a CA nobody listens on: the replica answers challenges, and orders nothing.
const ACME: &str = r#"
[acme]
email = "ops@pylon.test"
caServer = "https://127.0.0.1:9/directory"
entryPoint = "websecure"
[acme.httpChallenge]
entryPoint = "web"
"#;

const RANGES: &str = "etcd_debugging_mvcc_range_total";

/// Waits until the replica's ACME watch follows the store.
async fn settled(replica: &Replica) {
    support::eventually("the ACME state is followed", Duration::from_secs(5), || async {
        replica.log().contains("ACME state followed")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tokens_cost_the_store_nothing_and_never_wait_for_it() {
    let etcd = Etcd::start().await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let replica = Replica::start(&etcd.flags(), ACME).await;
    let f = Fixture { store, replica, flags: etcd.flags(), server: Box::new(()) };
    settled(&f.replica).await;
    f.write(&[("acme/challenges/known-token", "known-token.thumbprint".into())]).await;
    let known = f.replica.web("/.well-known/acme-challenge/known-token");
    support::eventually("the stored token is answered", Duration::from_secs(5), || async {
        matches!(get(&known).await, Ok((200, body)) if body == "known-token.thumbprint")
    })
    .await;

    let before = etcd.counter(RANGES).await;
    let started = Instant::now();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut flood = tokio::task::JoinSet::new();
    for connection in 0..8 {
        let (client, base) = (client.clone(), f.replica.web("/.well-known/acme-challenge/"));
        flood.spawn(async move {
            for i in 0..250 {
                let uri: http::Uri = format!("{base}random-{connection}-{i}").parse().unwrap();
                let response = client.get(uri).await.expect("a challenge request");
                assert_eq!(response.status(), 404);
                let _ = response.into_body().collect().await;
            }
        });
    }
    let flooded = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = flood.join_next().await {
            done.unwrap();
        }
    });
    flooded.await.expect("2,000 requests within a minute");
    assert!(before > 0.0, "etcd counts the replica's own range calls");
    let reads = etcd.counter(RANGES).await - before;
    let took = started.elapsed().as_secs_f64();
    eprintln!("2,000 unknown tokens in {took:.1} s made {reads} etcd range calls");
    assert_eq!(reads, 0.0, "2,000 unknown tokens in {took:.1} s made {reads} etcd range calls");

    etcd.freeze();
    let started = Instant::now();
    let answer = get(&f.replica.web("/.well-known/acme-challenge/while-frozen")).await;
    let took = started.elapsed();
    let known_while_frozen = get(&known).await;
    etcd.thaw();
    assert!(matches!(answer, Ok((404, _))), "{answer:?}");
    assert!(took < Duration::from_millis(100), "an unknown token waited {took:?} for a frozen store");
    assert!(matches!(known_while_frozen, Ok((200, _))), "the known token is answered with the store frozen");
}

/// A TLS client that offers only `acme-tls/1`, as a CA validating TLS-ALPN-01 does, and accepts
/// any certificate (the challenge certificate is self-signed by design).
fn validator() -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        // webpki would refuse the certificate's critical acmeIdentifier extension; a CA's
        // validator does not verify the chain either (Pebble's skips verification).
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// A TLS-ALPN-01 validation of `name` on `port`: the certificate shown, if the handshake went
/// through.
async fn validate(connector: &tokio_rustls::TlsConnector, port: u16, name: &str) -> Option<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await.expect("answered");
    let tls = tls.ok()?;
    tls.get_ref().1.peer_certificates()?.first().map(|c| c.to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn alpn_handshakes_for_unknown_names_cost_the_store_nothing_and_never_wait_for_it() {
    let etcd = Etcd::start().await;
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    let tls_challenge = ACME.replace("[acme.httpChallenge]\nentryPoint = \"web\"\n", "[acme.tlsChallenge]\n");
    let replica = Replica::start(&etcd.flags(), &tls_challenge).await;
    settled(&replica).await;
    let stored = pylon::control::acme::challenge::alpn_response("known.pylon.test", &[7; 32]).unwrap();
    store.put("traefik/acme/alpn/known.pylon.test", stored).await.unwrap();
    let connector = validator();
    let port = replica.websecure;
    let start = Instant::now();
    while validate(&connector, port, "known.pylon.test").await.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the stored challenge certificate is shown:\n{}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let before = etcd.counter(RANGES).await;
    let started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let connector = connector.clone();
        flood.spawn(async move {
            for i in 0..60 {
                let shown = validate(&connector, port, &format!("random-{worker}-{i}.pylon.test")).await;
                assert!(shown.is_none(), "no challenge is pending for a random name");
            }
        });
    }
    let flooded = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = flood.join_next().await {
            done.unwrap();
        }
    });
    flooded.await.expect("480 handshakes within a minute");
    let reads = etcd.counter(RANGES).await - before;
    let took = started.elapsed().as_secs_f64();
    eprintln!("480 acme-tls/1 handshakes for unknown names in {took:.1} s made {reads} etcd range calls");
    assert_eq!(reads, 0.0, "480 handshakes in {took:.1} s made {reads} etcd range calls");

    etcd.freeze();
    let started = Instant::now();
    let shown = validate(&connector, port, "while-frozen.pylon.test").await;
    let took = started.elapsed();
    let known_while_frozen = validate(&connector, port, "known.pylon.test").await;
    etcd.thaw();
    assert!(shown.is_none());
    assert!(took < Duration::from_millis(100), "a handshake for an unknown name waited {took:?} for a frozen store");
    assert!(known_while_frozen.is_some(), "the known name is answered with the store frozen");
}
