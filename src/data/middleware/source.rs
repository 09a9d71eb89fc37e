//! `sourceCriterion`, shared by `rateLimit` and `inFlightReq`: what requests are counted
//! together. One of `ipStrategy` (the client IP as `ipAllowList` finds it), `requestHeaderName`
//! (that header's value) or `requestHost` (the host, port included). A request without one
//! (no such header, no IP at that depth) counts under the empty source, with every other such.

use http::{HeaderName, Request};
use serde::Deserialize;

use super::ip_allow_list::{self, Strategy};
use crate::{config::Checker, data::proxy::Connection};

#[derive(Debug, Default, Deserialize)]
pub(super) struct Raw {
    ipstrategy: Option<ip_allow_list::RawStrategy>,
    requestheadername: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    requesthost: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Ip(Strategy),
    Header(HeaderName),
    Host,
}

/// The criterion at `path`, or `default` when none is set; `None` (with an error) when
/// several are.
pub(super) fn decode(raw: Option<Raw>, default: Source, path: &str, c: &mut Checker) -> Option<Source> {
    let Some(raw) = raw else { return Some(default) };
    let header = raw.requestheadername.filter(|h| !h.is_empty());
    let host = raw.requesthost == Some(true);
    let set = [raw.ipstrategy.is_some(), header.is_some(), host].iter().filter(|s| **s).count();
    if set > 1 {
        c.error(path, "ipStrategy, requestHeaderName and requestHost are mutually exclusive");
        return None;
    }
    if let Some(strategy) = raw.ipstrategy {
        return Some(Source::Ip(ip_allow_list::strategy(strategy, &format!("{path}.ipstrategy"), c)?));
    }
    if let Some(name) = header {
        return match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Some(Source::Header(name)),
            Err(_) => {
                c.error(&format!("{path}.requestheadername"), format!("{name:?} is not a header name"));
                None
            }
        };
    }
    Some(if host { Source::Host } else { default })
}

impl Source {
    /// A hash of the source a request counts under (`keys` chosen at random per middleware),
    /// computed without building the source's text.
    pub fn hash_of<B>(&self, req: &Request<B>, conn: Connection, keys: &impl std::hash::BuildHasher) -> u64 {
        match self {
            Source::Ip(strategy) => keys.hash_one(strategy.client_ip(req.headers(), conn.peer.ip())),
            Source::Header(name) => keys.hash_one(req.headers().get(name).map_or(&b""[..], |v| v.as_bytes())),
            Source::Host => keys.hash_one(crate::data::proxy::host_of(req)),
        }
    }

    /// The source a request counts under.
    pub fn of<B>(&self, req: &Request<B>, conn: Connection) -> String {
        match self {
            Source::Ip(strategy) => {
                strategy.client_ip(req.headers(), conn.peer.ip()).map(|ip| ip.to_string()).unwrap_or_default()
            }
            Source::Header(name) => {
                req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
            }
            Source::Host => crate::data::proxy::host_of(req).to_string(),
        }
    }
}
