//! A three-member etcd cluster on loopback, with fast elections, whose members a test can
//! freeze (SIGSTOP: connections stay open, nothing is answered) one at a time.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pylon::control::store::{etcd::EtcdOptions, StoreSpec};

use super::{free_port, get, require, signal, Process};

pub struct Member {
    pub endpoint: String,
    pub process: Process,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts three members and waits until every one reports a healthy cluster.
    pub async fn start() -> EtcdCluster {
        require("etcd");
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("m{i}.log"))).unwrap();
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.path().join(format!("m{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--log-level", "warn", "--logger", "zap"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            members.push(Member {
                endpoint: format!("127.0.0.1:{client}"),
                process: Process { child, name: format!("etcd m{i}") },
            });
        }
        let cluster = EtcdCluster { members, _dir: dir };
        let start = Instant::now();
        for member in &cluster.members {
            let health = format!("http://{}/health", member.endpoint);
            while !matches!(get(&health).await, Ok((200, _))) {
                let logs: Vec<String> = (0..3)
                    .map(|i| std::fs::read_to_string(cluster._dir.path().join(format!("m{i}.log"))).unwrap_or_default())
                    .collect();
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "the etcd cluster did not form:\n{}",
                    logs.join("\n")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    /// Every member's endpoint, in order: `--etcd.endpoint` takes them as given.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// A client of the members other than `skip`.
    pub fn spec_without(&self, skip: usize) -> StoreSpec {
        let endpoints = self.endpoints().into_iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, e)| e).collect();
        StoreSpec::Etcd(EtcdOptions { endpoints, ..Default::default() })
    }

    /// A member that is not the leader (etcd's `etcd_server_is_leader` gauge).
    pub async fn follower(&self) -> usize {
        for (i, member) in self.members.iter().enumerate() {
            let (_, metrics) = get(&format!("http://{}/metrics", member.endpoint)).await.unwrap();
            if metrics.lines().any(|l| l == "etcd_server_is_leader 0") {
                return i;
            }
        }
        panic!("every member claims to lead");
    }

    /// The endpoints with member `first` moved to the front.
    pub fn endpoints_from(&self, first: usize) -> Vec<String> {
        let mut endpoints = self.endpoints();
        let chosen = endpoints.remove(first);
        endpoints.insert(0, chosen);
        endpoints
    }

    /// Stops member `i` in its tracks (SIGSTOP).
    pub fn freeze(&self, i: usize) {
        signal(&self.members[i].process.child, "STOP");
    }

    pub fn thaw(&self, i: usize) {
        signal(&self.members[i].process.child, "CONT");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // A frozen process ignores nothing but SIGKILL, which Process sends; thaw first anyway
        // so that its sockets close promptly.
        for i in 0..self.members.len() {
            self.thaw(i);
        }
    }
}
