//! The `pylon` binary as users run it: `storeconfig` into real etcd and Consul, replicas that
//! start from the stored configuration, exit codes, and errors that name the place.

mod support;

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use pylon::control::store::{self, Store, StoreSpec};
use support::{free_port, get, pylon, pylon_output, terminate};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/traefik.toml");

/// A running replica, SIGKILLed on drop if still alive.
struct Replica {
    child: Child,
    ping: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pylon` with `args` plus its own loopback addresses for the seed's entrypoints, and
/// waits until `/ping` answers 200.
async fn replica(args: &[&str], dir: &Path) -> Replica {
    let (http, https, web) = (free_port(), free_port(), free_port());
    let child = pylon()
        .args(args)
        .arg(format!("--entryPoints.http.address=127.0.0.1:{http}"))
        .arg(format!("--entryPoints.https.address=127.0.0.1:{https}"))
        .arg(format!("--web.address=127.0.0.1:{web}"))
        .arg(format!("--datadir={}", dir.join("data").display()))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("replica-{web}.log"))).unwrap())
        .spawn()
        .unwrap();
    let replica = Replica { child, ping: format!("http://127.0.0.1:{web}/ping") };
    let log = dir.join(format!("replica-{web}.log"));
    let ping = replica.ping.clone();
    let start = Instant::now();
    loop {
        if matches!(get(&ping).await, Ok((200, body)) if body == "OK") {
            return replica;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "replica never answered /ping: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops a replica with SIGTERM and checks that it exits 0 promptly.
fn stop(mut replica: Replica) {
    terminate(&replica.child);
    let start = Instant::now();
    loop {
        if let Some(status) = replica.child.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(12), "replica did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn open(spec: StoreSpec) -> Store {
    store::open(&spec).await.unwrap()
}

/// The seed's workflow on one store: storeconfig once, then replicas that read it from there.
async fn storeconfig_then_replicas(store_flags: &[String], store: Store) {
    let store_flags: Vec<&str> = store_flags.iter().map(String::as_str).collect();
    let store_flags = store_flags.as_slice();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["storeconfig", "--configfile", SEED];
    args.extend(store_flags);
    let (code, out, err) = pylon_output(&args, dir.path());
    assert_eq!(code, 0, "storeconfig failed: {out}{err}");
    assert!(out.contains("wrote 15 keys (15 new or changed, 0 removed)"), "{out}");
    assert!(
        err.contains("traefik.toml:12:1") && err.contains("[kubernetes]"),
        "the seed's [kubernetes] is a located warning: {err}"
    );
    assert_eq!(
        store.get("traefik/static/entrypoints/http/redirect/entrypoint").await.unwrap().map(|kv| kv.value),
        Some(b"https".to_vec())
    );

    // Running it twice is harmless.
    let (code, out, _) = pylon_output(&args, dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");

    // Two replicas on one host share the stored config, each with its own addresses.
    let a = replica(store_flags, dir.path()).await;
    let b = replica(store_flags, dir.path()).await;
    assert_eq!(get(&b.ping).await.unwrap(), (200, "OK".to_string()));
    stop(a);
    stop(b);
}

/// A second storeconfig with a section removed leaves no trace of it, and touches nothing else.
async fn storeconfig_replaces_what_was_stored(store_flags: &[String], store: Store) {
    let store_flags: Vec<&str> = store_flags.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    store.put("traefik/acme/account", "{\"acme\":\"state\"}").await.unwrap();
    store.put("traefik/http/routers/r/rule", "Host(`a.example`)").await.unwrap();
    let run = |file: &str| {
        let mut args = vec!["storeconfig", "--configfile", file];
        args.extend(&store_flags);
        pylon_output(&args, dir.path())
    };
    assert_eq!(run(SEED).0, 0);
    assert!(store.get("traefik/static/acme/email").await.unwrap().is_some());

    let trimmed = std::fs::read_to_string(SEED).unwrap().replace("main = \"archifleks.xyz\"", "main = \"example.org\"");
    let trimmed =
        trimmed[..trimmed.find("[acme]").unwrap()].to_string() + &trimmed[trimmed.find("[consul]").unwrap()..];
    let smaller = dir.path().join("smaller.toml");
    std::fs::write(&smaller, trimmed).unwrap();
    let (code, out, err) = run(smaller.to_str().unwrap());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote 9 keys (0 new or changed, 6 removed)"), "{out}");
    let left: Vec<String> = store.list("traefik/static/").await.unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert!(left.iter().all(|k| !k.starts_with("traefik/static/acme")), "removed keys linger: {left:?}");
    assert_eq!(left.len(), 9);
    assert!(store.get("traefik/acme/account").await.unwrap().is_some(), "ACME state is never touched");
    assert!(store.get("traefik/http/routers/r/rule").await.unwrap().is_some(), "dynamic config is never touched");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_storeconfig_then_replicas() {
    let etcd = support::Etcd::start().await;
    storeconfig_then_replicas(&etcd.flags(), open(etcd.spec()).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_storeconfig_then_replicas() {
    let consul = support::Consul::start().await;
    storeconfig_then_replicas(&consul.flags(), open(consul.spec()).await).await;
}

/// The seed's Job passes only `--configfile`; the file's `[consul]` section names the agent.
#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_storeconfig_job_needs_only_the_file() {
    let consul = support::Consul::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traefik.toml");
    std::fs::write(&file, std::fs::read_to_string(SEED).unwrap().replace("traefik-consul:8500", &consul.endpoint))
        .unwrap();
    let (code, out, err) = pylon_output(&["storeconfig", "--configfile", file.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("Consul at {}", consul.endpoint)), "{out}");
    let spec = consul.spec();
    assert_eq!(open(spec).await.list("traefik/static/").await.unwrap().kvs.len(), 15);
    // And the seed's Deployment args start a replica from it.
    let r = replica(&["--consul", &format!("--consul.endpoint={}", consul.endpoint)], dir.path()).await;
    stop(r);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_storeconfig_replaces_what_was_stored() {
    let etcd = support::Etcd::start().await;
    storeconfig_replaces_what_was_stored(&etcd.flags(), open(etcd.spec()).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_storeconfig_replaces_what_was_stored() {
    let consul = support::Consul::start().await;
    storeconfig_replaces_what_was_stored(&consul.flags(), open(consul.spec()).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_with_an_empty_store_says_to_run_storeconfig() {
    let etcd = support::Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = pylon_output(&["--etcd", &format!("--etcd.endpoint={}", etcd.endpoint)], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("no static configuration") && err.contains("pylon storeconfig") && err.contains("--configfile"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_stored_value_names_its_kv_key_and_exits_2() {
    let etcd = support::Etcd::start().await;
    let spec = etcd.spec();
    let store = open(spec).await;
    store.put("traefik/static/entrypoints/http/address", ":eighty").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = pylon_output(&["--etcd", &format!("--etcd.endpoint={}", etcd.endpoint)], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("KV key traefik/static/entrypoints/http/address: \":eighty\" is not an address"), "{err}");
}

/// `scripts/quickstart.sh` as the README runs it, from a copy of the repository's `scripts/` and
/// `configs/` (the binary given, as after its build step): the first curl is a proxied 200, an
/// edit of the dynamic file changes the answer, and `storeconfig` on the store the replica holds
/// says what to do instead.
#[tokio::test(flavor = "multi_thread")]
async fn the_quickstart_proxies_its_upstream_and_follows_edits_of_its_dynamic_file() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = std::process::Command::new("cp")
        .args(["-r", &root.join("scripts").display().to_string(), &root.join("configs").display().to_string()])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(copy.success());
    let (http, web, upstream) = (free_port(), free_port(), free_port());
    let dynamic = dir.path().join("configs/quickstart-dynamic.toml");
    let text = std::fs::read_to_string(&dynamic).unwrap();
    assert!(text.contains("http://127.0.0.1:8081"), "the upstream the script starts");
    std::fs::write(&dynamic, text.replace("127.0.0.1:8081", &format!("127.0.0.1:{upstream}"))).unwrap();
    let data = dir.path().join("data");
    let child = std::process::Command::new("bash")
        .arg("scripts/quickstart.sh")
        .arg(format!("--entryPoints.http.address=127.0.0.1:{http}"))
        .arg(format!("--entryPoints.traefik.address=127.0.0.1:{web}"))
        .arg(format!("--datadir={}", data.display()))
        .env("PYLON_BIN", env!("CARGO_BIN_EXE_pylon"))
        .env("QUICKSTART_UPSTREAM_PORT", upstream.to_string())
        .current_dir(dir.path())
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("quickstart.log")).unwrap())
        .spawn()
        .unwrap();
    let group = child.id() as i32;
    let replica = Replica { child, ping: format!("http://127.0.0.1:{web}/ping") };
    let log = || std::fs::read_to_string(dir.path().join("quickstart.log")).unwrap_or_default();
    support::eventually("the quickstart answers /ping", Duration::from_secs(15), || async {
        matches!(get(&replica.ping).await, Ok((200, _)))
    })
    .await;
    let front = format!("http://127.0.0.1:{http}/");
    support::eventually("the first curl is a proxied 200", Duration::from_secs(5), || async {
        let reply = support::send("GET", &front, &[]).await;
        reply.is_ok_and(|r| r.status == 200 && r.body.contains("Hello from the upstream, through Pylon."))
    })
    .await;
    let reply = support::send("GET", &front, &[]).await.unwrap();
    assert_eq!(reply.headers["x-served-by"], "pylon quickstart", "{}", log());

    let text = std::fs::read_to_string(&dynamic).unwrap();
    std::fs::write(&dynamic, text.replace("\"pylon quickstart\"", "\"my edit\"")).unwrap();
    support::eventually("the edit is served within a second", Duration::from_secs(1), || async {
        let reply = support::send("GET", &front, &[]).await;
        reply.is_ok_and(|r| r.headers.get("x-served-by").is_some_and(|v| v == "my edit"))
    })
    .await;

    let routes = dir.path().join("routes.toml");
    let file = "[http.routers.r]\nrule = \"Path(`/`)\"\nservice = \"s\"\n\
                [http.services.s.loadBalancer]\nservers = [{ url = \"http://127.0.0.1:9\" }]\n";
    std::fs::write(&routes, file).unwrap();
    let args = ["storeconfig", "--dynamic", routes.to_str().unwrap(), "--datadir", data.to_str().unwrap()];
    let (code, _, err) = pylon_output(&args, dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("is open in another process (pid "), "{err}");
    assert!(err.contains("file provider") && !err.contains("Database already open"), "{err}");
    assert!(data.join("pylon.redb").is_file(), "the embedded store is one file under --datadir");
    // Ctrl-C stops the replica and the script's upstream together.
    support::signal_group(group, "INT");
    let mut replica = replica;
    let start = Instant::now();
    while replica.child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(12), "the quickstart did not stop on Ctrl-C:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    support::eventually("the upstream stopped too", Duration::from_secs(5), || async {
        std::net::TcpStream::connect(("127.0.0.1", upstream)).is_err()
    })
    .await;
}

#[test]
fn a_broken_config_names_file_line_and_column_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "logLevel = \"INFO\"\n[entryPoints.http]\naddress = \":80\"\n[entryPoints.http.redirect]\nentryPoint = \"https\"\n").unwrap();
    let (code, _, err) = pylon_output(&["storeconfig", "--dry-run", "-c", file.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("broken.toml:5:14") && err.contains("\"https\", which does not exist"), "{err}");

    std::fs::write(&file, "[entryPoints.http]\naddress = \":80\"\nadress = \":81\"\n[entryPoints.http.redirect\n")
        .unwrap();
    let (code, _, err) = pylon_output(&["-c", file.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("broken.toml:4:"), "a syntax error is located: {err}");
}

#[test]
fn a_traefik_yml_is_read_like_the_toml() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traefik.yml");
    let yaml = "entryPoints:\n  http:\n    address: \":80\"\n    http:\n      redirections:\n        entryPoint:\n          to: https\n";
    std::fs::write(&file, yaml).unwrap();
    let (code, _, err) = pylon_output(&["storeconfig", "--dry-run", "-c", file.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("traefik.yml:7:15") && err.contains("\"https\", which does not exist"), "{err}");

    std::fs::write(&file, format!("{yaml}  https:\n    address: \":443\"\n")).unwrap();
    let (code, out, err) = pylon_output(&["storeconfig", "--dry-run", "-c", file.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("entrypoints/https/address"), "{out}");
}

#[test]
fn unknown_keys_are_located_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[entryPoints.http]\naddress = \":80\"\nadress = \":81\"\n").unwrap();
    let (code, out, err) = pylon_output(&["storeconfig", "--dry-run", "-c", file.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("typo.toml:3:10") && err.contains("entrypoints.http.adress"), "{err}");
    assert!(out.contains("for the embedded store"), "without store flags or sections, the embedded store: {out}");
}

#[test]
fn acme_settings_that_cannot_work_are_named_and_traefik_defaults_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.toml");
    let base = "[entryPoints.https]\naddress = \":443\"\n[entryPoints.https.tls]\n[acme]\nentryPoint = \"https\"\n";
    let check = |extra: &str| {
        std::fs::write(&file, format!("{base}{extra}")).unwrap();
        pylon_output(&["storeconfig", "--dry-run", "-c", file.to_str().unwrap()], dir.path())
    };
    // The seed's form: onDemand without a policy, RSA keys, no challenge section.
    let (code, _, err) = check("onDemand = true\nkeyType = \"RSA4096\"\n");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("acme.onDemand is on but [acme.onDemandPolicy] has neither allow nor ask"), "{err}");
    assert!(err.contains("RSA4096") && err.contains("EC256"), "{err}");
    assert!(err.contains("using TLS-ALPN-01"), "{err}");
    let (code, _, err) =
        check("failureBackoff = \"10ms\"\n[acme.onDemandPolicy]\nallow = [\"*\"]\nask = \"ftp://x\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("acme.failureBackoff must be at least 1s"), "{err}");
    assert!(err.contains("\"*\" is not a name or *.parent pattern"), "{err}");
    assert!(err.contains("acme.onDemandPolicy.ask \"ftp://x\" is not an http(s) URL"), "{err}");
    assert!(err.contains("acme.toml:"), "errors are located: {err}");
}

#[test]
fn an_unreachable_store_is_named_within_a_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    for flags in [["--etcd", "--etcd.endpoint"], ["--consul", "--consul.endpoint"]] {
        let endpoint = format!("{}=127.0.0.1:{port}", flags[1]);
        let start = Instant::now();
        let (code, _, err) = pylon_output(&["storeconfig", "-c", SEED, flags[0], &endpoint], dir.path());
        assert_ne!(code, 0);
        assert!(err.contains(&format!("127.0.0.1:{port}")), "the error names the endpoint: {err}");
        assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_retries_an_unreachable_store_and_logs_each_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("run.log");
    let child = pylon()
        .args(["--etcd", &format!("--etcd.endpoint=127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let replica = Replica { child, ping: String::new() };
    support::eventually("two logged attempts", Duration::from_secs(15), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("attempt=2") && text.contains(&format!("127.0.0.1:{port}"))
    })
    .await;
    stop(replica);
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let dry = |envs: &[(&str, &str)], flags: &[&str]| {
        let mut cmd = pylon();
        cmd.args(["storeconfig", "--dry-run", "-c", SEED]).args(flags).current_dir(dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string()
    };
    assert!(dry(&[], &[]).ends_with("Consul at traefik-consul:8500"), "the file's [consul]");
    let env = [("PYLON_CONSUL_ENDPOINT", "127.0.0.1:1")];
    assert!(dry(&env, &[]).ends_with("Consul at 127.0.0.1:1"), "the environment over the file");
    assert!(dry(&env, &["--consul.endpoint=127.0.0.1:2"]).ends_with("Consul at 127.0.0.1:2"), "the flag over both");
    assert!(dry(&[("PYLON_ETCD", "1")], &[]).ends_with("etcd at 127.0.0.1:2379"), "PYLON_ETCD=1 picks etcd");
    let lines = {
        let out = pylon().args(["storeconfig", "--dry-run", "-c", SEED, "--logLevel=WARN"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(lines.contains("traefik/static/loglevel = WARN"), "a flag overrides a file key: {lines}");
}
