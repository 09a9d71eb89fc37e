//! TLS to the stores, as `providers.etcd.tls` / `providers.consul.tls` (and v1.7's `[etcd.tls]`)
//! configure it: real etcd and Consul that accept only TLS clients with a certificate from the
//! test's CA; `storeconfig` and a replica get through with the CA and a client certificate, and
//! are refused without them.

mod support;

use std::{path::Path, process::Command, time::Duration};

use support::{eventually, free_port, get, get_host, pylon, pylon_output, start_server, upstream::Upstream, Process};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, written under `dir`.
fn certificates(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "store test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, names) in
        [("server", vec!["127.0.0.1".to_string(), "localhost".into()]), ("client", vec!["pylon".into()])]
    {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// etcd serving clients only over TLS, and only those with a certificate the CA signed.
async fn etcd_tls(dir: &Path) -> (Process, u16) {
    support::require("etcd");
    let data = dir.join("etcd");
    let spawn = |log: std::fs::File| {
        let (client, peer, metrics) = (free_port(), free_port(), free_port());
        let child = Command::new("etcd")
            .args(["--name", "t1", "--data-dir"])
            .arg(&data)
            .arg(format!("--listen-client-urls=https://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=https://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster=t1=http://127.0.0.1:{peer}"))
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"))
            .arg(format!("--cert-file={}", dir.join("server.pem").display()))
            .arg(format!("--key-file={}", dir.join("server.key").display()))
            .arg(format!("--trusted-ca-file={}", dir.join("ca.pem").display()))
            .args(["--client-cert-auth", "--log-level", "warn", "--logger", "zap"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        (child, (client, metrics))
    };
    let ready = |ports: &(u16, u16)| -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        let health = format!("http://127.0.0.1:{}/health", ports.1);
        Box::pin(async move { matches!(get(&health).await, Ok((200, _))) })
    };
    let (process, (client, _)) = start_server("etcd", dir, spawn, ready).await;
    (process, client)
}

/// A Consul dev agent with HTTPS only, verifying clients against the CA.
async fn consul_tls(dir: &Path) -> (Process, u16) {
    support::require("consul");
    let data = dir.join("consul");
    let at = |f: &str| dir.join(f).display().to_string();
    let spawn = |log: std::fs::File| {
        let https = free_port();
        let hcl = format!(
            "ports {{ https = {https} }}\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nverify_incoming_https = true\n",
            at("server.pem"),
            at("server.key"),
            at("ca.pem")
        );
        let child = Command::new("consul")
            .args(["agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-http-port=-1"])
            .args(["-dns-port=-1", "-grpc-port=-1"])
            .arg(format!("-server-port={}", free_port()))
            .arg(format!("-serf-lan-port={}", free_port()))
            .arg(format!("-serf-wan-port={}", free_port()))
            .arg(format!("-data-dir={}", data.display()))
            .args(["-log-level=warn", "-hcl", &hcl])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start consul");
        (child, https)
    };
    // Ready once a TLS client with the certificate reads the leader.
    let ca = at("ca.pem");
    let tls = pylon::control::store::tls::StoreTls {
        ca: Some(ca),
        cert: Some(at("client.pem")),
        key: Some(at("client.key")),
    };
    let ready = move |https: &u16| -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        let spec = pylon::control::store::StoreSpec::Consul {
            endpoint: format!("127.0.0.1:{https}"),
            token: None,
            tls: Some(tls.clone()),
        };
        Box::pin(async move { pylon::control::store::open(&spec).await.is_ok() })
    };
    start_server("consul", dir, spawn, ready).await
}

/// Stores a v3 file and a route over TLS, then a replica started with v3 flags serves it.
async fn through_tls(provider: &str, port: u16, dir: &Path) {
    let upstream = Upstream::start("behind-tls").await;
    let at = |f: &str| dir.join(f).display().to_string();
    let tls = format!("{{ ca: '{}', cert: '{}', key: '{}' }}", at("ca.pem"), at("client.pem"), at("client.key"));
    let file = dir.join("traefik.yml");
    std::fs::write(
        &file,
        format!("entryPoints:\n  web: {{ address: ':80' }}\nping: {{}}\nproviders:\n  {provider}:\n    endpoints: ['127.0.0.1:{port}']\n    tls: {tls}\n"),
    )
    .unwrap();
    let routes = dir.join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[http.routers.r]\nrule = \"Host(`tls.pylon.test`)\"\nservice = \"s\"\n\
             [http.services.s.loadBalancer]\nservers = [{{ url = \"{}\" }}]\n",
            upstream.url()
        ),
    )
    .unwrap();
    let (code, out, err) = pylon_output(
        &["storeconfig", &format!("--configfile={}", file.display()), &format!("--dynamic={}", routes.display())],
        dir,
    );
    assert_eq!(code, 0, "storeconfig over TLS: {out}{err}");
    assert!(out.contains("over TLS"), "{out}");

    // Without the client certificate the store refuses; without TLS nothing answers.
    let no_identity = dir.join("no-identity.yml");
    std::fs::write(
        &no_identity,
        format!(
            "providers:\n  {provider}:\n    endpoints: ['127.0.0.1:{port}']\n    tls: {{ ca: '{}' }}\n",
            at("ca.pem")
        ),
    )
    .unwrap();
    let plain = dir.join("plain.yml");
    std::fs::write(&plain, format!("providers:\n  {provider}:\n    endpoints: ['127.0.0.1:{port}']\n")).unwrap();
    for refused in [&no_identity, &plain] {
        let (code, out, err) = pylon_output(&["acme", "list", &format!("--configfile={}", refused.display())], dir);
        assert_ne!(code, 0, "{}: {out}{err}", refused.display());
    }

    let (web, admin) = (free_port(), free_port());
    let _replica = Process {
        child: pylon()
            .arg(format!("--providers.{provider}.endpoints=127.0.0.1:{port}"))
            .arg(format!("--providers.{provider}.tls.ca={}", at("ca.pem")))
            .arg(format!("--providers.{provider}.tls.cert={}", at("client.pem")))
            .arg(format!("--providers.{provider}.tls.key={}", at("client.key")))
            .arg(format!("--entryPoints.web.address=127.0.0.1:{web}"))
            .arg(format!("--entryPoints.traefik.address=127.0.0.1:{admin}"))
            .current_dir(dir)
            .stderr(std::fs::File::create(dir.join("replica.log")).unwrap())
            .spawn()
            .unwrap(),
        name: "pylon".into(),
    };
    let ping = format!("http://127.0.0.1:{admin}/ping");
    eventually("the replica reads its configuration over TLS", Duration::from_secs(20), || async {
        matches!(get(&ping).await, Ok((200, _)))
    })
    .await;
    let reply = get_host(&format!("http://127.0.0.1:{web}/"), "tls.pylon.test").await;
    assert_eq!(reply.status, 200, "{}", std::fs::read_to_string(dir.join("replica.log")).unwrap());
    assert!(reply.body.starts_with("behind-tls"));
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (_etcd, port) = etcd_tls(dir.path()).await;
    through_tls("etcd", port, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_over_https_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (_consul, port) = consul_tls(dir.path()).await;
    through_tls("consul", port, dir.path()).await;
}
