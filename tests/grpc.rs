//! gRPC through Pylon to a real gRPC server (grpcio) on `h2c://`: native gRPC over h2 with its
//! trailers, and gRPC-Web (binary and text) from HTTP/1.1 clients through the grpcWeb
//! middleware, its trailers turned into the body's last frame, and its CORS preflight.

mod support;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use support::{
    fixture::{self, on_etcd, Fixture},
    grpc::{frame, frames, GrpcServer},
};

/// Routes `grpc.example` to a fresh gRPC server, through `middlewares` (KV pairs in `defs`).
async fn routed(f: &Fixture, middlewares: &[&str], defs: &[(&str, &str)]) -> GrpcServer {
    let server = GrpcServer::start().await;
    let mut pairs = fixture::router("grpc", "Host(`grpc.example`)", "grpc");
    pairs.push(("http/services/grpc/loadBalancer/servers/0/url", server.url()));
    for (i, m) in middlewares.iter().enumerate() {
        pairs.push((fixture::leak(format!("http/routers/grpc/middlewares/{i}")), m.to_string()));
    }
    pairs.extend(defs.iter().map(|(k, v)| (fixture::leak(format!("http/middlewares/{k}")), v.to_string())));
    f.write(&pairs).await;
    f.within_a_second("grpc.example", "/", "the route", |r| r.status != 404).await;
    server
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
    trailers: Option<http::HeaderMap>,
}

/// Sends `method path` with `headers` and `body` to the plain entrypoint as a request for
/// `grpc.example`, over HTTP/2 by prior knowledge (`h2`) or HTTP/1.1, on a new connection.
async fn call(f: &Fixture, h2: bool, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut request = http::Request::builder().method(method);
    request = match h2 {
        true => request.uri(format!("http://grpc.example{path}")),
        false => request.uri(path).header("host", "grpc.example"),
    };
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", f.replica.web)).await.unwrap();
    let io = TokioIo::new(stream);
    let sent = async {
        if h2 {
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            sender.send_request(request).await
        }
    };
    let response =
        tokio::time::timeout(Duration::from_secs(10), sent).await.expect("answered within 10 s").expect("a response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the whole body");
    let trailers = collected.trailers().cloned();
    Answer { status: parts.status.as_u16(), headers: parts.headers, body: collected.to_bytes().to_vec(), trailers }
}

/// Base64 as gRPC-Web text responses come: padded chunks one after another.
fn unbase64(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = match rest.iter().position(|b| *b == b'=') {
            Some(at) => at + rest[at..].iter().take_while(|b| **b == b'=').count(),
            None => rest.len(),
        };
        out.extend(base64::engine::general_purpose::STANDARD.decode(&rest[..end]).expect("base64"));
        rest = &rest[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn native_grpc_reaches_an_h2c_server_and_its_trailers_come_back() {
    let f = on_etcd("").await;
    let _server = routed(&f, &[], &[]).await;
    let headers = [("content-type", "application/grpc"), ("te", "trailers")];
    let answer = call(&f, true, "POST", "/echo.Echo/Say", &headers, frame(b"hi")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(frames(&answer.body), [(0, b"echo:hi".to_vec())]);
    let trailers = answer.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-served-by"], "grpcio");

    let answer = call(&f, true, "POST", "/echo.Echo/Fail", &headers, frame(b"hi")).await;
    let status = answer.trailers.as_ref().and_then(|t| t.get("grpc-status")).or(answer.headers.get("grpc-status"));
    assert_eq!(status.map(|s| s.to_str().unwrap()), Some("5"), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_calls_become_grpc_and_their_trailers_the_last_frame() {
    let f = on_etcd("").await;
    let defs = [("web/grpcWeb/allowOrigins/0", "https://app.example")];
    let _server = routed(&f, &["web"], &defs).await;
    let origin = ("origin", "https://app.example");

    // Binary, over HTTP/1.1 as browsers' gRPC-Web clients speak it.
    let headers = [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1"), origin];
    let answer = call(&f, false, "POST", "/echo.Echo/Say", &headers, frame(b"hi")).await;
    assert_eq!(answer.status, 200);
    // grpcio answers `application/grpc`, whatever the request's suffix.
    assert_eq!(answer.headers["content-type"], "application/grpc-web");
    assert_eq!(answer.headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(answer.headers["access-control-allow-credentials"], "true");
    let exposed = answer.headers["access-control-expose-headers"].to_str().unwrap();
    assert!(exposed.ends_with("grpc-status, grpc-message") && exposed.contains("Content-Type"), "{exposed}");
    let got = frames(&answer.body);
    assert_eq!(got.len(), 2, "a message and the trailers: {got:?}");
    assert_eq!(got[0], (0, b"echo:hi".to_vec()));
    let (flag, trailers) = (&got[1].0, String::from_utf8(got[1].1.clone()).unwrap());
    assert_eq!(*flag, 0x80);
    assert!(trailers.contains("grpc-status: 0\r\n") && trailers.contains("x-served-by: grpcio\r\n"), "{trailers:?}");

    // Text: base64 both ways.
    let body = base64::engine::general_purpose::STANDARD.encode(frame(b"text")).into_bytes();
    let headers = [("content-type", "application/grpc-web-text"), ("accept", "application/grpc-web-text"), origin];
    let answer = call(&f, false, "POST", "/echo.Echo/Say", &headers, body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/grpc-web-text");
    let got = frames(&unbase64(&answer.body));
    assert_eq!(got[0], (0, b"echo:text".to_vec()));
    assert_eq!(got.last().map(|f| f.0), Some(0x80));

    // A failure with no message: its status in the head, an empty trailers frame in the body.
    let headers = [("content-type", "application/grpc-web"), origin];
    let answer = call(&f, false, "POST", "/echo.Echo/Fail", &headers, frame(b"x")).await;
    assert_eq!(answer.headers["grpc-status"], "5");
    assert_eq!(answer.headers["grpc-message"], "no such thing");
    assert_eq!(frames(&answer.body), [(0x80, Vec::new())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_preflights_are_answered_for_allowed_origins_only() {
    let f = on_etcd("").await;
    let defs = [("web/grpcWeb/allowOrigins/0", "https://app.example")];
    let _server = routed(&f, &["web"], &defs).await;
    let ask = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-grpc-web,content-type"),
        ]
    };
    let answer = call(&f, false, "OPTIONS", "/echo.Echo/Say", &ask("https://app.example"), Vec::new()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(answer.headers["access-control-allow-methods"], "POST");
    assert_eq!(answer.headers["access-control-allow-headers"], "X-Grpc-Web, Content-Type");
    assert_eq!(answer.headers["access-control-max-age"], "600");
    assert!(answer.body.is_empty());
    let vary: Vec<&str> = answer.headers.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(vary, ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]);

    let answer = call(&f, false, "OPTIONS", "/echo.Echo/Say", &ask("https://evil.example"), Vec::new()).await;
    assert_eq!(answer.status, 200);
    assert!(answer.headers.get("access-control-allow-origin").is_none(), "{:?}", answer.headers);
}
