//! The dashboard: one page and its script and style, built into the binary (no build
//! toolchain, no request to another host: its Content-Security-Policy allows this origin
//! only). It reads the API of the replica that serves it, every two seconds. Served under
//! `/dashboard/`; `/` redirects there (301 on an insecure API's entrypoint, 302 through a router
//! to `api@internal`, with `X-Forwarded-Prefix` in front as Traefik does).

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::data::proxy::ProxyBody;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

const POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                      base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The answer for `path` under the dashboard, if it is one of the dashboard's.
pub fn serve(path: &str, headers: &HeaderMap, permanent: bool) -> Option<Response<ProxyBody>> {
    let (body, kind) = match path {
        "/" => return Some(redirect(headers, permanent)),
        "/dashboard/" | "/dashboard/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/dashboard/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/dashboard/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(ProxyBody::full(body));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// The redirect to the page. Through a router, `X-Forwarded-Prefix` (a stripPrefix in front)
/// goes in front, when it is a plain path: `//evil.example` or `/\\evil` would send the browser
/// to another host (Traefik's GHSA-6qq8-5wq3-86rp). On the entrypoint itself it is ignored.
fn redirect(headers: &HeaderMap, permanent: bool) -> Response<ProxyBody> {
    let given = headers.get("x-forwarded-prefix").and_then(|v| v.to_str().ok()).unwrap_or("");
    let safe = given.starts_with('/')
        && !given.contains("//")
        && given.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_.-~".contains(&b));
    let prefix = if permanent || !safe { "" } else { given.trim_end_matches('/') };
    let location =
        HeaderValue::from_str(&format!("{prefix}/dashboard/")).unwrap_or(HeaderValue::from_static("/dashboard/"));
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = if permanent { StatusCode::MOVED_PERMANENTLY } else { StatusCode::FOUND };
    response.headers_mut().insert(header::LOCATION, location);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_come_from_the_binary_and_the_root_redirects() {
        let page = serve("/dashboard/", &HeaderMap::new(), true).unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("connect-src 'self'"));
        assert!(INDEX.contains("app.js") && SCRIPT.contains("../api/overview"));
        assert!(serve("/dashboard/nope.js", &HeaderMap::new(), true).is_none());
        assert!(serve("/dashboard", &HeaderMap::new(), true).is_none(), "as Traefik: no trailing slash, no page");
        let root = serve("/", &HeaderMap::new(), true).unwrap();
        assert_eq!((root.status().as_u16(), root.headers()[header::LOCATION].to_str().unwrap()), (301, "/dashboard/"));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-prefix", HeaderValue::from_static("/ops/"));
        let routed = serve("/", &headers, false).unwrap();
        assert_eq!(
            (routed.status().as_u16(), routed.headers()[header::LOCATION].to_str().unwrap()),
            (302, "/ops/dashboard/")
        );
    }
}
