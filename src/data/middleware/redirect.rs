//! `redirectScheme` and `redirectRegex`: answer with a redirect instead of forwarding.
//! `redirectScheme` sends the client to the same host and path on `scheme` (and `port`, or the
//! scheme's default); the current scheme is the connection's, or a trusted
//! `X-Forwarded-Proto`'s. `redirectRegex` matches `regex` against the whole URL
//! (`scheme://host[:port]/path?query`, the scheme from the connection alone) and redirects to
//! `replacement` with `$1` naming groups. Either passes the request on when the URL would not
//! change. The status is 302 for GET and 307 otherwise, 301 and 308 with `permanent`; the body
//! is the status's reason.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::spec::Pattern;
use crate::{
    config::Checker,
    data::proxy::{Connection, ProxyBody},
};

#[derive(Debug, Default, Deserialize)]
struct RawScheme {
    scheme: Option<String>,
    port: Option<toml::Value>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    permanent: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRegex {
    regex: Option<String>,
    replacement: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    permanent: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SchemeSpec {
    pub scheme: String,
    /// `:port`, or empty for the scheme's default.
    pub port: String,
    pub permanent: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RegexSpec {
    pub regex: Pattern,
    pub replacement: String,
    pub permanent: bool,
}

pub(super) fn decode_scheme(raw: toml::Value, path: &str, c: &mut Checker) -> Option<SchemeSpec> {
    let raw: RawScheme = super::spec::raw(raw, path, c)?;
    let Some(scheme) = raw.scheme.filter(|s| !s.is_empty()) else {
        c.error(path, "redirectScheme needs a scheme");
        return None;
    };
    if !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) {
        c.error(&format!("{path}.scheme"), format!("{} is not a URL scheme", crate::limits::shown(&scheme)));
        return None;
    }
    let port = match raw.port {
        None => String::new(),
        Some(toml::Value::Integer(n)) => n.to_string(),
        Some(toml::Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    if !port.is_empty() && port.parse::<u16>().is_err() {
        c.error(&format!("{path}.port"), format!("{} is not a port", crate::limits::shown(&port)));
        return None;
    }
    let default = matches!((scheme.as_str(), port.as_str()), ("http", "80") | ("https", "443"));
    let port = if port.is_empty() || default { String::new() } else { format!(":{port}") };
    Some(SchemeSpec { scheme, port, permanent: raw.permanent.unwrap_or(false) })
}

pub(super) fn decode_regex(raw: toml::Value, path: &str, c: &mut Checker) -> Option<RegexSpec> {
    let raw: RawRegex = super::spec::raw(raw, path, c)?;
    let Some(text) = raw.regex.filter(|r| !r.is_empty()) else {
        c.error(path, "redirectRegex needs a regex");
        return None;
    };
    let regex = Pattern::compile(&text, &format!("{path}.regex"), c)?;
    let Some(replacement) = raw.replacement.filter(|r| !r.is_empty()) else {
        c.error(path, "redirectRegex needs a replacement");
        return None;
    };
    Some(RegexSpec { regex, replacement, permanent: raw.permanent.unwrap_or(false) })
}

pub struct RedirectScheme {
    spec: SchemeSpec,
}

impl RedirectScheme {
    pub fn new(spec: &SchemeSpec) -> RedirectScheme {
        RedirectScheme { spec: spec.clone() }
    }

    pub fn request<B>(&self, req: Request<B>, conn: Connection) -> super::Passed<B> {
        let (host, port) = split_host(crate::data::proxy::host_of(&req));
        let mut scheme = if conn.tls { "https" } else { "http" };
        let proto = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("");
        if proto.eq_ignore_ascii_case("http") || proto.eq_ignore_ascii_case("ws") {
            scheme = "http";
        } else if proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("wss") {
            scheme = "https";
        }
        let port = match (scheme, port) {
            ("http", ":80") | ("https", ":443") => "",
            (_, port) => port,
        };
        let rest = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let old = format!("{scheme}://{host}{port}{rest}");
        let new = format!("{}://{host}{}{rest}", self.spec.scheme, self.spec.port);
        if old == new {
            return Ok(req);
        }
        Err(Box::new(redirect(req.method(), &new, self.spec.permanent)))
    }
}

pub struct RedirectRegex {
    spec: RegexSpec,
}

impl RedirectRegex {
    pub fn new(spec: &RegexSpec) -> RedirectRegex {
        RedirectRegex { spec: spec.clone() }
    }

    pub fn request<B>(&self, req: Request<B>, conn: Connection) -> super::Passed<B> {
        let scheme = if conn.tls { "https" } else { "http" };
        let rest = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let old = format!("{scheme}://{}{rest}", crate::data::proxy::host_of(&req));
        if !self.spec.regex.0.is_match(&old) {
            return Ok(req);
        }
        let new = self.spec.regex.0.replace_all(&old, self.spec.replacement.as_str());
        if new == old {
            return Ok(req);
        }
        Err(Box::new(redirect(req.method(), &new, self.spec.permanent)))
    }
}

/// A host as the client sent it, split into the host (IPv6 in brackets) and `:port` or "".
pub(super) fn split_host(host: &str) -> (&str, &str) {
    let port_at = match host.rfind(']') {
        Some(end) => host[end..].find(':').map(|i| end + i),
        None => host.rfind(':'),
    };
    match port_at {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => (&host[..i], &host[i..]),
        _ => (host, ""),
    }
}

fn redirect(method: &Method, location: &str, permanent: bool) -> Response<ProxyBody> {
    let status = match (permanent, method == Method::GET) {
        (false, true) => StatusCode::FOUND,
        (false, false) => StatusCode::TEMPORARY_REDIRECT,
        (true, true) => StatusCode::MOVED_PERMANENTLY,
        (true, false) => StatusCode::PERMANENT_REDIRECT,
    };
    let Ok(location) = HeaderValue::from_str(location) else {
        return crate::data::proxy::error::text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let mut response = crate::data::proxy::error::text(status, status.canonical_reason().unwrap_or(""));
    response.headers_mut().insert(header::LOCATION, location);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(tls: bool) -> Connection {
        Connection::new("127.0.0.1:1".parse().unwrap(), tls, None)
    }

    fn scheme(to: &str, port: &str, uri: &str, host: &str, tls: bool) -> Option<(u16, String)> {
        let spec = SchemeSpec { scheme: to.into(), port: port.into(), permanent: false };
        let req = Request::get(uri).header("host", host).body(()).unwrap();
        let response = RedirectScheme::new(&spec).request(req, conn(tls)).err()?;
        Some((response.status().as_u16(), response.headers()["location"].to_str().unwrap().into()))
    }

    #[test]
    fn a_scheme_redirect_drops_the_port_unless_one_is_set() {
        assert_eq!(scheme("https", "", "/x?y", "a.example:8080", false), Some((302, "https://a.example/x?y".into())));
        assert_eq!(scheme("https", ":8443", "/", "a.example", false), Some((302, "https://a.example:8443/".into())));
        assert_eq!(scheme("https", "", "/", "[::1]:8080", false), Some((302, "https://[::1]/".into())));
        assert_eq!(scheme("https", "", "/", "a.example", true), None, "already there");
        assert_eq!(scheme("https", "", "/", "a.example:443", true), None, "the default port is no change");
        assert_eq!(
            scheme("https", "", "/", "a.example:8443", true),
            Some((302, "https://a.example/".into())),
            "Traefik redirects a non-default port away"
        );
    }

    #[test]
    fn a_regex_redirect_rewrites_the_whole_url() {
        let spec = RegexSpec {
            regex: Pattern(regex::Regex::new("^http://a.example/old/(.*)").unwrap()),
            replacement: "https://b.example/new/$1".into(),
            permanent: true,
        };
        let m = RedirectRegex::new(&spec);
        let req = Request::post("/old/x?q=1").header("host", "a.example").body(()).unwrap();
        let r = m.request(req, conn(false)).err().unwrap();
        assert_eq!(
            (r.status().as_u16(), r.headers()["location"].to_str().unwrap()),
            (308, "https://b.example/new/x?q=1")
        );
        let req = Request::get("/old/x").header("host", "a.example").body(()).unwrap();
        assert!(m.request(req, conn(true)).is_ok(), "over TLS the URL starts with https and does not match");
    }
}
