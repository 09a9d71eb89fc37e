use http::Request;

use crate::data::middleware::testing::{run, spec, Recorder};

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

const CORS: &str = r#"
[http.middlewares.m.headers]
accessControlAllowMethods = ["GET", "POST"]
accessControlAllowHeaders = ["X-Token"]
accessControlAllowOriginList = ["https://app.example"]
accessControlMaxAge = 600
accessControlExposeHeaders = ["X-Total"]
addVaryHeader = true
customResponseHeaders = { X-Custom = "yes" }
"#;

#[tokio::test]
async fn a_preflight_is_answered_here_and_never_forwarded() {
    let mut end = Recorder::default();
    let mut req = get("/api", &[("origin", "https://app.example"), ("access-control-request-method", "POST")]);
    *req.method_mut() = http::Method::OPTIONS;
    let r = run(CORS, req, false, &mut end).await;
    assert!(end.seen.is_empty(), "the preflight reached the upstream");
    let h = r.headers();
    assert_eq!(r.status(), 200);
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "X-Token");
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["content-length"], "0");
    assert!(h.get("x-custom").is_none() && h.get("vary").is_none(), "a preflight gets CORS headers only");
}

#[tokio::test]
async fn a_cors_response_gets_its_origin_and_vary_appended() {
    let mut end = Recorder { headers: vec![("vary", "Accept-Encoding")], ..Recorder::default() };
    let r = run(CORS, get("/", &[("origin", "https://app.example")]), false, &mut end).await;
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-expose-headers"], "X-Total");
    assert_eq!(h["vary"], "Accept-Encoding,Origin");
    assert_eq!(h["x-custom"], "yes");
    let r = run(CORS, get("/", &[("origin", "https://evil.example")]), false, &mut end).await;
    assert!(r.headers().get("access-control-allow-origin").is_none(), "an origin not listed");
}

#[tokio::test]
async fn custom_request_headers_set_delete_and_move_the_host() {
    let text = r#"
        [http.middlewares.m.headers.customRequestHeaders]
        X-Script-Name = "test"
        X-Secret = ""
        Host = "internal.example"
        X-Forwarded-For = ""
    "#;
    let mut end = Recorder::default();
    let req = get("https://public.example/x", &[("x-secret", "s"), ("x-forwarded-for", "6.6.6.6")]);
    run(text, req, true, &mut end).await;
    let seen = &end.seen[0];
    assert_eq!(seen.headers["x-script-name"], "test");
    assert!(seen.headers.get("x-secret").is_none() && seen.headers.get("x-forwarded-for").is_none());
    assert_eq!(seen.headers["host"], "internal.example");
    assert!(seen.uri.authority().is_none(), "the h2 authority would override Host");
    assert!(seen.extensions.get::<super::OmitForwardedFor>().is_some());
}

#[tokio::test]
async fn security_headers_replace_the_upstreams_and_custom_ones_come_last() {
    let text = r#"
        [http.middlewares.m.headers]
        frameDeny = true
        contentTypeNosniff = true
        stsSeconds = 31536000
        stsIncludeSubdomains = true
        stsPreload = true
        referrerPolicy = "no-referrer"
        customResponseHeaders = { X-Content-Type-Options = "", Server = "" }
    "#;
    let upstream = vec![("x-frame-options", "ALLOWALL"), ("server", "nginx"), ("x-content-type-options", "x")];
    let mut end = Recorder { headers: upstream, ..Recorder::default() };
    let r = run(text, get("/", &[]), true, &mut end).await;
    let h = r.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["strict-transport-security"], "max-age=31536000; includeSubDomains; preload");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h.get("x-content-type-options").is_none() && h.get("server").is_none(), "deleted by custom headers");
    let r = run(text, get("/", &[]), false, &mut end).await;
    assert!(r.headers().get("strict-transport-security").is_none(), "STS over plain HTTP");
}

#[tokio::test]
async fn a_host_outside_allowed_hosts_is_500_bad_host_with_the_custom_headers() {
    let text = r#"
        [http.middlewares.m.headers]
        allowedHosts = ["a.example", "a.example:8080"]
        frameDeny = true
        customResponseHeaders = { X-Custom = "yes" }
    "#;
    let mut end = Recorder::default();
    let r = run(text, get("/", &[("host", "evil.example")]), false, &mut end).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["x-custom"], "yes");
    assert!(r.headers().get("x-frame-options").is_none());
    assert!(end.seen.is_empty());
    let r = run(text, get("/", &[("host", "A.example:8080")]), false, &mut end).await;
    assert_eq!(r.status(), 200, "hosts compare without case, port included");
}

#[test]
fn a_headers_middleware_without_options_is_refused() {
    let errors = spec("[http.middlewares.m.headers]\nfoo = 1\n").unwrap_err();
    assert!(errors.iter().any(|e| e.contains("at least one option")), "{errors:?}");
    let errors = spec("[http.middlewares.m.headers]\naccessControlAllowOriginListRegex = [\"(\"]\n").unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("m.toml:2:") && e.contains("regular expression")), "{errors:?}");
}
