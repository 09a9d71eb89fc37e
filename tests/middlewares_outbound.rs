//! Middlewares that call other servers or rewrite bodies (forwardAuth with a real auth server,
//! errors with a real error-page service, compress with real decoders), configured in real
//! etcd, through a real replica to an echo upstream.

mod support;

use std::io::Read;

use support::{
    auth::AuthServer,
    fixture::{leak, on_etcd, request, routed, router, servers},
    upstream::Upstream,
};

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_asks_the_auth_server_and_passes_on_what_it_says() {
    let auth = AuthServer::start().await;
    let f = on_etcd("").await;
    let address = auth.url("/verify?realm=app");
    let defs = [
        ("strip/stripPrefix/prefixes/0", "/api"),
        ("ask/forwardAuth/address", address.as_str()),
        ("ask/forwardAuth/authResponseHeaders/0", "X-Auth-User"),
        ("ask/forwardAuth/authResponseHeadersRegex", "^X-Auth-R"),
        ("ask/forwardAuth/addAuthCookiesToResponse/0", "session"),
    ];
    let app = routed(&f, "guarded.example", &["strip", "ask"], &defs).await;
    let before = app.hits();

    let r = request(&f, "POST", "guarded.example", "/api/orders?id=7", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (401, "denied by auth"));
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(r.headers["location"].to_str().unwrap(), auth.url("/login"), "made absolute against the address");
    assert_eq!(app.hits(), before, "a refused request reached the upstream");
    let (line, asked) = auth.last();
    assert_eq!(line, "GET /verify?realm=app", "the auth request is a GET of the address");
    assert_eq!(asked["x-forwarded-method"], "POST");
    assert_eq!(asked["x-forwarded-uri"], "/orders?id=7", "the URI as earlier middlewares left it");
    assert_eq!(asked["x-forwarded-host"], "guarded.example");
    assert_eq!(asked["x-forwarded-proto"], "http");
    assert_eq!(asked["x-forwarded-for"], "127.0.0.1");

    let spoof = [("authorization", "Bearer good"), ("x-auth-user", "mallory"), ("x-auth-role", "root")];
    let r = request(&f, "GET", "guarded.example", "/api/orders", &spoof).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("app GET /orders\n"), "{}", r.body);
    assert!(r.body.contains("x-auth-user: alice") && !r.body.contains("mallory"), "{}", r.body);
    assert!(r.body.contains("x-auth-role: admin") && !r.body.contains("root"), "{}", r.body);
    assert!(r.headers.get_all("set-cookie").iter().any(|c| c == "session=abc; Path=/"), "{:?}", r.headers);

    drop(auth);
    let r = request(&f, "GET", "guarded.example", "/api/orders", &[("authorization", "Bearer good")]).await;
    assert_eq!(r.status, 500, "an auth server that is gone lets nobody in");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_replace_caught_statuses_with_a_page_from_another_service() {
    let f = on_etcd("").await;
    let pages = Upstream::start("pages").await;
    let mut pairs = router("pagesonly", "Host(`pages.internal`)", "pages");
    pairs.extend(servers("pages", &[&pages]));
    f.write(&pairs).await;
    let defs = [
        ("oops/errors/status/0", "500-599"),
        ("oops/errors/status/1", "404"),
        ("oops/errors/statusRewrites/404", "410"),
        ("oops/errors/service", "pages"),
        ("oops/errors/query", "/err/{status}?was={originalStatus}&url={url}"),
    ];
    let _app = routed(&f, "shop.example", &["oops"], &defs).await;

    let r = request(&f, "GET", "shop.example", "/status/503", &[]).await;
    assert_eq!(r.status, 503, "the caught status stays");
    assert!(
        r.body.starts_with("pages GET /err/503?was=503&url=http%3A%2F%2Fshop.example%2Fstatus%2F503\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("host: shop.example"), "the client's host: {}", r.body);
    let r = request(&f, "GET", "shop.example", "/status/404", &[]).await;
    assert_eq!(r.status, 410, "rewritten");
    assert!(r.body.starts_with("pages GET /err/410?was=404"), "{}", r.body);
    let r = request(&f, "GET", "shop.example", "/status/302", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (302, "app status 302"), "not caught");

    f.write(&[(leak("http/middlewares/oops/errors/service".into()), "gone".into())]).await;
    f.within_a_second("shop.example", "/", "the router disabled", |r| r.status == 404).await;
    assert!(f.replica.log().contains("which does not exist or was rejected"), "{}", f.replica.log());
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => drop(flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap()),
        "br" => drop(brotli::Decompressor::new(body, 4096).read_to_end(&mut out).unwrap()),
        "zstd" => out = zstd::decode_all(body).unwrap(),
        other => panic!("{other}"),
    }
    out
}

/// GETs `path` with `Accept-Encoding: accept`, returning the status, `Content-Encoding` and
/// the raw body bytes.
async fn fetch(url: &str, host: &str, accept: &str) -> (http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::get(url).header("host", host).header("accept-encoding", accept);
    let response = client.request(req.body(http_body_util::Empty::new()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn compress_encodes_large_bodies_as_the_client_accepts() {
    let f = on_etcd("").await;
    let _app = routed(&f, "big.example", &["zip"], &[("zip/compress", "true")]).await;
    let url = f.replica.web("/bytes/200000");
    for (accept, expected) in [("gzip", "gzip"), ("br;q=0.9, zstd", "zstd"), ("br", "br"), ("gzip;q=0.5, br", "br")] {
        let (headers, body) = fetch(&url, "big.example", accept).await;
        assert_eq!(headers["content-encoding"], expected, "{accept}");
        assert!(headers.get("content-length").is_none(), "{accept}");
        assert!(headers.get_all("vary").iter().any(|v| v == "Accept-Encoding"));
        assert!(body.len() < 10_000, "{accept}: {} bytes", body.len());
        assert_eq!(decode(expected, &body), vec![b'x'; 200_000], "{accept}");
    }
    let (headers, body) = fetch(&url, "big.example", "identity").await;
    assert!(headers.get("content-encoding").is_none() && body.len() == 200_000);
    let (headers, body) = fetch(&f.replica.web("/small"), "big.example", "gzip").await;
    assert!(headers.get("content-encoding").is_none(), "under 1024 bytes: {}", String::from_utf8_lossy(&body));
    let (headers, _) = fetch(&f.replica.web("/drip/1"), "big.example", "gzip").await;
    assert!(headers.get("content-encoding").is_none(), "a stream slower than the decision goes as it is");
}

/// POSTs `body` to `path` with `host`; the status and the answer's body.
async fn post(url: &str, host: &str, body: Vec<u8>) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(url).header("host", host).body(http_body_util::Full::new(body.into())).unwrap();
    let response = client.request(req).await.unwrap();
    let status = response.status().as_u16();
    (status, String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn buffering_bounds_what_goes_up_and_what_comes_back() {
    let f = on_etcd("").await;
    let defs = [("buf/buffering/maxRequestBodyBytes", "1000"), ("buf/buffering/maxResponseBodyBytes", "100000")];
    let app = routed(&f, "held.example", &["buf"], &defs).await;
    let before = app.hits();
    assert_eq!(
        post(&f.replica.web("/upload"), "held.example", vec![b'a'; 2000]).await,
        (413, "Request Entity Too Large".into())
    );
    assert_eq!(app.hits(), before, "a body over the limit reached the upstream");
    assert_eq!(post(&f.replica.web("/upload"), "held.example", vec![b'a'; 1000]).await, (200, "1000".into()));
    let r = request(&f, "GET", "held.example", "/bytes/200000", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (500, "Internal Server Error"), "an answer over the limit");
    let r = request(&f, "GET", "held.example", "/bytes/50000", &[]).await;
    assert_eq!((r.status, r.body.len()), (200, 50000));
}

#[tokio::test(flavor = "multi_thread")]
async fn content_type_sniffs_what_the_upstream_left_out() {
    let f = on_etcd("").await;
    let _sniffed = routed(&f, "sniffed.example", &["sniff"], &[("sniff/contentType", "")]).await;
    let _plain = routed(&f, "plain.example", &[], &[]).await;
    let r = request(&f, "GET", "sniffed.example", "/page", &[]).await;
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    assert!(r.body.starts_with("app GET /page\n"), "the body is intact: {}", r.body);
    let r = request(&f, "GET", "plain.example", "/page", &[]).await;
    assert!(r.headers.get("content-type").is_none(), "Traefik v3 sends a missing Content-Type as missing");
}
