//! Traefik v3's TLS options from the store (`tls/options/<name>/...`), checked with curl as the
//! client: a router's `tls.options` are enforced on handshakes for its host, `default` on
//! every other name; a request cannot reach a host under another host's options (421); a
//! change applies live, and a broken change keeps the last good options.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use support::{fixture, tls::issue, upstream::Upstream};

/// What curl saw talking TLS to `sni` on `port`: its exit code, `<status> <http version>`, and
/// stderr. `--resolve` makes curl send `sni` as the server name.
struct Seen {
    code: i32,
    status: String,
    err: String,
}

fn curl(port: u16, sni: &str, ca: &std::path::Path, args: &[&str]) -> Seen {
    support::require("curl");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_code} %{http_version}", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{sni}:{port}:127.0.0.1")])
        .args(args)
        .arg(format!("https://{sni}:{port}/"))
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Seen { code: out.status.code().unwrap_or(-1), status: text(&out.stdout), err: text(&out.stderr) }
}

/// Retries `probe` for up to 2 s until `ok` holds (a store change takes a moment to apply).
fn eventually(f: &fixture::Fixture, what: &str, probe: impl Fn() -> Seen, ok: impl Fn(&Seen) -> bool) {
    let start = Instant::now();
    loop {
        let seen = probe();
        if ok(&seen) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{what}: curl exit {} {:?} {}\n{}",
            seen.code,
            seen.status,
            seen.err,
            f.replica.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn served(seen: &Seen) -> bool {
    seen.code == 0 && seen.status.starts_with("200")
}

/// Refused in the handshake: no HTTP status at all.
fn refused(seen: &Seen) -> bool {
    seen.code != 0 && seen.status.starts_with("000")
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_options_from_the_store_apply_per_host_and_live() {
    let f = fixture::on_etcd("").await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (ca, chain, key) = issue(&["app.example", "secure.example"]);
    let ca = file("ca.pem", &ca);
    let ca = std::path::Path::new(&ca);
    let (client_ca, client, client_key) = issue(&["client.example"]);
    let client_args =
        ["--cert".to_string(), file("client.pem", &client), "--key".into(), file("client.key", &client_key)];
    let client_args: Vec<&str> = client_args.iter().map(String::as_str).collect();

    let app = Upstream::start("app").await;
    let mut pairs = fixture::router("app", "Host(`app.example`)", "app");
    pairs.extend(fixture::router("secure", "Host(`secure.example`)", "app"));
    pairs.extend(fixture::servers("app", &[&app]));
    pairs.extend([
        ("http/routers/app/entryPoints/0", "websecure".to_string()),
        ("http/routers/secure/entryPoints/0", "websecure".to_string()),
        ("http/routers/secure/tls/options", "mtls@etcd".to_string()),
        // The CA as PEM text in the key, as Traefik allows for caFiles.
        ("tls/options/mtls/clientAuth/caFiles/0", client_ca),
        ("tls/options/mtls/clientAuth/clientAuthType", "RequireAndVerifyClientCert".to_string()),
        ("tls/options/mtls/minVersion", "VersionTLS13".to_string()),
        ("tls/certificates/0/certFile", chain),
        ("tls/certificates/0/keyFile", key),
    ]);
    f.write(&pairs).await;
    let port = f.replica.websecure;
    let tls12 = ["--tlsv1.2", "--tls-max", "1.2"];

    // The host's options: a client certificate from the CA, and TLS 1.3.
    eventually(
        &f,
        "secure.example with a client certificate",
        || curl(port, "secure.example", ca, &client_args),
        served,
    );
    let seen = curl(port, "secure.example", ca, &[]);
    assert!(refused(&seen), "no certificate, no handshake: {} {}", seen.status, seen.err);
    let seen = curl(port, "secure.example", ca, &[&client_args[..], &tls12[..]].concat());
    assert!(refused(&seen), "TLS 1.2 refused under mtls: {} {}", seen.status, seen.err);
    // Every other name gets the default options: no certificate asked, TLS 1.2 spoken.
    let seen = curl(port, "app.example", ca, &tls12);
    assert!(served(&seen), "app.example under the default options: {} {}", seen.status, seen.err);

    // Domain fronting: a handshake for app.example cannot carry a request for secure.example.
    let seen = curl(port, "app.example", ca, &["--http1.1", "-H", "Host: secure.example"]);
    assert_eq!(seen.status, "421 1.1", "misdirected under other options: {}", seen.err);
    let seen = curl(port, "app.example", ca, &["--http2", "-H", "Host: secure.example"]);
    assert_eq!(seen.status, "421 2", "over h2 too: {}", seen.err);
    let seen = curl(port, "app.example", ca, &["--http1.1", "-H", "Host: SECURE.example."]);
    assert_eq!(seen.status, "421 1.1", "a trailing dot and another case name the same host: {}", seen.err);

    // `default` changes live: TLS 1.3 only, HTTP/1.1 only by ALPN, P-384 only.
    f.write(&[
        ("tls/options/default/minVersion", "VersionTLS13".to_string()),
        ("tls/options/default/alpnProtocols/0", "http/1.1".to_string()),
        ("tls/options/default/curvePreferences/0", "CurveP384".to_string()),
    ])
    .await;
    eventually(&f, "TLS 1.2 refused once default says TLS 1.3", || curl(port, "app.example", ca, &tls12), refused);
    let seen = curl(port, "app.example", ca, &["--http2"]);
    assert_eq!(seen.status, "200 1.1", "h2 not offered by ALPN: {}", seen.err);
    let seen = curl(port, "app.example", ca, &["--curves", "X25519"]);
    assert!(refused(&seen), "a curve not listed is refused: {} {}", seen.status, seen.err);
    let seen = curl(port, "app.example", ca, &["--curves", "P-384"]);
    assert!(served(&seen), "the listed curve: {} {}", seen.status, seen.err);

    // A broken value is an error with its key, and the last good options keep being enforced.
    f.write(&[("tls/options/mtls/minVersion", "VersionTLS14".to_string())]).await;
    let start = Instant::now();
    while !f.replica.log().contains("KV key traefik/tls/options/mtls/minVersion") {
        assert!(start.elapsed() < Duration::from_secs(2), "the bad key is named:\n{}", f.replica.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = curl(port, "secure.example", ca, &[]);
    assert!(refused(&seen), "still no handshake without a certificate: {} {}", seen.status, seen.err);
    assert!(served(&curl(port, "secure.example", ca, &client_args)), "and still served with one");

    // sniStrict in default: a name no certificate covers gets no default certificate.
    let seen = curl(port, "unknown.example", ca, &["-k", "-H", "Host: app.example"]);
    assert!(served(&seen), "the default certificate before sniStrict: {} {}", seen.status, seen.err);
    f.write(&[("tls/options/default/sniStrict", "true".to_string())]).await;
    eventually(&f, "sniStrict", || curl(port, "unknown.example", ca, &["-k", "-H", "Host: app.example"]), refused);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_router_whose_tls_options_are_missing_or_unenforceable_is_not_served_over_tls() {
    let f = fixture::on_etcd("").await;
    let (ca, chain, key) = issue(&["app.example", "other.example"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let app = Upstream::start("app").await;
    let mut pairs = fixture::router("app", "Host(`app.example`)", "app");
    // Options a connection's SNI cannot select: the rule names no host.
    pairs.extend(fixture::router("anyhost", "PathPrefix(`/`)", "app"));
    pairs.extend(fixture::servers("app", &[&app]));
    pairs.extend([
        ("http/routers/app/tls/options", "missing".to_string()),
        ("http/routers/app/entryPoints/0", "websecure".to_string()),
        ("http/routers/anyhost/tls/options", "modern".to_string()),
        ("http/routers/anyhost/entryPoints/0", "websecure".to_string()),
        ("tls/options/modern/minVersion", "VersionTLS13".to_string()),
        ("tls/certificates/0/certFile", chain),
        ("tls/certificates/0/keyFile", key),
    ]);
    f.write(&pairs).await;
    let start = Instant::now();
    let wanted = ["router \"app\" disabled: its TLS options \"missing\" do not exist", "add a Host matcher"];
    while !wanted.iter().all(|w| f.replica.log().contains(w)) {
        assert!(start.elapsed() < Duration::from_secs(2), "both refusals are logged:\n{}", f.replica.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for sni in ["app.example", "other.example"] {
        let seen = curl(f.replica.websecure, sni, &ca_file, &[]);
        assert!(
            seen.status.starts_with("404 "),
            "{sni}: {:?}: no router is served under weaker options: {}",
            seen.status,
            seen.err
        );
    }
}
