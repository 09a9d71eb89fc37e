//! Pebble, the ACME test server, with `pebble-challtestsrv` as its DNS (every name resolves to
//! 127.0.0.1), on free loopback ports. Pebble's own HTTPS certificate comes from a CA generated
//! here (Debian ships none); the issuing root of the certificates it signs is fetched from its
//! management API after start (it changes on every start). HTTP-01 validation connects to
//! `http_port`, which the test points at the replica that should answer.

use std::{path::PathBuf, process::Command};

use super::{free_port, require, start_server, Process};

pub struct Pebble {
    pub directory: String,
    /// PEM of the CA that signed Pebble's API certificate: `acme.caCertificates`.
    pub api_ca: PathBuf,
    pub management: u16,
    pub log: PathBuf,
    _dns: Process,
    _pebble: Process,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct Options {
    /// Where Pebble connects to validate HTTP-01.
    pub http_port: u16,
    /// Where Pebble connects to validate TLS-ALPN-01 (a free port when not set).
    pub tls_port: Option<u16>,
    /// `certificateValidityPeriod`, seconds.
    pub validity: Option<u64>,
    /// `PEBBLE_WFE_NONCEREJECT` (percent of nonces rejected).
    pub nonce_reject: u8,
    /// `PEBBLE_AUTHZREUSE` (percent of orders given an existing valid authorization); 0 when
    /// not set, which Pebble still reuses in 1% of orders.
    pub authz_reuse: Option<u8>,
}

impl Pebble {
    pub async fn start(options: Options) -> Pebble {
        require("pebble");
        require("pebble-challtestsrv");
        let dir = tempfile::tempdir().unwrap();
        let (api_ca, cert, key) = api_certificates(dir.path());

        let (dns_port, dns_mgmt) = (free_port(), free_port());
        let dns = Process {
            child: Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args([
                    "-management",
                    &format!("127.0.0.1:{dns_mgmt}"),
                    "-defaultIPv4",
                    "127.0.0.1",
                    "-defaultIPv6",
                    "",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("challtestsrv.log")).unwrap())
                .spawn()
                .expect("start pebble-challtestsrv"),
            name: "pebble-challtestsrv".into(),
        };

        let base = dir.path().to_path_buf();
        let (pebble, (api, management)) = start_server(
            "pebble",
            dir.path(),
            |log| {
                let (api, management) = (free_port(), free_port());
                let mut settings = serde_json::json!({
                    "listenAddress": format!("127.0.0.1:{api}"),
                    "managementListenAddress": format!("127.0.0.1:{management}"),
                    "certificate": cert,
                    "privateKey": key,
                    "httpPort": options.http_port,
                    "tlsPort": options.tls_port.unwrap_or_else(free_port),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": false,
                });
                if let Some(validity) = options.validity {
                    settings["certificateValidityPeriod"] = validity.into();
                }
                let config = base.join("pebble.json");
                std::fs::write(&config, serde_json::json!({ "pebble": settings }).to_string()).unwrap();
                let child = Command::new("pebble")
                    .arg("-config")
                    .arg(&config)
                    .args(["-dnsserver", &format!("127.0.0.1:{dns_port}"), "-strict=false"])
                    .env("PEBBLE_VA_NOSLEEP", "1")
                    .env("PEBBLE_AUTHZREUSE", options.authz_reuse.unwrap_or(0).to_string())
                    .env("PEBBLE_WFE_NONCEREJECT", options.nonce_reject.to_string())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("start pebble");
                (child, (api, management))
            },
            |&(_, management)| Box::pin(async move { std::net::TcpStream::connect(("127.0.0.1", management)).is_ok() }),
        )
        .await;
        let log = dir.path().join("pebble.log");
        Pebble {
            directory: format!("https://127.0.0.1:{api}/dir"),
            api_ca,
            management,
            log,
            _dns: dns,
            _pebble: pebble,
            _dir: dir,
        }
    }

    /// GET on Pebble's management API: the body.
    fn management_get(&self, path: &str) -> Vec<u8> {
        let url = format!("https://127.0.0.1:{}{path}", self.management);
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&self.api_ca)
            .arg(&url)
            .output()
            .expect("curl");
        assert!(output.status.success(), "GET {url}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    /// The root that issued certificates chain to, PEM (from the management API).
    pub async fn issuing_root(&self) -> String {
        String::from_utf8(self.management_get("/roots/0")).unwrap()
    }

    /// Pebble's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Pebble's status of the certificate `leaf` (DER): "Valid" or "Revoked".
    pub async fn status_of(&self, leaf: &[u8]) -> String {
        let (_, serial) = pylon::der::renewal_parts(leaf).expect("a certificate with a serial");
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        let body = self.management_get(&format!("/cert-status-by-serial/{}", hex.trim_start_matches('0')));
        let status: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("cert-status-by-serial: {}", String::from_utf8_lossy(&body)));
        status["Status"].as_str().unwrap_or_default().to_string()
    }

    /// How many orders Pebble accepted (from its log).
    pub fn orders(&self) -> usize {
        self.log().lines().filter(|l| l.contains("Added order")).count()
    }

    /// `[acme]` settings for a replica using this Pebble, validated by HTTP-01.
    pub fn acme_section(&self, extra: &str) -> String {
        format!("{}\n[acme.httpChallenge]\nentryPoint = \"web\"\n", self.acme_base(extra))
    }

    /// `[acme]` settings without a challenge section: TLS-ALPN-01 is added by the caller.
    pub fn acme_base(&self, extra: &str) -> String {
        format!(
            r#"
[acme]
email = "ops@pylon.test"
caServer = "{}"
caCertificates = ["{}"]
entryPoint = "websecure"
leaseTTL = "5s"
{extra}
"#,
            self.directory,
            self.api_ca.display()
        )
    }
}

/// A CA and, signed by it, Pebble's API certificate for 127.0.0.1 and localhost.
fn api_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Pebble API test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let paths = (dir.join("api-ca.pem"), dir.join("api-cert.pem"), dir.join("api-key.pem"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
