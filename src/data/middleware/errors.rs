//! `errors`: a response whose status is in `status` (`"500-599"`, `"404"`, inclusive ranges)
//! is replaced by a page from `service`: a GET of `query` (`{status}`, `{originalStatus}` and
//! `{url}` filled in) with the client's host and headers (only `errorRequestHeaders` when
//! set). The client gets the page with the caught status, or the one `statusRewrites` maps it
//! to, whatever the page's own status; if the page cannot be fetched, the status with the
//! proxy's short text. It catches the answers of middlewares further in too; 1xx answers (an
//! upgrade) pass.

use std::{collections::BTreeMap, sync::Arc};

use http::{header, HeaderMap, HeaderName, Request, Response, StatusCode};
use serde::Deserialize;

use super::Next;
use crate::{
    config::Checker,
    data::balancer::Service,
    data::proxy::{forward, ProxyBody},
    data::upstream::Upstream,
    dynamic::unqualified,
};

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    status: Option<Vec<String>>,
    #[serde(default)]
    statusrewrites: BTreeMap<String, toml::Value>,
    service: Option<String>,
    query: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    errorrequestheaders: Option<Vec<String>>,
}

/// An inclusive range of status codes.
pub type Codes = (u16, u16);

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub status: Vec<Codes>,
    pub rewrites: Vec<(Codes, StatusCode)>,
    pub service: String,
    pub query: String,
    /// `None`: every header of the client's request goes to the error service.
    pub request_headers: Option<Vec<HeaderName>>,
}

/// `"500"` or `"500-599"`, as Traefik reads them (parts after a second `-` are ignored).
pub(super) fn codes(text: &str) -> Option<Codes> {
    let mut parts = text.split('-');
    let low: u16 = parts.next()?.parse().ok()?;
    match parts.next() {
        None => Some((low, low)),
        Some(high) => Some((low, high.parse().ok()?)),
    }
}

/// The ranges of a `status` list found at `path`; `None` (with the error) at a bad entry.
pub(super) fn statuses(texts: Vec<String>, path: &str, c: &mut Checker) -> Option<Vec<Codes>> {
    let mut out = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match codes(text) {
            Some(range) => out.push(range),
            None => {
                c.error(
                    &format!("{path}.{i}"),
                    format!("{} is not a status or a range like 500-599", crate::limits::shown(text)),
                );
                return None;
            }
        }
    }
    Some(out)
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let status = statuses(raw.status.unwrap_or_default(), &format!("{path}.status"), c)?;
    let mut rewrites = Vec::new();
    for (from, to) in &raw.statusrewrites {
        let at = format!("{path}.statusrewrites.{from}");
        let to = match to {
            toml::Value::Integer(n) => u16::try_from(*n).ok(),
            toml::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match (codes(from), to.and_then(|t| StatusCode::from_u16(t).ok())) {
            (Some(range), Some(to)) => rewrites.push((range, to)),
            _ => {
                c.error(&at, "a status rewrite maps a status or range to a status code");
                return None;
            }
        }
    }
    let Some(service) = raw.service.filter(|s| !s.is_empty()) else {
        c.error(path, "errors needs a service");
        return None;
    };
    let query = raw.query.unwrap_or_default();
    let query = if query.is_empty() { String::new() } else { format!("/{}", query.trim_start_matches('/')) };
    let request_headers = match raw.errorrequestheaders {
        None => None,
        Some(list) => Some(super::spec::header_names(&list, &format!("{path}.errorrequestheaders"), c)?),
    };
    Some(Spec { status, rewrites, service: unqualified(&service).to_string(), query, request_headers })
}

/// How long the error service may take to answer with its page's head.
const PAGE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Errors {
    spec: Spec,
    service: Arc<Service>,
    upstream: Upstream,
}

impl Errors {
    pub fn new(spec: &Spec, service: Arc<Service>, upstream: &Upstream) -> Errors {
        Errors { spec: spec.clone(), service, upstream: upstream.clone() }
    }

    pub async fn handle(&self, req: super::Req, next: Next<'_>) -> Response<ProxyBody> {
        let conn = next.conn;
        let host = crate::data::proxy::host_of(&req).to_string();
        let scheme = if conn.tls { "https" } else { "http" };
        let url = format!("{scheme}://{host}{}", req.uri().path_and_query().map_or("/", |p| p.as_str()));
        let headers = match &self.spec.request_headers {
            None => req.headers().clone(),
            Some(names) => {
                let mut kept = HeaderMap::new();
                for name in names {
                    for value in req.headers().get_all(name) {
                        kept.append(name.clone(), value.clone());
                    }
                }
                kept
            }
        };
        let response = next.run(req).await;
        let original = response.status();
        let caught = |s: u16| self.spec.status.iter().any(|(low, high)| (*low..=*high).contains(&s));
        if original.is_informational() || !caught(original.as_u16()) {
            return response;
        }
        let rewritten = self.spec.rewrites.iter().find(|((low, high), _)| (*low..=*high).contains(&original.as_u16()));
        let status = rewritten.map_or(original, |(_, to)| *to);
        let query = self
            .spec
            .query
            .replace("{status}", status.as_str())
            .replace("{originalStatus}", original.as_str())
            .replace("{url}", &query_escape(&url));
        let mut page = match self.page(&host, &query, headers, conn).await {
            Some(page) => page,
            None => {
                crate::data::proxy::ProxyError::Upstream { server: self.spec.service.clone(), reason: String::new() }
                    .response()
            }
        };
        *page.status_mut() = status;
        page
    }

    /// The error page, from a server of the error service.
    async fn page(
        &self,
        host: &str,
        query: &str,
        headers: HeaderMap,
        conn: crate::data::proxy::Connection,
    ) -> Option<Response<ProxyBody>> {
        let pick = self.service.pick(&headers)?;
        let mut head = Request::new(());
        *head.uri_mut() = if query.is_empty() { "/".parse().ok()? } else { query.parse().ok()? };
        *head.headers_mut() = headers;
        head.headers_mut().insert(header::HOST, host.parse().ok()?);
        let (head, ()) = head.into_parts();
        let upgrades: [String; 0] = [];
        let client = forward::Client {
            ip: conn.peer_ip.as_str(),
            tls: conn.tls,
            port: 0,
            host,
            read_timeout: std::time::Duration::from_secs(30),
            upgrades: &upgrades,
        };
        let server = &pick.pool.servers[pick.server].url;
        let empty = http_body_util::Empty::<bytes::Bytes>::new();
        let body =
            http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(empty, |never| match never {}));
        let request = forward::request(&head, server, pick.pool.spec.pass_host_header, &client).map(|()| body);
        let response = tokio::time::timeout(PAGE_WITHIN, self.upstream.client.request(request)).await.ok()?.ok()?;
        let (mut parts, body) = response.into_parts();
        forward::strip_hop_by_hop(&mut parts.headers);
        Some(Response::from_parts(parts, ProxyBody::Upstream(body)))
    }
}

/// Go's `url.QueryEscape`: unreserved characters kept, space as `+`, the rest `%XX`.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_read_as_traefik_reads_them() {
        assert_eq!(codes("404"), Some((404, 404)));
        assert_eq!(codes("500-599"), Some((500, 599)));
        assert_eq!(codes("500-502-504"), Some((500, 502)));
        assert_eq!(codes(" 500"), None);
        assert_eq!(codes("5xx"), None);
    }

    #[test]
    fn urls_escape_as_query_values() {
        assert_eq!(query_escape("http://a.example/x y?z=1"), "http%3A%2F%2Fa.example%2Fx+y%3Fz%3D1");
    }
}
