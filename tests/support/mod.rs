//! The test harness: real etcd and Consul servers on free loopback ports, started per test and
//! killed on drop; the `pylon` binary as a child process; a real HTTP client.
//! A missing server binary fails the test with the command that installs it.

#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use pylon::control::store::{etcd::EtcdOptions, StoreSpec};

/// A port nobody listens on right now, never handed out before in this test process, and below
/// the kernel's ephemeral range (32768 and up): a port from `bind(0)` can come back from the next
/// `bind(0)`, or be taken by an outbound connection before the server we give it to binds it.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: Mutex<Option<u32>> = Mutex::new(None);
    let mut next = NEXT.lock().unwrap();
    // Test binaries run one after another; starting each at its own offset keeps one binary's
    // lingering servers out of the next one's way.
    let cursor = next.get_or_insert_with(|| std::process::id().wrapping_mul(7919) % SPAN);
    for _ in 0..SPAN {
        let port = (LOW + *cursor % SPAN) as u16;
        *cursor += 1;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Fails loudly when a server binary is missing: the suite never skips.
pub fn require(binary: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
        .unwrap_or(false);
    assert!(found, "`{binary}` is not installed: run scripts/install-deps.sh (the tests need real servers)");
}

/// A child process killed (and reaped) on drop.
pub struct Process {
    pub child: Child,
    pub name: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over a real HTTP client: status and body, or the error text.
pub async fn get(url: &str) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| format!("{e}"))?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` until it returns true or `deadline` passes.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {deadline:?}");
}

/// Starts a server with `spawn(log)` and waits for `ready`; a server that exits at start (two
/// tests drew the same free port) is started again on new ports, up to three times. Failures
/// show the server's own log.
pub async fn start_server<R, F>(
    name: &str,
    dir: &Path,
    mut spawn: impl FnMut(std::fs::File) -> (Child, R),
    ready: F,
) -> (Process, R)
where
    F: Fn(&R) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>,
{
    let log = dir.join(format!("{name}.log"));
    for _attempt in 0..3 {
        let (child, info) = spawn(std::fs::File::create(&log).expect("server log"));
        let mut process = Process { child, name: name.into() };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if ready(&info).await {
                return (process, info);
            }
            if process.child.try_wait().ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if process.child.try_wait().ok().flatten().is_none() {
            break; // Running but never ready: no point trying other ports.
        }
    }
    panic!("{name} did not start; its log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// A single-member etcd cluster with fast elections.
pub struct Etcd {
    pub endpoint: String,
    /// Client, peer and metrics ports, kept for a restart.
    ports: (u16, u16, u16),
    dir: tempfile::TempDir,
    pub process: Process,
}

fn etcd_command(data: &Path, (client, peer, metrics): (u16, u16, u16), log: std::fs::File) -> Child {
    Command::new("etcd")
        .args(["--name", "t1", "--data-dir"])
        .arg(data)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("t1=http://127.0.0.1:{peer}"),
            "--listen-metrics-urls",
            &format!("http://127.0.0.1:{metrics}"),
            "--heartbeat-interval",
            "10",
            "--election-timeout",
            "100",
            "--log-level",
            "warn",
            "--logger",
            "zap",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start etcd")
}

fn etcd_ready(ports: &(u16, u16, u16)) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
    let health = format!("http://127.0.0.1:{}/health", ports.0);
    Box::pin(async move { matches!(get(&health).await, Ok((200, _))) })
}

impl Etcd {
    pub async fn start() -> Etcd {
        require("etcd");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let spawn = |log: std::fs::File| {
            let ports = (free_port(), free_port(), free_port());
            let _ = std::fs::remove_dir_all(&data);
            (etcd_command(&data, ports, log), ports)
        };
        let (process, ports) = start_server("etcd", dir.path(), spawn, etcd_ready).await;
        Etcd { endpoint: format!("127.0.0.1:{}", ports.0), ports, dir, process }
    }

    /// Kills etcd (SIGKILL) and leaves it down.
    pub fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }

    /// Stops etcd in its tracks (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        signal(&self.process.child, "STOP");
    }

    /// Lets a frozen etcd go on (SIGCONT).
    pub fn thaw(&self) {
        signal(&self.process.child, "CONT");
    }

    /// The sum of one counter family on etcd's `/metrics` (all label sets).
    pub async fn counter(&self, family: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.ports.2);
        let (_, text) = get(&url).await.expect("etcd metrics");
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Saves a snapshot of the data to `file` (`etcdctl snapshot save`).
    pub fn snapshot(&self, file: &Path) {
        let status = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint, "snapshot", "save"])
            .arg(file)
            .stdout(Stdio::null())
            .status()
            .expect("etcdctl");
        assert!(status.success(), "etcdctl snapshot save failed");
    }

    /// Stops etcd, replaces its data with `file` (`etcdctl snapshot restore`), as an operator
    /// restoring a backup does, and starts it again on the same ports.
    pub async fn restore(&mut self, file: &Path) {
        self.kill();
        let data = self.dir.path().join("data");
        std::fs::remove_dir_all(&data).unwrap();
        let peer = format!("http://127.0.0.1:{}", self.ports.1);
        let status = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(file)
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", "t1", "--initial-cluster", &format!("t1={peer}"), "--initial-advertise-peer-urls", &peer])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("etcdctl");
        assert!(status.success(), "etcdctl snapshot restore failed");
        self.restart().await;
    }

    /// Starts etcd again on the same ports and data, and waits until it is healthy.
    pub async fn restart(&mut self) {
        let data = self.dir.path().join("data");
        let ports = self.ports;
        let spawn = |log: std::fs::File| (etcd_command(&data, ports, log), ports);
        let (process, _) = start_server("etcd-restarted", self.dir.path(), spawn, etcd_ready).await;
        self.process = process;
    }

    /// The `pylon` flags that select this server.
    pub fn flags(&self) -> Vec<String> {
        vec!["--etcd".into(), format!("--etcd.endpoint={}", self.endpoint)]
    }

    pub fn spec(&self) -> StoreSpec {
        StoreSpec::Etcd(EtcdOptions { endpoints: vec![self.endpoint.clone()], ..Default::default() })
    }
}

/// A Consul dev agent. Sessions may have a TTL down to 1 s so that lease tests stay short.
pub struct Consul {
    pub endpoint: String,
    _dir: tempfile::TempDir,
    pub process: Process,
}

impl Consul {
    pub async fn start() -> Consul {
        require("consul");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let spawn = |log: std::fs::File| {
            let http = free_port();
            let child = Command::new("consul")
                .args(["agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1"])
                .arg(format!("-http-port={http}"))
                .args(["-dns-port=-1", "-grpc-port=-1"])
                .arg(format!("-server-port={}", free_port()))
                .arg(format!("-serf-lan-port={}", free_port()))
                .arg(format!("-serf-wan-port={}", free_port()))
                .arg(format!("-data-dir={}", data.display()))
                .args(["-log-level=warn", "-hcl", "session_ttl_min = \"1s\""])
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("start consul");
            (child, http)
        };
        // Ready once it has a leader, its node is in the catalog and the node's serfHealth check
        // is registered: a session asked for before that is refused ("Missing check 'serfHealth'
        // registration", seen in CI).
        let ready = |http: &u16| -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
            let leader = format!("http://127.0.0.1:{http}/v1/status/leader");
            let nodes = format!("http://127.0.0.1:{http}/v1/catalog/nodes");
            let checks = format!("http://127.0.0.1:{http}/v1/health/state/any");
            Box::pin(async move {
                matches!(get(&leader).await, Ok((200, body)) if !body.trim().trim_matches('"').is_empty())
                    && matches!(get(&nodes).await, Ok((200, body)) if body.contains("\"Node\""))
                    && matches!(get(&checks).await, Ok((200, body)) if body.contains("serfHealth"))
            })
        };
        let (process, http) = start_server("consul", dir.path(), spawn, ready).await;
        Consul { endpoint: format!("127.0.0.1:{http}"), _dir: dir, process }
    }

    /// The `pylon` flags that select this server.
    pub fn flags(&self) -> Vec<String> {
        vec!["--consul".into(), format!("--consul.endpoint={}", self.endpoint)]
    }

    /// `consul snapshot save FILE` or `consul snapshot restore FILE` against this agent.
    pub fn snapshot(&self, verb: &str, file: &Path) {
        let status = Command::new("consul")
            .args(["snapshot", verb, &format!("-http-addr=http://{}", self.endpoint)])
            .arg(file)
            .stdout(Stdio::null())
            .status()
            .expect("consul");
        assert!(status.success(), "consul snapshot {verb} failed");
    }

    pub fn spec(&self) -> StoreSpec {
        StoreSpec::Consul { endpoint: self.endpoint.clone(), token: None, tls: None }
    }
}

/// The `pylon` binary built for these tests.
pub fn pylon() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pylon"));
    cmd.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("PYLON_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs `pylon` to completion with a deadline: (exit code, stdout, stderr).
pub fn pylon_output(args: &[&str], dir: &Path) -> (i32, String, String) {
    let child = pylon().args(args).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30), "pylon {args:?} took {:?}", start.elapsed());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

/// Sends SIGTERM to a child.
pub fn terminate(child: &Child) {
    signal(child, "TERM");
}

/// Sends a signal (`TERM`, `STOP`, `CONT`) to a child.
pub fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status();
}

/// Sends a signal to every process of a process group, as a terminal's Ctrl-C does.
pub fn signal_group(group: i32, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), "--", &format!("-{group}")]).status();
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub mod auth;
pub mod etcd_cluster;
pub mod fixture;
pub mod gate;
pub mod grpc;
pub mod pebble;
pub mod prometheus;
pub mod relay;
pub mod replica;
pub mod tls;
pub mod upstream;

/// A response as tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// Sends `method url` with `headers` over a real HTTP/1.1 client (new connection each time).
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| format!("{e}"))?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// GET `url` with a `Host` header.
pub async fn get_host(url: &str, host: &str) -> Reply {
    send("GET", url, &[("host", host)]).await.unwrap_or_else(|e| panic!("GET {url} (Host {host}): {e}"))
}

/// The sum of the samples of `family` whose labels contain every one of `labels`, from an
/// exposition.
pub fn sum(exposition: &str, family: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{family}{{")) || line.starts_with(&format!("{family} ")))
        .filter(|line| labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
