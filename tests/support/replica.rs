//! A Pylon replica for proxy tests: the `pylon` binary with a static file giving it loopback
//! entrypoints (`web`; `websecure` with TLS; `redir`, redirecting to `websecure`; `traefik`
//! with `/ping`) and the given store flags; its log goes to a file shown when a test fails.

use std::{
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use super::{free_port, get, pylon};

pub struct Replica {
    pub child: Child,
    pub web: u16,
    pub websecure: u16,
    pub redir: u16,
    pub admin: u16,
    pub log: PathBuf,
    /// The static file, for `pylon acme` commands against the same store.
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// Starts a replica on `store_flags` with `extra` appended to its static file, and waits
    /// until `/ping` answers.
    pub async fn start(store_flags: &[String], extra: &str) -> Replica {
        Replica::start_with_web(store_flags, extra, free_port()).await
    }

    /// Like [`Replica::start`], with the plain entrypoint on a given port (the one an ACME test
    /// server validates HTTP-01 on).
    pub async fn start_with_web(store_flags: &[String], extra: &str, web: u16) -> Replica {
        Replica::start_with(store_flags, extra, web, &[]).await
    }

    /// Like [`Replica::start`], with the TLS entrypoint on a given port (where an ACME test
    /// server validates TLS-ALPN-01).
    pub async fn start_tls_at(store_flags: &[String], extra: &str, websecure: u16) -> Replica {
        Replica::launch(store_flags, extra, free_port(), websecure, &[]).await
    }

    /// Like [`Replica::start_with_web`], with environment variables.
    pub async fn start_with(store_flags: &[String], extra: &str, web: u16, env: &[(&str, &str)]) -> Replica {
        Replica::launch(store_flags, extra, web, free_port(), env).await
    }

    /// Starts a replica from a Traefik 1.7-style file of its own (`config`, written whole), its
    /// plain entrypoint at `web` and its `[web]` (API, dashboard, ping, metrics) at `admin`.
    pub async fn start_v1(store_flags: &[String], config: &str, web: u16, admin: u16) -> Replica {
        Replica::spawn(store_flags, config.to_string(), (web, 0, 0, admin), &[]).await
    }

    async fn launch(store_flags: &[String], extra: &str, web: u16, websecure: u16, env: &[(&str, &str)]) -> Replica {
        let (redir, admin) = (free_port(), free_port());
        let config = format!(
            r#"
logLevel = "INFO"
defaultEntryPoints = ["web", "websecure"]
[entryPoints.web]
address = "127.0.0.1:{web}"
[entryPoints.websecure]
address = "127.0.0.1:{websecure}"
[entryPoints.websecure.tls]
[entryPoints.redir]
address = "127.0.0.1:{redir}"
[entryPoints.redir.redirect]
entryPoint = "websecure"
[entryPoints.traefik]
address = "127.0.0.1:{admin}"
[ping]
entryPoint = "traefik"
{extra}
"#
        );
        Replica::spawn(store_flags, config, (web, websecure, redir, admin), env).await
    }

    /// Runs `pylon` on `config` and waits until `/ping` answers on `admin`.
    async fn spawn(
        store_flags: &[String],
        config: String,
        (web, websecure, redir, admin): (u16, u16, u16, u16),
        env: &[(&str, &str)],
    ) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pylon.toml");
        std::fs::write(&file, config).unwrap();
        let log = dir.path().join("pylon.log");
        let child = pylon()
            .arg(format!("--configfile={}", file.display()))
            .envs(env.iter().copied())
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(store_flags)
            .current_dir(dir.path())
            .stdout(std::fs::File::create(dir.path().join("access.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let replica = Replica { child, web, websecure, redir, admin, log, config: file, _dir: dir };
        let ping = format!("http://127.0.0.1:{admin}/ping");
        let start = Instant::now();
        while !matches!(get(&ping).await, Ok((200, _))) {
            assert!(start.elapsed() < Duration::from_secs(20), "replica never answered /ping:\n{}", replica.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        replica
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The events of `kind` (`certificate.issued`, `config.applied`, ...) this replica has
    /// emitted, as logged by its event bus: one line each, with the event's fields.
    pub fn events(&self, kind: &str) -> Vec<String> {
        let field = format!("event=\"{kind}\"");
        self.log().lines().filter(|line| line.contains(&field)).map(str::to_string).collect()
    }

    /// The plain entrypoint's URL for `path`.
    pub fn web(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.web)
    }

    /// Resident set size high-water mark, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// The replica's resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}
