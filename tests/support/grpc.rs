//! A real gRPC server (Python's grpcio, from Debian) on a free loopback port, and the framing
//! gRPC and gRPC-Web messages share.

use std::process::{Command, Stdio};

use super::{free_port, start_server, Process};

/// Debian's Python, which has `python3-grpcio` (another `python3` on the PATH may not).
const PYTHON: &str = "/usr/bin/python3";

pub struct GrpcServer {
    pub port: u16,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl GrpcServer {
    /// Starts `grpc_server.py`: `/echo.Echo/Say` answers `echo:` + the request, with the
    /// trailer `x-served-by: grpcio`; `/echo.Echo/Fail` fails with NOT_FOUND.
    pub async fn start() -> GrpcServer {
        let has_grpc = Command::new(PYTHON).args(["-c", "import grpc"]).status().is_ok_and(|s| s.success());
        assert!(has_grpc, "{PYTHON} cannot import grpc: run scripts/install-deps.sh (python3-grpcio)");
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/grpc_server.py");
        let spawn = |log: std::fs::File| {
            let port = free_port();
            let child = Command::new(PYTHON)
                .arg(script)
                .arg(port.to_string())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("python3 runs");
            (child, port)
        };
        let ready = |port: &u16| {
            let port = *port;
            Box::pin(async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() })
                as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        };
        let (process, port) = start_server("grpc", dir.path(), spawn, ready).await;
        GrpcServer { port, _dir: dir, _process: process }
    }

    pub fn url(&self) -> String {
        format!("h2c://127.0.0.1:{}", self.port)
    }
}

/// One length-prefixed message (flag 0: data).
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((message.len() as u32).to_be_bytes());
    out.extend(message);
    out
}

/// The frames of a body: (flag, payload) each.
pub fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let end = (5 + len).min(body.len());
        out.push((body[0], body[5..end].to_vec()));
        body = &body[end..];
    }
    out
}
