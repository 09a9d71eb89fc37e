//! Traefik's API (`/api/...`, GET only) from this replica's view: the dynamic configuration's
//! routers, services and middlewares with their status and errors ([`records`]), filtered,
//! sorted and paged as Traefik does ([`query`]); the overview, the entrypoints, the version
//! and the raw data. It reads what the control plane last published and never the store.

pub mod query;
pub mod records;

use std::{collections::HashMap, sync::Arc};

use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::{
    config::{
        model::{EntryPoint, ForwardedTrust},
        StaticConfig,
    },
    control::watcher::Status,
    data::{plane::Plane, proxy::ProxyBody},
    dynamic::runtime::Status as Health,
};
use query::{List, Query};
use records::{Record, Sources};

/// What the API answers from.
pub struct Api {
    pub status: watch::Receiver<Status>,
    pub statics: Arc<StaticConfig>,
    pub plane: Arc<Plane>,
    /// The provider names are qualified with (`app@etcd`).
    pub provider: &'static str,
    /// When this replica started, RFC 3339.
    pub started: String,
    /// The cluster's replicas and ACME state, for `/api/pylon/cluster`.
    pub cluster: super::cluster::Cluster,
    /// The control plane's numbers and recent events (`/api/pylon/events`).
    pub control: Arc<super::control::ControlMetrics>,
}

/// A JSON answer, with `X-Next-Page` on lists.
fn answer(status: StatusCode, body: &Value, next_page: Option<usize>) -> Response<ProxyBody> {
    let mut text = serde_json::to_string(body).unwrap_or_default();
    text.push('\n');
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(next) = next_page {
        response.headers_mut().insert("x-next-page", HeaderValue::from(next));
    }
    response
}

/// Traefik's errors: a JSON message, sent as text.
fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = answer(status, &json!({ "message": message }), None);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

