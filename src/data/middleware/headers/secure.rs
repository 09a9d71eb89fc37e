//! The security half of `headers` (Traefik's `unrolled/secure` options): `allowedHosts` checked
//! on the way in (500 `Bad Host` when the host is not listed), and the response headers it
//! sets, replacing the upstream's: `Strict-Transport-Security` (on HTTPS, or always with
//! `forceSTSHeader`), `X-Frame-Options`, `X-Content-Type-Options`, `X-XSS-Protection`,
//! `Content-Security-Policy` (`$NONCE` replaced per request), its report-only twin,
//! `Public-Key-Pins` (HTTPS only), `Referrer-Policy` and `Permissions-Policy`.
//! `isDevelopment` turns off the host check, STS and HPKP.

use base64::Engine;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};

use super::Raw;
use crate::{
    config::Checker,
    data::proxy::{Connection, ProxyBody},
};

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    allowed_hosts: Vec<String>,
    hosts_proxy_headers: Vec<HeaderName>,
    ssl_proxy_headers: Vec<(HeaderName, String)>,
    development: bool,
    /// What is sent over HTTPS, and what over plain HTTP.
    on_tls: Vec<(HeaderName, String)>,
    on_plain: Vec<(HeaderName, String)>,
}

/// The security options of `raw`; `Some(None)` when it has none, `None` on error.
pub(super) fn decode(raw: &Raw, path: &str, c: &mut Checker) -> Option<Option<Spec>> {
    let ignored = [
        ("featurepolicy", raw.featurepolicy.as_ref().is_some_and(|v| !v.is_empty())),
        ("sslredirect", raw.sslredirect == Some(true)),
        ("ssltemporaryredirect", raw.ssltemporaryredirect == Some(true)),
        ("sslhost", raw.sslhost.as_ref().is_some_and(|v| !v.is_empty())),
        ("sslforcehost", raw.sslforcehost == Some(true)),
    ];
    for (key, _) in ignored.iter().filter(|(_, set)| *set) {
        c.warn(
            &format!("{path}.{key}"),
            format!("{key} was removed in Traefik v3 and does nothing; use a redirectScheme middleware or Permissions-Policy"),
        );
    }
    let development = raw.isdevelopment.unwrap_or(false);
    let mut on_plain: Vec<(HeaderName, String)> = Vec::new();
    let mut push = |name: &'static str, value: Option<String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            on_plain.push((HeaderName::from_static(name), value));
        }
    };
    let on = |flag: Option<bool>, value: &str| flag.unwrap_or(false).then(|| value.to_string());
    push(
        "x-frame-options",
        raw.customframeoptionsvalue.clone().filter(|v| !v.is_empty()).or(on(raw.framedeny, "DENY")),
    );
    push("x-content-type-options", on(raw.contenttypenosniff, "nosniff"));
    push(
        "x-xss-protection",
        raw.custombrowserxssvalue.clone().filter(|v| !v.is_empty()).or(on(raw.browserxssfilter, "1; mode=block")),
    );
    push("content-security-policy", raw.contentsecuritypolicy.clone());
    push("content-security-policy-report-only", raw.contentsecuritypolicyreportonly.clone());
    push("referrer-policy", raw.referrerpolicy.clone());
    push("permissions-policy", raw.permissionspolicy.clone());
    let mut on_tls = on_plain.clone();
    let sts = raw.stsseconds.filter(|s| *s != 0 && !development).map(|seconds| {
        let sub = if raw.stsincludesubdomains.unwrap_or(false) { "; includeSubDomains" } else { "" };
        let preload = if raw.stspreload.unwrap_or(false) { "; preload" } else { "" };
        (HeaderName::from_static("strict-transport-security"), format!("max-age={seconds}{sub}{preload}"))
    });
    if let Some(sts) = sts {
        if raw.forcestsheader.unwrap_or(false) {
            on_plain.push(sts.clone());
        }
        on_tls.push(sts);
    }
    if let Some(key) = raw.publickey.clone().filter(|k| !k.is_empty() && !development) {
        on_tls.push((HeaderName::from_static("public-key-pins"), key));
    }
    for (name, value) in on_tls.iter().chain(&on_plain) {
        if HeaderValue::from_str(value).is_err() {
            c.error(&format!("{path}.{name}"), format!("{} cannot be sent in a header", crate::limits::shown(value)));
            return None;
        }
    }
    let hosts_proxy_headers = crate::data::middleware::spec::header_names(
        raw.hostsproxyheaders.as_deref().unwrap_or_default(),
        &format!("{path}.hostsproxyheaders"),
        c,
    )?;
    let mut ssl_proxy_headers = Vec::new();
    for (name, value) in &raw.sslproxyheaders {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => ssl_proxy_headers.push((name, value.clone())),
            Err(_) => {
                c.error(&format!("{path}.sslproxyheaders.{name}"), format!("{name:?} is not a header name"));
                return None;
            }
        }
    }
    let spec = Spec {
        allowed_hosts: raw.allowedhosts.clone().unwrap_or_default(),
        hosts_proxy_headers,
        ssl_proxy_headers,
        development,
        on_tls,
        on_plain,
    };
    let defined = !spec.allowed_hosts.is_empty()
        || !spec.hosts_proxy_headers.is_empty()
        || !spec.ssl_proxy_headers.is_empty()
        || !spec.on_tls.is_empty()
        || raw.stsseconds.is_some()
        || development
        || [raw.stsincludesubdomains, raw.stspreload, raw.forcestsheader].contains(&Some(true))
        || ignored.iter().any(|(_, set)| *set);
    Some(defined.then_some(spec))
}

