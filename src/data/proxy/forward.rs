//! What changes in a request on its way upstream and in a response on its way back: the target
//! URI, `Host` (kept when `passHostHeader`), the `X-Forwarded-*` and `X-Real-Ip` headers, and
//! the hop-by-hop headers that belong to one connection and are never forwarded.

use std::net::IpAddr;

use http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Request, Uri, Version};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The headers only a trusted proxy may set (Traefik's list): an untrusted client's are removed.
/// (A `static`, not a `const`: each use of a `const` array builds and drops a copy.)
static FORWARDED: [HeaderName; 11] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_FORWARDED_SERVER,
    X_REAL_IP,
    HeaderName::from_static("x-forwarded-uri"),
    HeaderName::from_static("x-forwarded-method"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-tls-client-cert"),
    HeaderName::from_static("x-forwarded-tls-client-cert-info"),
];

/// Headers that describe one connection (RFC 9110 §7.6.1), never forwarded; `Upgrade` too,
/// which is set again for a tunnelled upgrade.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// A client's address as text, formatted once per connection rather than for every request's
/// `X-Forwarded-For` and `X-Real-Ip`. Copy, so that it travels with [`super::Connection`].
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; 45],
    len: u8,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        use std::io::Write;
        let mut buf = [0; 45];
        let mut rest = &mut buf[..];
        // 45 bytes hold the longest address (`ffff:...:255.255.255.255`).
        let _ = write!(rest, "{ip}");
        let len = (45 - rest.len()) as u8;
        IpText { buf, len }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// What the proxy knows about the client side of a request.
pub struct Client<'a> {
    pub ip: &'a str,
    pub tls: bool,
    /// The port of the entrypoint the request came in on.
    pub port: u16,
    /// The host the client asked for (authority or `Host`), port included, before any
    /// middleware changed it: `X-Forwarded-Host`.
    pub host: &'a str,
    /// How long the client may take to send its body (`respondingTimeouts.readTimeout`).
    pub read_timeout: std::time::Duration,
    /// The `Upgrade` protocols tunnelled (`http.allowedUpgrades`; `websocket` by default).
    pub upgrades: &'a [String],
}

/// The protocol a client asked to switch to (`Upgrade`), when it asked on HTTP/1.1 for one of
/// `allowed` (the entrypoint's `http.allowedUpgrades`: `websocket` unless set). Any other
/// upgrade (`h2c`, which would let a client speak HTTP/2 straight to an upstream, past routing)
/// is dropped and the request forwarded as a plain one.
pub fn upgrade_of(version: Version, headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if version == Version::HTTP_11 && wants {
        let protocol = headers.get(header::UPGRADE)?;
        allowed.iter().any(|a| protocol.as_bytes().eq_ignore_ascii_case(a.as_bytes())).then(|| protocol.clone())
    } else {
        None
    }
}

/// Removes hop-by-hop headers, and the headers `Connection` names, from `headers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first: most requests carry none of these, and each `remove`
    // hashes its name whether the header is there or not. `Connection` alone (an upstream's
    // `keep-alive`) needs no second pass.
    let (mut connection, mut others) = (false, false);
    for name in headers.keys() {
        match name == header::CONNECTION {
            true => connection = true,
            false => others |= is_hop_by_hop(name),
        }
    }
    if !connection && !others {
        return;
    }
    let mut lines = headers.get_all(header::CONNECTION).iter();
    if let (Some(_), None) = (lines.next(), lines.next()) {
        // One `Connection` line (an upstream's `keep-alive`, nearly always): the names it lists
        // are removed by their text, with no HeaderName built for each.
        if let Some(Ok(listed)) = headers.remove(header::CONNECTION).as_ref().map(HeaderValue::to_str) {
            for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                headers.remove(name);
            }
        }
    } else {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    // The fixed names still present, if any (a client's `TE`, `Keep-Alive` not listed).
    if others && headers.keys().any(is_hop_by_hop) {
        let present: Vec<HeaderName> = headers.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
        for name in &present {
            headers.remove(name);
        }
    }
}

/// Removes the `X-Forwarded-*` headers of a client that is not a trusted proxy, before
/// anything (a middleware, the upstream) reads them; their `_` spellings too
/// (`X_Forwarded_For`), which some application stacks read as the same header.
pub fn distrust(headers: &mut HeaderMap) {
    let spelt = |n: &HeaderName| n.as_str().starts_with('x') && n.as_str().contains('_');
    if !headers.keys().any(|n| FORWARDED.contains(n) || spelt(n)) {
        return;
    }
    for name in &FORWARDED {
        headers.remove(name);
    }
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_') && FORWARDED.iter().any(|f| f.as_str() == n.as_str().replace('_', "-")))
        .cloned()
        .collect();
    for name in underscored {
        headers.remove(name);
    }
}