impl Api {
    pub fn answer(&self, method: &Method, path: &str, query: Option<&str>) -> Response<ProxyBody> {
        if method != Method::GET {
            return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed");
        }
        let runtime = self.status.borrow().runtime.clone();
        let snapshot = self.plane.load();
        let pools = snapshot.table.pools.iter().map(|p| (p.service.as_str(), &**p)).collect();
        let sources = Sources { runtime: &runtime, statics: &self.statics, pools, provider: self.provider };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let query = Query::parse(query);
        match segments.as_slice() {
            ["api", "version"] => answer(
                StatusCode::OK,
                &json!({ "Version": env!("CARGO_PKG_VERSION"), "Codename": "pylon", "startDate": self.started }),
                None,
            ),
            ["api", "overview"] => answer(StatusCode::OK, &self.overview(&sources), None),
            ["api", "rawdata"] => answer(StatusCode::OK, &rawdata(&sources), None),
            ["api", "pylon", "cluster"] => answer(StatusCode::OK, &self.cluster.view(), None),
            ["api", "pylon", "events"] => {
                let recent = self.control.recent.lock().unwrap_or_else(|e| e.into_inner());
                answer(StatusCode::OK, &Value::Array(recent.iter().rev().cloned().collect()), None)
            }
            ["api", "entrypoints"] => {
                let all: Vec<Value> =
                    self.statics.entry_points.iter().map(|(n, ep)| entry_point(&self.statics, n, ep)).collect();
                list(all, &query)
            }
            ["api", "entrypoints", name] => {
                let name = query::decode_path(name);
                match self.statics.entry_points.get(&name) {
                    Some(ep) => answer(StatusCode::OK, &entry_point(&self.statics, &name, ep), None),
                    None => error(StatusCode::NOT_FOUND, &format!("entry point not found: {name}")),
                }
            }
            ["api", "http", kind @ ("routers" | "services" | "middlewares")] => {
                let (list_kind, mut records) = records_of(kind, &sources);
                records.retain(|r| query.keeps(list_kind, r));
                query.sort(list_kind, &mut records);
                list(records.into_iter().map(|r| r.json).collect(), &query)
            }
            ["api", "http", kind @ ("routers" | "services" | "middlewares"), name] => {
                let name = query::decode_path(name);
                let (_, records) = records_of(kind, &sources);
                match records.into_iter().find(|r| r.name == name) {
                    Some(record) => answer(StatusCode::OK, &record.json, None),
                    None => error(StatusCode::NOT_FOUND, &format!("{} not found: {name}", kind.trim_end_matches('s'))),
                }
            }
            // Pylon routes no TCP or UDP: Traefik's dashboard asks anyway.
            ["api", "tcp" | "udp", "routers" | "services" | "middlewares"] => list(Vec::new(), &query),
            _ => error(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }

    fn overview(&self, sources: &Sources) -> Value {
        let section = |records: Vec<Record>| {
            let count = |s: Health| records.iter().filter(|r| r.status == s).count();
            json!({ "total": records.len(), "warnings": count(Health::Warning), "errors": count(Health::Disabled) })
        };
        let empty = json!({ "total": 0, "warnings": 0, "errors": 0 });
        let provider = match self.provider {
            "etcd" => "Etcd",
            "consul" => "Consul",
            _ => "Embedded",
        };
        json!({
            "http": { "routers": section(sources.routers()), "services": section(sources.services()), "middlewares": section(sources.middlewares()) },
            "tcp": { "routers": empty, "services": empty, "middlewares": empty },
            "udp": { "routers": empty, "services": empty },
            "certificates": certificates(&self.plane.load(), crate::calendar::unix_now()),
            "features": {
                "tracing": "",
                "metrics": if self.statics.metrics.is_some() { "Prometheus" } else { "" },
                "accessLog": self.statics.access_log.is_some(),
            },
            "providers": if self.statics.file.is_some() { json!([provider, "File"]) } else { json!([provider]) },
        })
    }
}

/// An entrypoint as Traefik shows it: its transport (Pylon's one set, shared by every
/// entrypoint), whose forwarded headers and PROXY headers it trusts, and its `http` section.
fn entry_point(statics: &StaticConfig, name: &str, ep: &EntryPoint) -> Value {
    let mut object = Map::new();
    object.insert("address".into(), json!(ep.address.to_string()));
    object.insert("transport".into(), transport(statics));
    object.insert("forwardedHeaders".into(), trust(&ep.forwarded_trust));
    if let Some(proxy) = &ep.proxy_protocol {
        object.insert("proxyProtocol".into(), trust(proxy));
    }
    let mut http = Map::new();
    if let Some(redirect) = &ep.redirect {
        let to = json!({ "to": redirect.entry_point, "permanent": redirect.permanent });
        http.insert("redirections".into(), json!({ "entryPoint": to }));
    }
    if !ep.middlewares.is_empty() {
        http.insert("middlewares".into(), json!(ep.middlewares));
    }
    if let Some(tls) = &ep.router_tls {
        let mut object = Map::new();
        object.insert("options".into(), json!(tls.options.as_deref().unwrap_or("default")));
        if let Some(resolver) = &tls.cert_resolver {
            object.insert("certResolver".into(), json!(resolver));
        }
        if !tls.domains.is_empty() {
            let domains: Vec<Value> = tls.domains.iter().map(|d| json!({ "main": d.main, "sans": d.sans })).collect();
            object.insert("domains".into(), Value::Array(domains));
        }
        http.insert("tls".into(), Value::Object(object));
    }
    object.insert("http".into(), Value::Object(http));
    object.insert("name".into(), json!(name));
    Value::Object(object)
}

/// `transport`, with durations as Traefik's API writes them: nanoseconds, `"10000000000ns"`.
/// Zero durations are left out, as Go's `omitempty` does.
fn transport(statics: &StaticConfig) -> Value {
    let ns = |d: std::time::Duration| json!(format!("{}ns", d.as_nanos()));
    let (t, life) = (&statics.transport, &statics.lifecycle);
    let mut life_cycle = Map::new();
    if !life.request_accept_grace.is_zero() {
        life_cycle.insert("requestAcceptGraceTimeout".into(), ns(life.request_accept_grace));
    }
    if !life.grace_timeout.is_zero() {
        life_cycle.insert("graceTimeOut".into(), ns(life.grace_timeout));
    }
    let mut responding = Map::new();
    responding.insert("readTimeout".into(), ns(t.header_read_timeout));
    if let Some(write) = t.write_stall_timeout {
        responding.insert("writeTimeout".into(), ns(write));
    }
    responding.insert("idleTimeout".into(), ns(t.idle_timeout));
    json!({ "lifeCycle": life_cycle, "respondingTimeouts": responding })
}

/// `forwardedHeaders` or `proxyProtocol`: `insecure` and `trustedIPs`, each left out when unset.
fn trust(trust: &ForwardedTrust) -> Value {
    let mut object = Map::new();
    if trust.insecure {
        object.insert("insecure".into(), json!(true));
    }
    if !trust.trusted.is_empty() {
        let ips: Vec<String> = trust.trusted.iter().map(ToString::to_string).collect();
        object.insert("trustedIPs".into(), json!(ips));
    }
    Value::Object(object)
}

/// The certificates served, as Traefik 3.7's overview counts them: errors are expired, warnings
/// have less than a third of their lifetime left (the dashboard's colours).
fn certificates(snapshot: &crate::data::plane::Snapshot, now: i64) -> Value {
    let (mut total, mut warnings, mut errors) = (0, 0, 0);
    for cert in snapshot.certs.certificates() {
        let Some(details) = cert.cert.first().and_then(|c| crate::der::details(c)) else { continue };
        total += 1;
        if details.not_after <= now {
            errors += 1;
        } else if (details.not_after - now) * 3 < details.not_after - details.not_before {
            warnings += 1;
        }
    }
    json!({ "total": total, "warnings": warnings, "errors": errors })
}

fn records_of(kind: &str, sources: &Sources) -> (List, Vec<Record>) {
    match kind {
        "routers" => (List::Routers, sources.routers()),
        "services" => (List::Services, sources.services()),
        _ => (List::Middlewares, sources.middlewares()),
    }
}

/// One page of `all`, with the next page's number.
fn list(all: Vec<Value>, query: &Query) -> Response<ProxyBody> {
    match query.page(all.len()) {
        Ok((range, next)) => answer(StatusCode::OK, &Value::Array(all[range].to_vec()), Some(next)),
        Err(message) => error(StatusCode::BAD_REQUEST, &message),
    }
}

/// `/api/rawdata`: every record, keyed by its qualified name.
fn rawdata(sources: &Sources) -> Value {
    let keyed =
        |records: Vec<Record>| -> Map<String, Value> { records.into_iter().map(|r| (r.name, r.json)).collect() };
    let empty: HashMap<String, Value> = HashMap::new();
    json!({
        "routers": keyed(sources.routers()),
        "middlewares": keyed(sources.middlewares()),
        "services": keyed(sources.services()),
        "tcpRouters": empty, "tcpMiddlewares": empty, "tcpServices": empty,
        "udpRouters": empty, "udpServices": empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, tree::STATIC_NAMES, Node};

    #[test]
    fn an_entrypoint_shows_its_transport_trust_and_http_section() {
        let text = "entryPoints:\n  web:\n    address: ':80'\n    transport:\n      lifeCycle: { graceTimeOut: 20s }\n      respondingTimeouts: { idleTimeout: 90s, writeTimeout: 5s }\n    forwardedHeaders: { trustedIPs: [10.0.0.0/8, 192.168.1.4] }\n    proxyProtocol: { insecure: true }\n    http:\n      redirections:\n        entryPoint: { to: websecure }\n      middlewares: [auth@etcd]\n  websecure:\n    address: ':443'\n    http:\n      tls: { options: modern, domains: [{ main: a.example, sans: [b.example] }] }\n";
        let loaded = load(Node::from_yaml("traefik.yml", text, STATIC_NAMES).unwrap()).unwrap();
        let (statics, eps) = (&loaded.config, &loaded.config.entry_points);
        let transport = json!({
            "lifeCycle": { "graceTimeOut": "20000000000ns" },
            "respondingTimeouts": { "readTimeout": "60000000000ns", "writeTimeout": "5000000000ns", "idleTimeout": "90000000000ns" }
        });
        assert_eq!(
            entry_point(statics, "web", &eps["web"]),
            json!({
                "address": "0.0.0.0:80",
                "transport": transport,
                "forwardedHeaders": { "trustedIPs": ["10.0.0.0/8", "192.168.1.4"] },
                "proxyProtocol": { "insecure": true },
                "http": { "redirections": { "entryPoint": { "to": "websecure", "permanent": true } }, "middlewares": ["auth@etcd"] },
                "name": "web"
            })
        );
        assert_eq!(
            entry_point(statics, "websecure", &eps["websecure"]),
            json!({
                "address": "0.0.0.0:443",
                "transport": transport,
                "forwardedHeaders": {},
                "http": { "tls": { "options": "modern", "domains": [{ "main": "a.example", "sans": ["b.example"] }] } },
                "name": "websecure"
            }),
            "one transport for every entrypoint; no proxyProtocol unless set"
        );
    }
}