/// A response header to set.
type Header = (HeaderName, HeaderValue);

pub struct Secure {
    spec: Spec,
    /// The headers of `on_tls` and `on_plain`, ready to send (checked when decoded).
    on_tls: Vec<(HeaderName, HeaderValue)>,
    on_plain: Vec<(HeaderName, HeaderValue)>,
    /// Some value has `$NONCE`, replaced per request.
    nonce: bool,
}

impl Secure {
    pub fn new(spec: &Spec) -> Secure {
        let ready = |list: &[(HeaderName, String)]| {
            list.iter().filter_map(|(n, v)| Some((n.clone(), HeaderValue::from_str(v).ok()?))).collect()
        };
        let nonce = spec.on_tls.iter().chain(&spec.on_plain).any(|(_, v)| v.contains("$NONCE"));
        Secure { on_tls: ready(&spec.on_tls), on_plain: ready(&spec.on_plain), nonce, spec: spec.clone() }
    }

    /// The response headers for this request, or the 500 a host outside `allowedHosts` gets.
    pub fn request<B>(
        &self,
        req: &Request<B>,
        conn: Connection,
    ) -> Result<std::borrow::Cow<'_, [Header]>, Box<Response<ProxyBody>>> {
        let spec = &self.spec;
        if !spec.allowed_hosts.is_empty() && !spec.development {
            let proxied = spec
                .hosts_proxy_headers
                .iter()
                .find_map(|h| req.headers().get(h).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()));
            let host = proxied.unwrap_or_else(|| crate::data::proxy::host_of(req));
            if host.is_empty() || !spec.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(host)) {
                let mut bad = crate::data::proxy::error::text(StatusCode::INTERNAL_SERVER_ERROR, "Bad Host\n");
                bad.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                return Err(Box::new(bad));
            }
        }
        let ssl = conn.tls
            || spec
                .ssl_proxy_headers
                .iter()
                .any(|(name, value)| req.headers().get(name).is_some_and(|v| v.as_bytes() == value.as_bytes()));
        if !self.nonce {
            return Ok(std::borrow::Cow::Borrowed(if ssl { &self.on_tls } else { &self.on_plain }));
        }
        let nonce = nonce();
        let list = if ssl { &spec.on_tls } else { &spec.on_plain };
        Ok(list
            .iter()
            .filter_map(|(name, value)| {
                Some((name.clone(), HeaderValue::from_str(&value.replace("$NONCE", &nonce)).ok()?))
            })
            .collect())
    }
}

/// `'nonce-<16 random bytes in base64>'`, fresh for each request.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    format!("'nonce-{}'", base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
}
