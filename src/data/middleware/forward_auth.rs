//! `forwardAuth`: every request is first asked about at `address` (a GET with the client's
//! headers and `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, `-For`; no body; redirects not
//! followed; 30 s at most). A 2xx lets the request go on, with the `authResponseHeaders` (and
//! those matching `authResponseHeadersRegex`) copied from the answer into it, replacing the
//! client's; anything else is sent back to the client as the auth server gave it (a relative
//! `Location` made absolute against `address` unless `preserveLocationHeader`), and the upstream
//! never sees the request. An auth server that cannot be reached is 500.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use serde::Deserialize;

use super::{spec::Pattern, Next};
use crate::{config::Checker, data::proxy::ProxyBody, data::upstream::Upstream};

/// How long the auth server may take to answer, body included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest auth answer read when `maxResponseBodySize` is not set (Traefik reads any).
pub const DEFAULT_MAX_RESPONSE: usize = 1024 * 1024;

/// The client auth requests go out with: its own, verifying https against the system's roots
/// whatever `serversTransport` says (`insecureSkipVerify` there must not let a forged auth
/// server in).
fn client() -> &'static Upstream {
    static CLIENT: std::sync::OnceLock<Upstream> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        Upstream::new(&crate::config::transport::Transport::default())
            .unwrap_or_else(|_| unreachable!("the default transport names no CA file"))
    })
}

#[derive(Debug, Default, Deserialize)]
struct Raw {
    address: Option<String>,
    tls: Option<toml::Value>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    trustforwardheader: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    authresponseheaders: Option<Vec<String>>,
    authresponseheadersregex: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    authrequestheaders: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    addauthcookiestoresponse: Option<Vec<String>>,
    headerfield: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    forwardbody: Option<bool>,
    maxbodysize: Option<toml::Value>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    maxresponsebodysize: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    preservelocationheader: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    preserverequestmethod: Option<bool>,
    authsigninurl: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub address: Uri,
    /// `trustForwardHeader`: unset (Traefik's legacy behaviour), false or true.
    pub trust: Option<bool>,
    pub response_headers: Vec<HeaderName>,
    pub response_regex: Option<Pattern>,
    /// Empty: every header goes to the auth server.
    pub request_headers: Vec<HeaderName>,
    pub cookies: Vec<String>,
    pub max_response: Option<u64>,
    pub preserve_location: bool,
    pub preserve_method: bool,
    pub signin: Option<HeaderValue>,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let text = raw.address.unwrap_or_default();
    let address = match text.parse::<Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => uri,
        _ => {
            c.error(
                &format!("{path}.address"),
                format!("{} is not an http:// or https:// URL", crate::limits::shown(&text)),
            );
            return None;
        }
    };
    if raw.tls.is_some() {
        c.error(
            &format!("{path}.tls"),
            "forwardAuth.tls (a CA, a client certificate) is not implemented yet; an https address is verified against the system's roots",
        );
        return None;
    }
    if raw.forwardbody == Some(true) {
        c.error(
            &format!("{path}.forwardbody"),
            "forwardBody is not implemented yet: the auth server would decide without the body",
        );
        return None;
    }
    if raw.maxbodysize.is_some() {
        c.warn(&format!("{path}.maxbodysize"), "maxBodySize only applies with forwardBody; ignored");
    }
    if raw.headerfield.is_some() {
        c.warn(&format!("{path}.headerfield"), "forwardAuth.headerField names the user in Traefik's access log only; Pylon's access log has no user yet; ignored");
    }
    let names = |list: Option<Vec<String>>, key: &str, c: &mut Checker| {
        let trimmed: Vec<String> = list.unwrap_or_default().iter().map(|n| n.trim().to_string()).collect();
        super::spec::header_names(&trimmed, &format!("{path}.{key}"), c)
    };
    let response_headers = names(raw.authresponseheaders, "authresponseheaders", c)?;
    let request_headers = names(raw.authrequestheaders, "authrequestheaders", c)?;
    let response_regex = match raw.authresponseheadersregex.filter(|r| !r.is_empty()) {
        Some(text) => Some(Pattern::compile(&text, &format!("{path}.authresponseheadersregex"), c)?),
        None => None,
    };
    let signin = match raw.authsigninurl.filter(|s| !s.is_empty()) {
        None => None,
        Some(url) => match HeaderValue::from_str(&url) {
            Ok(value) => Some(value),
            Err(_) => {
                c.error(&format!("{path}.authsigninurl"), "authSignInURL cannot be sent in a header");
                return None;
            }
        },
    };
    Some(Spec {
        address,
        trust: raw.trustforwardheader,
        response_headers,
        response_regex,
        request_headers,
        cookies: raw.addauthcookiestoresponse.unwrap_or_default(),
        max_response: raw.maxresponsebodysize,
        preserve_location: raw.preservelocationheader.unwrap_or(false),
        preserve_method: raw.preserverequestmethod.unwrap_or(false),
        signin,
    })
}