/// Removes, before any middleware runs, the headers the client's `Connection` names (never
/// Pylon's own `X-Forwarded-*`), and leaves `Connection` with only its `upgrade` token: a
/// client cannot have a header a middleware adds (`X-Auth-User`) removed on the way out.
pub fn drop_connection_headers(headers: &mut HeaderMap) {
    let tokens: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return;
    }
    let upgrade = tokens.iter().any(|t| t == "upgrade");
    for token in &tokens {
        if token != "upgrade" && !FORWARDED.iter().any(|f| f.as_str() == token) {
            headers.remove(token.as_str());
        }
    }
    headers.remove(header::CONNECTION);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The head sent to `server` for a client's request head (its forwarded headers already
/// cleared by [`distrust`] when the client is not trusted).
pub fn request(client_head: &Parts, server: &Uri, pass_host: bool, client: &Client<'_>) -> Request<()> {
    let mut upstream = Request::new(());
    *upstream.method_mut() = client_head.method.clone();
    *upstream.headers_mut() = client_head.headers.clone();
    let (mut parts, ()) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade_of(client_head.version, &client_head.headers, client.upgrades) {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }

    let mut uri = http::uri::Parts::default();
    uri.scheme = server.scheme().cloned();
    uri.authority = server.authority().cloned();
    let path = client_head.uri.path_and_query().map_or("/", |p| p.as_str());
    let joined = match server.path().trim_end_matches('/') {
        "" => path.to_string(),
        base => format!("{base}{path}"),
    };
    uri.path_and_query = joined.parse().ok();
    if let Ok(target) = Uri::from_parts(uri) {
        parts.uri = target;
    }
    parts.version = Version::HTTP_11;

    // The host as the middlewares left it (`customRequestHeaders.Host`): authority or `Host`.
    let host = match (client_head.uri.authority(), client_head.headers.get(header::HOST)) {
        (Some(authority), _) => HeaderValue::from_str(authority.as_str()),
        (None, Some(host)) => Ok(host.clone()),
        (None, None) => HeaderValue::from_str(client.host),
    };
    match host {
        Ok(host) if pass_host => {
            parts.headers.insert(header::HOST, host);
        }
        _ => {
            parts.headers.remove(header::HOST);
        }
    }

    let headers = &mut parts.headers;
    // Room for the forwarded headers at once: the map grows once rather than insert by insert.
    headers.reserve(6);
    // A trusted proxy may have sent its chain on several lines: they are one list.
    let prior: Vec<&str> = headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
    let prior_for = (!prior.is_empty()).then(|| prior.join(", "));
    let ip = client_ip(client.ip);
    if client_head.extensions.get::<crate::data::middleware::headers::OmitForwardedFor>().is_none() {
        match prior_for {
            Some(prior) => set(headers, X_FORWARDED_FOR, &format!("{prior}, {}", client.ip), true),
            None => drop(ip.clone().map(|ip| headers.insert(X_FORWARDED_FOR, ip))),
        }
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        let proto = HeaderValue::from_static(if client.tls { "https" } else { "http" });
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    if !headers.contains_key(X_FORWARDED_HOST) {
        // The `Host` sent upstream is usually the client's: its value is shared, not rebuilt.
        let host = match headers.get(header::HOST) {
            Some(host) if host.as_bytes() == client.host.as_bytes() => Some(host.clone()),
            _ => HeaderValue::from_str(client.host).ok(),
        };
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    if !headers.contains_key(X_FORWARDED_PORT) {
        headers.insert(X_FORWARDED_PORT, HeaderValue::from(client.port));
    }
    if let (false, Some(ip)) = (headers.contains_key(X_REAL_IP), ip) {
        headers.insert(X_REAL_IP, ip);
    }
    Request::from_parts(parts, ())
}

/// The client's address as a header value. Each worker keeps the last one it built, shared by
/// every request from that address (a load balancer's, or a keep-alive client's), instead of
/// validating and allocating it for `X-Forwarded-For` and `X-Real-Ip` on each request.
fn client_ip(ip: &str) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<HeaderValue>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some(value) if value.as_bytes() == ip.as_bytes() => Some(value.clone()),
        _ => {
            let value = HeaderValue::from_str(ip).ok()?;
            *last = Some(value.clone());
            Some(value)
        }
    })
}

