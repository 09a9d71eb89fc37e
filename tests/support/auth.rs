//! A real forwardAuth server for middleware tests: `Authorization: Bearer good` is let in
//! (200 with `X-Auth-User: alice`, `X-Auth-Role: admin` and a `session` cookie); anything
//! else is refused (401, `WWW-Authenticate: Bearer`, `Location: /login`, body `denied by
//! auth`). It keeps the headers of every request it got.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

pub struct AuthServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
    task: JoinHandle<()>,
    /// Its connections, closed with it (a client's pooled connection would outlive the server).
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl AuthServer {
    pub async fn start() -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
        let log = seen.clone();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let open = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let log = log.clone();
                let connection = tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let line = format!("{} {}", req.method(), req.uri());
                            log.lock().unwrap().push((line, req.headers().clone()));
                            let good = req.headers().get("authorization").is_some_and(|v| v == "Bearer good");
                            let response = if good {
                                Response::builder()
                                    .header("x-auth-user", "alice")
                                    .header("x-auth-role", "admin")
                                    .header("set-cookie", "session=abc; Path=/")
                                    .body(Full::new(Bytes::new()))
                            } else {
                                Response::builder()
                                    .status(401)
                                    .header("www-authenticate", "Bearer")
                                    .header("location", "/login")
                                    .body(Full::new(Bytes::from_static(b"denied by auth")))
                            };
                            Ok::<_, Infallible>(response.unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                open.lock().unwrap().push(connection);
            }
        });
        AuthServer { addr, seen, task, connections }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The request line and headers of the last request it got.
    pub fn last(&self) -> (String, HeaderMap) {
        self.seen.lock().unwrap().last().cloned().expect("the auth server got no request")
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}
