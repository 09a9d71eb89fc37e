//! TLS settings a user relies on, checked with curl as the client: an entrypoint's `minVersion`,
//! `cipherSuites`, `sniStrict` and client certificates (`ClientCA`, `clientAuth`) are enforced; a plain entrypoint that speaks TLS to a client
//! is held to the strictest of them; a TLS entrypoint without settings keeps TLS 1.2 and the
//! default certificate.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use support::{fixture, free_port, tls::issue, upstream::Upstream};

/// `curl --fail` over TLS to `host` (resolved to `port`, or the bare address when `host` is None, so no
/// SNI is sent): the exit code and stderr.
fn curl(port: u16, host: Option<&str>, ca: &std::path::Path, args: &[&str]) -> (i32, String) {
    support::require("curl");
    let url = format!("https://{}:{port}/", host.unwrap_or("127.0.0.1"));
    let mut command = Command::new("curl");
    command.args(["-fsS", "-o", "/dev/null", "--max-time", "10", "--cacert"]).arg(ca).args(args).arg(&url);
    if let Some(host) = host {
        command.args(["--resolve", &format!("{host}:{port}:127.0.0.1")]);
    }
    let out = command.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Waits up to 2 s for `app.example` to be served on `port` with its certificate.
fn served(port: u16, ca: &std::path::Path, f: &fixture::Fixture) {
    let start = Instant::now();
    loop {
        let (code, err) = curl(port, Some("app.example"), ca, &[]);
        if code == 0 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "app.example served on {port}: {err}\n{}", f.replica.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn entrypoint_tls_settings_are_enforced_and_bind_plain_entrypoints_that_speak_tls() {
    let strict = free_port();
    let f = fixture::on_etcd(&format!(
        r#"
[entryPoints.strict]
address = "127.0.0.1:{strict}"
[entryPoints.strict.tls]
minVersion = "VersionTLS13"
sniStrict = true
cipherSuites = ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]
"#
    ))
    .await;
    let (ca, chain, key) = issue(&["app.example"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let mut pairs = fixture::router("app", "Host(`app.example`)", "app");
    pairs.extend([
        ("http/routers/app/entryPoints/0", "web".to_string()),
        ("http/routers/app/entryPoints/1", "websecure".to_string()),
        ("http/routers/app/entryPoints/2", "strict".to_string()),
        ("http/routers/app/tls", "true".to_string()),
        ("tls/certificates/0/certFile", chain),
        ("tls/certificates/0/keyFile", key),
    ]);
    let app = Upstream::start("app").await;
    pairs.extend(fixture::servers("app", &[&app]));
    f.write(&pairs).await;
    let (web, websecure) = (f.replica.web, f.replica.websecure);
    served(strict, &ca_file, &f);

    // minVersion = VersionTLS13: a TLS 1.2 client is refused, on the entrypoint and on the
    // plain one that speaks TLS too; the entrypoint without settings still speaks TLS 1.2.
    let tls12 = ["--tlsv1.2", "--tls-max", "1.2"];
    for port in [strict, web] {
        let (code, err) = curl(port, Some("app.example"), &ca_file, &tls12);
        assert_ne!(code, 0, "TLS 1.2 refused on port {port}");
        assert!(err.contains("alert") || err.contains("version"), "a protocol version alert: {err}");
        let (code, err) = curl(port, Some("app.example"), &ca_file, &["--tlsv1.3"]);
        assert_eq!(code, 0, "TLS 1.3 served on port {port}: {err}");
    }
    let (code, err) = curl(websecure, Some("app.example"), &ca_file, &tls12);
    assert_eq!(code, 0, "TLS 1.2 still served where nothing forbids it: {err}");

    // sniStrict: no SNI, or a name without a certificate, gets no default certificate.
    for (port, host) in [(strict, None), (strict, Some("unknown.example")), (web, None)] {
        let (code, err) = curl(port, host, &ca_file, &["-k"]);
        assert_ne!(code, 0, "no handshake without a matching SNI on {port} for {host:?}");
        assert!(err.contains("alert") || err.contains("handshake"), "{err}");
    }
    let (code, err) = curl(websecure, Some("unknown.example"), &ca_file, &["-k", "-v", "-H", "Host: app.example"]);
    assert_eq!(code, 0, "the default certificate without sniStrict: {err}");
    assert!(err.contains("PYLON DEFAULT CERT"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cipher_suites_limit_tls12_to_the_listed_ones() {
    let listed = free_port();
    let f = fixture::on_etcd(&format!(
        r#"
[entryPoints.listed]
address = "127.0.0.1:{listed}"
[entryPoints.listed.tls]
cipherSuites = ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"]
"#
    ))
    .await;
    // rcgen signs with ECDSA P-256: ECDSA suites are the ones a client can use.
    let (ca, chain, key) = issue(&["app.example"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let mut pairs = fixture::router("app", "Host(`app.example`)", "app");
    pairs.extend([
        ("http/routers/app/entryPoints/0", "websecure".to_string()),
        ("http/routers/app/entryPoints/1", "listed".to_string()),
        ("tls/certificates/0/certFile", chain),
        ("tls/certificates/0/keyFile", key),
    ]);
    let app = Upstream::start("app").await;
    pairs.extend(fixture::servers("app", &[&app]));
    f.write(&pairs).await;
    let tls12 = ["--tlsv1.2", "--tls-max", "1.2", "--ciphers"];
    served(listed, &ca_file, &f);
    let (code, err) =
        curl(listed, Some("app.example"), &ca_file, &[&tls12[..], &["ECDHE-ECDSA-CHACHA20-POLY1305"]].concat());
    assert_eq!(code, 0, "the listed suite is negotiated: {err}");
    let (code, err) =
        curl(listed, Some("app.example"), &ca_file, &[&tls12[..], &["ECDHE-ECDSA-AES128-GCM-SHA256"]].concat());
    assert_ne!(code, 0, "a suite not listed is refused: {err}");
    let (code, err) = curl(
        f.replica.websecure,
        Some("app.example"),
        &ca_file,
        &[&tls12[..], &["ECDHE-ECDSA-AES128-GCM-SHA256"]].concat(),
    );
    assert_eq!(code, 0, "and still negotiated where no list applies: {err}");
}

/// curl over TLS to `app.example` on `port` with `args`: the exit code, the body and stderr.
fn curl_body(port: u16, ca: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .args(["--resolve", &format!("app.example:{port}:127.0.0.1")])
        .arg(format!("https://app.example:{port}/"))
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_required_verified_and_passed_to_the_upstream() {
    let (required, optional) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    // The clients' CA, a client it signed, and a client another CA signed.
    let (client_ca, client, client_key) = issue(&["client.example"]);
    let (_, stranger, stranger_key) = issue(&["stranger.example"]);
    for (name, text) in [
        ("client-ca.pem", &client_ca),
        ("client.pem", &client),
        ("client.key", &client_key),
        ("stranger.pem", &stranger),
        ("stranger.key", &stranger_key),
    ] {
        std::fs::write(path(name), text).unwrap();
    }
    let client_ca_file = path("client-ca.pem");
    let (client_pem, client_key_file) = (path("client.pem"), path("client.key"));
    let (stranger_pem, stranger_key_file) = (path("stranger.pem"), path("stranger.key"));
    let f = fixture::on_etcd(&format!(
        r#"
[entryPoints.required]
address = "127.0.0.1:{required}"
[entryPoints.required.tls.ClientCA]
files = ["{ca}"]
[entryPoints.optional]
address = "127.0.0.1:{optional}"
[entryPoints.optional.tls.clientAuth]
caFiles = ["{ca}"]
clientAuthType = "VerifyClientCertIfGiven"
"#,
        ca = client_ca_file
    ))
    .await;
    let (ca, chain, key) = issue(&["app.example"]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let mut pairs = fixture::router("app", "Host(`app.example`)", "app");
    pairs.extend([
        ("http/routers/app/entryPoints/0", "required".to_string()),
        ("http/routers/app/entryPoints/1", "optional".to_string()),
        ("http/routers/app/middlewares/0", "certs".to_string()),
        ("http/middlewares/certs/passTLSClientCert/pem", "true".to_string()),
        ("http/middlewares/certs/passTLSClientCert/info/sans", "true".to_string()),
        ("http/middlewares/certs/passTLSClientCert/info/issuer/commonName", "true".to_string()),
        ("tls/certificates/0/certFile", chain),
        ("tls/certificates/0/keyFile", key),
    ]);
    let app = Upstream::start("app").await;
    pairs.extend(fixture::servers("app", &[&app]));
    f.write(&pairs).await;
    let client_args = ["--cert", client_pem.as_str(), "--key", client_key_file.as_str()];
    let start = Instant::now();
    while curl_body(optional, &ca_file, &client_args).0 != 0 {
        assert!(start.elapsed() < Duration::from_secs(2), "app.example never served:\n{}", f.replica.log());
        std::thread::sleep(Duration::from_millis(20));
    }

    // The client's leaf, as Traefik passes it: its DER in base64.
    let der: String =
        client.lines().take_while(|l| !l.starts_with("-----END")).filter(|l| !l.starts_with("-----")).collect();
    for port in [required, optional] {
        let (code, body, err) = curl_body(port, &ca_file, &client_args);
        assert_eq!(code, 0, "a client with a certificate from the CA is served on {port}: {err}");
        // Leaf first, then whatever chain the client sent (curl may add its issuer).
        let header = |name: &str| {
            let line = body.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_default();
            line.to_string()
        };
        assert_eq!(header("x-forwarded-tls-client-cert").split(',').next(), Some(der.as_str()), "{body}");
        let info = header("x-forwarded-tls-client-cert-info");
        let leaf = "Issuer%3D%22CN%3DPylon+test+CA%22%3BSAN%3D%22client.example%22";
        assert!(info == leaf || info.starts_with(&format!("{leaf}%2C")), "{body}");
        let stranger_args = ["--cert", stranger_pem.as_str(), "--key", stranger_key_file.as_str()];
        let (code, _, err) = curl_body(port, &ca_file, &stranger_args);
        // Refused in the handshake (with TLS 1.3 curl may see the alert or only the closed
        // connection), never an HTTP answer (curl's 22).
        assert!(code != 0 && code != 22, "a certificate from another CA is refused on {port}: {code} {err}");
    }
    let (code, _, err) = curl_body(required, &ca_file, &[]);
    assert!(code != 0 && code != 22, "no certificate, no handshake where one is required: {code} {err}");
    // A plain entrypoint that speaks TLS to a client is held to the same requirement.
    let (code, _, err) = curl_body(f.replica.web, &ca_file, &[]);
    assert!(code != 0 && code != 22, "a handshake without a certificate on the plain entrypoint: {code} {err}");
    let forged = ["-H", "X-Forwarded-Tls-Client-Cert: forged"];
    let (code, body, err) = curl_body(optional, &ca_file, &forged);
    assert_eq!(code, 0, "no certificate is fine where it is optional: {err}");
    assert!(
        !body.contains("x-forwarded-tls-client-cert"),
        "nothing passed, and the client's own header removed: {body}"
    );
}
