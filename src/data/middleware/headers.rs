//! `headers`: custom request and response headers, CORS, and the security headers, in
//! Traefik's order. On the way in: a CORS preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered here, 200 and empty, and never forwarded; then
//! `customRequestHeaders` are applied (`""` deletes, `Host` sets the host, `X-Forwarded-For:
//! ""` sends none); then a host outside `allowedHosts` gets 500 `Bad Host`. On the way out:
//! the security headers replace the upstream's, `customResponseHeaders` come after them (and
//! so can override or delete them), then the CORS headers and `Vary`.

use std::collections::BTreeMap;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::{spec::Pattern, Next};
use crate::{config::Checker, data::proxy::ProxyBody};

mod secure;

pub use secure::Secure;

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    customrequestheaders: BTreeMap<String, String>,
    #[serde(default)]
    customresponseheaders: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    accesscontrolallowcredentials: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    accesscontrolallowheaders: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    accesscontrolallowmethods: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    accesscontrolalloworiginlist: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    accesscontrolalloworiginlistregex: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    accesscontrolexposeheaders: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    accesscontrolmaxage: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    addvaryheader: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    allowedhosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    hostsproxyheaders: Option<Vec<String>>,
    #[serde(default)]
    sslproxyheaders: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    stsseconds: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    stsincludesubdomains: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    stspreload: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    forcestsheader: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    framedeny: Option<bool>,
    customframeoptionsvalue: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    contenttypenosniff: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    browserxssfilter: Option<bool>,
    custombrowserxssvalue: Option<String>,
    contentsecuritypolicy: Option<String>,
    contentsecuritypolicyreportonly: Option<String>,
    publickey: Option<String>,
    referrerpolicy: Option<String>,
    permissionspolicy: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    isdevelopment: Option<bool>,
    // Accepted by Traefik v3 and ignored: warned about.
    featurepolicy: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    sslredirect: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    ssltemporaryredirect: Option<bool>,
    sslhost: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    sslforcehost: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Spec {
    /// `(name, value)`; no value deletes the header.
    pub request: Vec<(HeaderName, Option<HeaderValue>)>,
    /// `customRequestHeaders.Host`.
    pub host: Option<HeaderValue>,
    /// `customRequestHeaders.X-Forwarded-For = ""`: the upstream gets no `X-Forwarded-For`.
    pub omit_forwarded_for: bool,
    pub response: Vec<(HeaderName, Option<HeaderValue>)>,
    pub cors: Option<Cors>,
    pub secure: Option<secure::Spec>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Cors {
    pub credentials: bool,
    pub allow_headers: Vec<String>,
    pub allow_methods: Vec<String>,
    pub origins: Vec<String>,
    pub origin_patterns: Vec<Pattern>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<u64>,
    pub vary: bool,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let mut spec = Spec { secure: secure::decode(&raw, path, c)?, ..Spec::default() };
    for (name, value) in &raw.customrequestheaders {
        let at = format!("{path}.customrequestheaders.{name}");
        let (name, value) = header_pair(name, value, &at, c)?;
        match (name.as_str(), value) {
            ("x-forwarded-for", None) => spec.omit_forwarded_for = true,
            ("host", Some(host)) => spec.host = Some(host),
            // Traefik deletes a `Host` header field, which Go never has: the host stays.
            ("host", None) => {}
            (_, value) => spec.request.push((name, value)),
        }
    }
    for (name, value) in &raw.customresponseheaders {
        spec.response.push(header_pair(name, value, &format!("{path}.customresponseheaders.{name}"), c)?);
    }
    let cors = Cors {
        credentials: raw.accesscontrolallowcredentials.unwrap_or(false),
        allow_headers: raw.accesscontrolallowheaders.unwrap_or_default(),
        allow_methods: raw.accesscontrolallowmethods.unwrap_or_default(),
        origins: raw.accesscontrolalloworiginlist.unwrap_or_default(),
        origin_patterns: Vec::new(),
        expose_headers: raw.accesscontrolexposeheaders.unwrap_or_default(),
        max_age: raw.accesscontrolmaxage,
        vary: raw.addvaryheader.unwrap_or(false),
    };
    let patterns = raw.accesscontrolalloworiginlistregex.unwrap_or_default();
    let mut cors = Cors { origin_patterns: Vec::with_capacity(patterns.len()), ..cors };
    for (i, text) in patterns.iter().enumerate() {
        cors.origin_patterns.push(Pattern::compile(text, &format!("{path}.accesscontrolalloworiginlistregex.{i}"), c)?);
    }
    for (list, key) in
        [(&cors.allow_headers, "accesscontrolallowheaders"), (&cors.allow_methods, "accesscontrolallowmethods")]
            .into_iter()
            .chain([(&cors.expose_headers, "accesscontrolexposeheaders")])
    {
        if HeaderValue::from_str(&list.join(",")).is_err() {
            c.error(&format!("{path}.{key}"), "the list cannot be sent in a header");
            return None;
        }
    }
    if cors != Cors::default() {
        spec.cors = Some(cors);
    }
    let custom =
        !spec.request.is_empty() || spec.host.is_some() || spec.omit_forwarded_for || !spec.response.is_empty();
    if !custom && spec.cors.is_none() && spec.secure.is_none() {
        c.error(path, "headers needs at least one option (Traefik: headers configuration not valid)");
        return None;
    }
    Some(spec)
}

fn header_pair(name: &str, value: &str, at: &str, c: &mut Checker) -> Option<(HeaderName, Option<HeaderValue>)> {
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        c.error(at, format!("{name:?} is not a header name"));
        return None;
    };
    if value.is_empty() {
        return Some((name, None));
    }
    match HeaderValue::from_str(value) {
        Ok(value) => Some((name, Some(value))),
        Err(_) => {
            c.error(at, format!("{} cannot be sent in a header", crate::limits::shown(value)));
            None
        }
    }
}