/// What the auth request never carries (Traefik's list: note `Trailers`, and that
/// `Proxy-Authorization` is passed on).
const HOP: [&str; 8] =
    ["connection", "keep-alive", "te", "trailers", "transfer-encoding", "upgrade", "content-length", "host"];

const FORWARDED: [&str; 11] = [
    "x-forwarded-proto",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-prefix",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    "x-real-ip",
];

pub struct ForwardAuth {
    spec: Spec,
    upstream: Upstream,
}

impl ForwardAuth {
    pub fn new(spec: &Spec) -> ForwardAuth {
        ForwardAuth { spec: spec.clone(), upstream: client().clone() }
    }

    pub async fn handle(&self, mut req: super::Req, next: Next<'_>) -> Response<ProxyBody> {
        let ask = self.auth_request(&req, next.conn);
        let limit = self.spec.max_response.map_or(DEFAULT_MAX_RESPONSE, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let asked = async {
            let (parts, body) =
                self.upstream.client.request(ask).await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?.into_parts();
            match Limited::new(body, limit).collect().await {
                Ok(body) => Ok((parts, body.to_bytes())),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::UNAUTHORIZED),
                Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR),
            }
        };
        let (parts, body) = match tokio::time::timeout(TIMEOUT, asked).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(status)) => return empty(status),
            Err(_) => {
                tracing::warn!(address = %self.spec.address, "forwardAuth: the auth server did not answer in time");
                return empty(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        if !parts.status.is_success() {
            return self.refusal(parts, body, req.method());
        }
        let headers = req.headers_mut();
        for name in &self.spec.response_headers {
            headers.remove(name);
            for value in parts.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(regex) = &self.spec.response_regex {
            let matching = |name: &HeaderName| regex.0.is_match(&canonical(name.as_str()));
            let doomed: Vec<HeaderName> = headers.keys().filter(|n| matching(n)).cloned().collect();
            for name in doomed {
                headers.remove(&name);
            }
            for (name, value) in parts.headers.iter().filter(|(n, _)| matching(n)) {
                headers.append(name.clone(), value.clone());
            }
        }
        let cookies: Vec<&HeaderValue> = parts.headers.get_all(header::SET_COOKIE).iter().collect();
        let mut response = next.run(req).await;
        if !cookies.is_empty() {
            self.merge_cookies(&cookies, response.headers_mut());
        }
        response
    }

    fn auth_request<B>(
        &self,
        req: &Request<B>,
        conn: crate::data::proxy::Connection,
    ) -> Request<crate::data::upstream::Body> {
        let mut headers = req.headers().clone();
        let named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        for name in named.iter().map(String::as_str).chain(HOP) {
            headers.remove(name);
        }
        if self.spec.trust == Some(false) {
            let underscored: Vec<HeaderName> = headers
                .keys()
                .filter(|n| FORWARDED.contains(&n.as_str().replace('_', "-").as_str()))
                .cloned()
                .collect();
            for name in underscored {
                headers.remove(name);
            }
        }
        if !self.spec.request_headers.is_empty() {
            let kept = std::mem::take(&mut headers);
            for name in &self.spec.request_headers {
                for value in kept.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let host = crate::data::proxy::host_of(req).to_string();
        let ip = conn.peer.ip().to_string();
        let uri = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        let proto = if conn.tls { "https" } else { "http" };
        let port = match super::redirect::split_host(&host).1.strip_prefix(':') {
            Some(port) => port.to_string(),
            None => if conn.tls { "443" } else { "80" }.to_string(),
        };
        let replace = self.spec.trust != Some(true);
        let prior: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        let xff = match (replace, prior.is_empty()) {
            (false, false) => format!("{}, {ip}", prior.join(", ")),
            _ => ip,
        };
        set(&mut headers, "x-forwarded-for", &xff, true);
        set(&mut headers, "x-forwarded-method", req.method().as_str(), replace);
        set(&mut headers, "x-forwarded-proto", proto, replace);
        set(&mut headers, "x-forwarded-host", &host, replace);
        set(&mut headers, "x-forwarded-uri", &uri, replace);
        set(&mut headers, "x-forwarded-port", &port, self.spec.trust == Some(false));
        if self.spec.trust != Some(false) {
            // What Traefik's entrypoint sets before its middlewares run.
            set(&mut headers, "x-real-ip", &conn.peer.ip().to_string(), false);
        }
        let method = if self.spec.preserve_method { req.method().clone() } else { Method::GET };
        let mut ask = Request::new(Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync());
        *ask.method_mut() = method;
        *ask.uri_mut() = self.spec.address.clone();
        *ask.headers_mut() = headers;
        ask
    }

    /// The auth server's refusal, as the client gets it.
    fn refusal(&self, parts: http::response::Parts, body: Bytes, method: &Method) -> Response<ProxyBody> {
        if let (Some(signin), StatusCode::UNAUTHORIZED) = (&self.spec.signin, parts.status) {
            let escaped =
                signin.to_str().unwrap_or("").replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;");
            let link = format!("<a href=\"{escaped}\">Found</a>.\n\n");
            let body = if method == Method::GET { link } else { String::new() };
            let mut response = crate::data::proxy::error::text(StatusCode::FOUND, body);
            if method == Method::GET || method == Method::HEAD {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            } else {
                response.headers_mut().remove(header::CONTENT_TYPE);
            }
            response.headers_mut().insert(header::LOCATION, signin.clone());
            return response;
        }
        let mut response = Response::new(ProxyBody::full(body));
        *response.status_mut() = parts.status;
        let out = response.headers_mut();
        for (name, value) in &parts.headers {
            out.append(name.clone(), value.clone());
        }
        for name in ["connection", "keep-alive", "te", "trailers", "transfer-encoding", "upgrade"] {
            out.remove(name);
        }
        if let Some(location) = parts.headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) {
            let location =
                if self.spec.preserve_location { location.to_string() } else { resolve(&self.spec.address, location) };
            match HeaderValue::from_str(&location) {
                Ok(value) => drop(out.insert(header::LOCATION, value)),
                Err(_) => return empty(StatusCode::INTERNAL_SERVER_ERROR),
            }
        }
        response
    }

    /// `addAuthCookiesToResponse`: the auth server's cookies of those names replace the
    /// upstream's.
    fn merge_cookies(&self, auth: &[&HeaderValue], out: &mut HeaderMap) {
        let name_of =
            |v: &HeaderValue| v.to_str().ok().and_then(|c| c.split_once('=')).map(|(n, _)| n.trim().to_string());
        let listed = |v: &HeaderValue| name_of(v).is_some_and(|n| self.spec.cookies.contains(&n));
        let kept: Vec<HeaderValue> = out.get_all(header::SET_COOKIE).iter().filter(|v| !listed(v)).cloned().collect();
        out.remove(header::SET_COOKIE);
        for cookie in kept.into_iter().chain(auth.iter().filter(|v| listed(v)).map(|v| (*v).clone())) {
            out.append(header::SET_COOKIE, cookie);
        }
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str, replace: bool) {
    if replace || !headers.contains_key(name) {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = status;
    response
}

/// A header name as Go canonicalizes it (`x-auth-user` → `X-Auth-User`), which is what
/// Traefik matches `authResponseHeadersRegex` against.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| first.to_ascii_uppercase().to_string() + chars.as_str())
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// `location` made absolute against `base`, as a browser would resolve it.
fn resolve(base: &Uri, location: &str) -> String {
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let scheme_of = location.split_once("://").map(|(s, _)| s);
    let absolute = scheme_of.is_some_and(|s| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if absolute {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{authority}{dir}/{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_locations_resolve_against_the_auth_address() {
        let base: Uri = "http://auth:9000/oauth/verify?x=1".parse().unwrap();
        assert_eq!(resolve(&base, "/login"), "http://auth:9000/login");
        assert_eq!(resolve(&base, "start"), "http://auth:9000/oauth/start");
        assert_eq!(resolve(&base, "https://idp.example/a"), "https://idp.example/a");
        assert_eq!(resolve(&base, "//idp.example/a"), "http://idp.example/a");
        assert_eq!(resolve(&base, "login?next=http://x"), "http://auth:9000/oauth/login?next=http://x");
    }

    #[test]
    fn header_names_canonicalize_as_go_does() {
        assert_eq!(canonical("x-auth-user"), "X-Auth-User");
        assert_eq!(canonical("www-authenticate"), "Www-Authenticate");
    }
}
