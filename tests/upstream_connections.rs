//! Pylon's connections to an upstream server, counted at the server: requests one after the
//! other share one kept connection; a server that closes after each answer is dialled again
//! without a failed request; concurrent requests open connections that the next ones reuse.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use support::fixture::on_etcd;

/// A keep-alive HTTP/1.1 connection to the replica, for requests one after the other.
async fn client(port: u16) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    sender
}

async fn get(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    sender.ready().await.unwrap();
    let request = http::Request::get(path).header("host", "h").body(Empty::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_one_after_the_other_share_one_upstream_connection() {
    let f = on_etcd("").await;
    let app = f.serve_app("PathPrefix(`/`)", "h", "/probe").await;
    let mut sender = client(f.replica.web).await;
    let before = app.accepted_connections();
    for i in 0..200 {
        let (status, body) = get(&mut sender, &format!("/n/{i}")).await;
        assert_eq!(status, 200);
        assert!(body.starts_with(&format!("app GET /n/{i}\n")), "request {i} reached the app as sent: {body}");
    }
    // The client's connection lives on one worker, whose pool may already hold the probe's.
    let opened = app.accepted_connections() - before;
    assert!(opened <= 1, "200 requests in a row opened {opened} upstream connections");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_closes_after_each_answer_is_dialled_again() {
    let f = on_etcd("").await;
    let app = f.serve_app("PathPrefix(`/`)", "h", "/probe").await;
    let mut sender = client(f.replica.web).await;
    let before = app.accepted_connections();
    for i in 0..30 {
        let (status, body) = get(&mut sender, "/close").await;
        assert_eq!((status, body.as_str()), (200, "app closing"), "request {i}");
        // Between requests the closed connection may still look ready: the next one must not fail.
        let (status, _) = get(&mut sender, "/after").await;
        assert_eq!(status, 200, "the request after close {i}");
    }
    let opened = app.accepted_connections() - before;
    assert!((30..=61).contains(&opened), "30 closing answers: {opened} upstream connections");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_open_connections_that_later_requests_reuse() {
    let f = on_etcd("").await;
    let app = f.serve_app("PathPrefix(`/`)", "h", "/probe").await;
    let mut senders = Vec::new();
    for _ in 0..12 {
        senders.push(client(f.replica.web).await);
    }
    let round = |senders: Vec<_>| async move {
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let answer = get(&mut s, "/slow/300").await;
                    (s, answer)
                })
            })
            .collect();
        let mut back = Vec::new();
        for task in tasks {
            let (s, (status, body)) = task.await.unwrap();
            assert_eq!((status, body.as_str()), (200, "app slow"));
            back.push(s);
        }
        back
    };
    let before = app.accepted_connections();
    let senders = round(senders).await;
    let first = app.accepted_connections() - before;
    // 12 at once: each needs a connection of its own (the probe's, at most one per worker, aside).
    assert!(first >= 10, "12 concurrent slow requests opened {first} upstream connections");
    let before = app.accepted_connections();
    let _ = round(senders).await;
    let again = app.accepted_connections() - before;
    assert!(again <= 2, "the second round reused the first round's connections, yet opened {again}");
}