/// Sets a header, keeping a trusted client's value unless `replace`.
fn set(headers: &mut HeaderMap, name: HeaderName, value: &str, replace: bool) {
    if replace || !headers.contains_key(&name) {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn client() -> Client<'static> {
        static WEBSOCKET: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| vec!["websocket".into()]);
        let read_timeout = std::time::Duration::from_secs(60);
        let (ip, host, upgrades) = ("10.1.2.3", "a.example", WEBSOCKET.as_slice());
        Client { ip, tls: true, port: 443, host, read_timeout, upgrades }
    }

    /// A head as the proxy passes it on: cleared of forwarded headers unless `trusted`.
    fn from(trusted: bool, mut p: Parts) -> Parts {
        if !trusted {
            distrust(&mut p.headers);
        }
        p
    }

    #[test]
    fn an_address_is_formatted_once_as_std_formats_it() {
        for ip in ["10.1.2.3", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", "2001:db8::8a2e:370:7334"] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(parsed).as_str(), parsed.to_string());
        }
    }

    #[test]
    fn the_target_joins_the_server_path_and_keeps_the_query() {
        let p = parts("/api/x?y=1", &[("host", "a.example")]);
        let r = request(&p, &"http://10.0.0.1:8080/base/".parse().unwrap(), true, &client());
        assert_eq!(*r.uri(), "http://10.0.0.1:8080/base/api/x?y=1");
        assert_eq!(r.headers()["host"], "a.example");
        let r = request(&p, &"http://10.0.0.1:8080".parse().unwrap(), false, &client());
        assert!(r.headers().get("host").is_none(), "the client sets the server's own host");
    }

    #[test]
    fn untrusted_forwarded_headers_are_replaced_and_trusted_ones_extended() {
        let spoofed = [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-proto", "http"), ("x-real-ip", "6.6.6.6")];
        let p = parts("/", &spoofed);
        let r = request(&from(false, p.clone()), &"http://u".parse().unwrap(), true, &client());
        let h = r.headers();
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["x-real-ip"], "10.1.2.3");
        let r = request(&from(true, p), &"http://u".parse().unwrap(), true, &client());
        assert_eq!(r.headers()["x-forwarded-for"], "6.6.6.6, 10.1.2.3");
        assert_eq!(r.headers()["x-forwarded-proto"], "http");

        let two_lines = parts("/", &[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]);
        let r = request(&two_lines, &"http://u".parse().unwrap(), true, &client());
        assert_eq!(r.headers()["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3", "a trusted chain on two lines");

        let claims = [
            ("x-forwarded-tls-client-cert", "MIIB..."),
            ("x-forwarded-tls-client-cert-info", "Subject=admin"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-prefix", "/admin"),
        ];
        let r = request(&from(false, parts("/", &claims)), &"http://u".parse().unwrap(), true, &client());
        for (name, _) in claims {
            assert!(r.headers().get(name).is_none(), "an untrusted {name} reached the upstream");
        }
    }

    #[test]
    fn a_client_cannot_spell_or_unname_its_way_past_the_forwarded_headers() {
        let mut p = parts("/", &[("x_forwarded_for", "6.6.6.6"), ("x_real_ip", "6.6.6.6"), ("x_custom", "kept")]);
        distrust(&mut p.headers);
        assert!(p.headers.get("x_forwarded_for").is_none() && p.headers.get("x_real_ip").is_none());
        assert_eq!(p.headers["x_custom"], "kept");
        let named = [
            ("connection", "Upgrade, X-Auth-User, X-Forwarded-Prefix"),
            ("x-auth-user", "mallory"),
            ("upgrade", "websocket"),
        ];
        let mut p = parts("/", &named);
        drop_connection_headers(&mut p.headers);
        assert!(p.headers.get("x-auth-user").is_none(), "the client's own copy goes");
        assert_eq!(p.headers["connection"], "upgrade", "only the upgrade token is left to name anything");
        p.headers.insert("x-auth-user", HeaderValue::from_static("alice"));
        let r = request(&p, &"http://u".parse().unwrap(), true, &client());
        assert_eq!(r.headers()["x-auth-user"], "alice", "what a middleware set reaches the upstream");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_but_an_upgrade_survives() {
        let hop = [("connection", "keep-alive, x-secret"), ("x-secret", "1"), ("te", "gzip"), ("keep-alive", "5")];
        let r = request(&parts("/", &hop), &"http://u".parse().unwrap(), true, &client());
        for name in ["connection", "x-secret", "te", "keep-alive"] {
            assert!(r.headers().get(name).is_none(), "{name} was forwarded");
        }
        let ws = parts("/ws", &[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let r = request(&ws, &"http://u".parse().unwrap(), true, &client());
        assert_eq!(r.headers()["connection"], "upgrade");
        assert_eq!(r.headers()["upgrade"], "websocket");
        let h2c =
            parts("/", &[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c"), ("http2-settings", "AA")]);
        let r = request(&h2c, &"http://u".parse().unwrap(), true, &client());
        for name in ["connection", "upgrade", "http2-settings"] {
            assert!(r.headers().get(name).is_none(), "an h2c upgrade's {name} was forwarded");
        }
        let allowed = ["websocket".to_string(), "h2c".to_string()];
        let r = request(&h2c, &"http://u".parse().unwrap(), true, &Client { upgrades: &allowed, ..client() });
        assert_eq!(r.headers()["upgrade"], "h2c", "an entrypoint that allows h2c tunnels it");
    }

    #[test]
    fn every_connection_line_names_headers_to_drop_in_any_case() {
        for lines in [&["X-A, x-b"][..], &["x-a", "X-B , "]] {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(header::CONNECTION, HeaderValue::from_str(line).unwrap());
            }
            for name in ["x-a", "x-b", "x-kept"] {
                headers.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
            }
            strip_hop_by_hop(&mut headers);
            let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
            assert_eq!(left, ["x-kept"], "{lines:?}");
        }
    }
}
