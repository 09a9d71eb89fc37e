//! Dynamic configuration as written, in Traefik v3's shape: the KV layout
//! (`http/routers/<r>/rule`) and the file provider (`[http.routers.r] rule = ...`) both become
//! these types. Keys arrive lowercased; router and service names as written. Routers and
//! services are read one at a time, so that one that is wrong is rejected alone.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Deserializer};

pub use crate::config::file::{RawCertificate, RawDomain};
use crate::config::lenient;

#[derive(Debug, Default, Deserialize)]
pub struct RawRouter {
    pub rule: Option<String>,
    pub service: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub entrypoints: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub middlewares: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub priority: Option<u64>,
    #[serde(default, deserialize_with = "router_tls")]
    pub tls: Option<RawRouterTls>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRouterTls {
    pub certresolver: Option<String>,
    pub options: Option<String>,
    #[serde(default)]
    pub domains: Vec<RawDomain>,
}

/// `tls = true` (a KV leaf, or TOML), `tls = {}`, or a table of settings.
fn router_tls<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RawRouterTls>, D::Error> {
    use serde::de::Error;
    match toml::Value::deserialize(d)? {
        toml::Value::Boolean(true) => Ok(Some(RawRouterTls::default())),
        toml::Value::Boolean(false) => Ok(None),
        toml::Value::String(s) if s.eq_ignore_ascii_case("true") || s.is_empty() => Ok(Some(RawRouterTls::default())),
        toml::Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(None),
        table @ toml::Value::Table(_) => RawRouterTls::deserialize(table).map(Some).map_err(D::Error::custom),
        other => Err(D::Error::custom(format!("expected true, false or a table of TLS settings, found {other}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawService {
    pub loadbalancer: Option<RawLoadBalancer>,
    pub weighted: Option<RawWeighted>,
    pub mirroring: Option<RawMirroring>,
    pub failover: Option<RawFailover>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLoadBalancer {
    #[serde(default)]
    pub servers: Vec<RawServer>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub passhostheader: Option<bool>,
    pub healthcheck: Option<RawHealthCheck>,
    pub sticky: Option<RawSticky>,
    pub responseforwarding: Option<RawResponseForwarding>,
    pub serverstransport: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub url: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub weight: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub port: Option<u64>,
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub method: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub status: Option<u64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSticky {
    pub cookie: Option<RawCookie>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCookie {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub secure: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub httponly: Option<bool>,
    pub samesite: Option<String>,
    pub path: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxage: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawResponseForwarding {
    #[serde(default, deserialize_with = "lenient::duration")]
    pub flushinterval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawWeighted {
    #[serde(default)]
    pub services: Vec<RawWeightedService>,
    pub sticky: Option<RawSticky>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawWeightedService {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub weight: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMirroring {
    pub service: Option<String>,
    #[serde(default)]
    pub mirrors: Vec<RawMirror>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxbodysize: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMirror {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub percent: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawFailover {
    pub service: Option<String>,
    pub fallback: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTlsStore {
    pub defaultcertificate: Option<RawCertificate>,
}