/// Marks a request whose upstream gets no `X-Forwarded-For` (`customRequestHeaders`).
#[derive(Clone, Copy)]
pub struct OmitForwardedFor;

pub struct Headers {
    spec: Spec,
    secure: Option<Secure>,
}

impl Headers {
    pub fn new(spec: &Spec) -> Headers {
        Headers { spec: spec.clone(), secure: spec.secure.as_ref().map(Secure::new) }
    }

    pub async fn handle(&self, mut req: super::Req, next: Next<'_>) -> Response<ProxyBody> {
        if let Some(cors) = &self.spec.cors {
            if is_preflight(&req) {
                return cors.preflight(req.headers());
            }
        }
        self.apply_request(&mut req);
        let origin = req.headers().get(header::ORIGIN).cloned();
        let (mut response, secure) = match &self.secure {
            None => (next.run(req).await, None),
            Some(secure) => match secure.request(&req, next.conn) {
                Err(bad_host) => (*bad_host, None),
                Ok(headers) => (next.run(req).await, Some(headers)),
            },
        };
        let out = response.headers_mut();
        for (name, value) in secure.iter().flat_map(|s| s.iter()) {
            out.insert(name, value.clone());
        }
        for (name, value) in &self.spec.response {
            match value {
                Some(value) => drop(out.insert(name, value.clone())),
                None => drop(out.remove(name)),
            }
        }
        if let Some(cors) = &self.spec.cors {
            cors.respond(origin.as_ref(), out);
        }
        response
    }

    fn apply_request<B>(&self, req: &mut Request<B>) {
        for (name, value) in &self.spec.request {
            match value {
                Some(value) => drop(req.headers_mut().insert(name, value.clone())),
                None => drop(req.headers_mut().remove(name)),
            }
        }
        if self.spec.omit_forwarded_for {
            req.headers_mut().remove("x-forwarded-for");
            req.extensions_mut().insert(OmitForwardedFor);
        }
        if let Some(host) = &self.spec.host {
            req.headers_mut().insert(header::HOST, host.clone());
            // An h2 request's host is its authority: dropped, so that `Host` is the host.
            if req.uri().authority().is_some() {
                let mut uri = http::uri::Parts::default();
                uri.path_and_query = req.uri().path_and_query().cloned();
                if let Ok(origin_form) = http::Uri::from_parts(uri) {
                    *req.uri_mut() = origin_form;
                }
            }
        }
    }
}

fn is_preflight<B>(req: &Request<B>) -> bool {
    let present = |name: &str| req.headers().get(name).is_some_and(|v| !v.is_empty());
    req.method() == Method::OPTIONS && present("origin") && present("access-control-request-method")
}

impl Cors {
    /// The allowed origin for `origin`: itself on an exact or regex match, `*` (the origin
    /// itself with credentials) when the list allows any.
    fn allowed_origin(&self, origin: &[u8]) -> Option<HeaderValue> {
        let echo = || HeaderValue::from_bytes(origin).ok();
        for item in &self.origins {
            if item.as_bytes() == origin {
                return echo();
            }
            if item == "*" {
                return if self.credentials { echo() } else { Some(HeaderValue::from_static("*")) };
            }
        }
        let text = std::str::from_utf8(origin).ok()?;
        self.origin_patterns.iter().any(|p| p.0.is_match(text)).then(echo).flatten()
    }

    fn expose(&self, out: &mut HeaderMap) {
        if !(self.expose_headers.is_empty() || self.credentials && self.expose_headers.iter().any(|h| h == "*")) {
            set_joined(out, "access-control-expose-headers", &self.expose_headers);
        }
    }

    fn preflight(&self, req: &HeaderMap) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::empty());
        let out = response.headers_mut();
        if self.credentials {
            out.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
        }
        for (list, asked, name) in [
            (&self.allow_headers, "access-control-request-headers", "access-control-allow-headers"),
            (&self.allow_methods, "access-control-request-method", "access-control-allow-methods"),
        ] {
            if self.credentials && list.iter().any(|h| h == "*") {
                if let Some(asked) = req.get(asked).filter(|v| !v.is_empty()) {
                    out.insert(name, asked.clone());
                }
            } else if !list.is_empty() {
                set_joined(out, name, list);
            }
        }
        let origin = req.get(header::ORIGIN).map_or(&b""[..], |o| o.as_bytes());
        if let Some(allowed) = self.allowed_origin(origin) {
            out.insert("access-control-allow-origin", allowed);
        }
        if let Some(age) = self.max_age {
            out.insert("access-control-max-age", HeaderValue::from(age));
        }
        self.expose(out);
        out.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        *response.status_mut() = StatusCode::OK;
        response
    }

    fn respond(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        if let Some(allowed) = self.allowed_origin(origin.map_or(&b""[..], |o| o.as_bytes())) {
            out.insert("access-control-allow-origin", allowed);
        }
        if self.credentials {
            out.insert("access-control-allow-credentials", HeaderValue::from_static("true"));
        }
        self.expose(out);
        if self.vary {
            let vary = out.get(header::VARY).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
            if vary != b"Origin" {
                let joined = if vary.is_empty() { b"Origin".to_vec() } else { [&vary[..], b",Origin"].concat() };
                if let Ok(value) = HeaderValue::from_bytes(&joined) {
                    out.insert(header::VARY, value);
                }
            }
        }
    }
}

fn set_joined(out: &mut HeaderMap, name: &'static str, list: &[String]) {
    if let Ok(value) = HeaderValue::from_str(&list.join(",")) {
        out.insert(name, value);
    }
}

#[cfg(test)]
mod tests;
