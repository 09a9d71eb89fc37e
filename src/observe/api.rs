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
    config::StaticConfig,
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
                let all: Vec<Value> = self.statics.entry_points.keys().map(|n| self.entry_point(n)).collect();
                list(all, &query)
            }
            ["api", "entrypoints", name] => {
                let name = query::decode_path(name);
                match self.statics.entry_points.contains_key(&name) {
                    true => answer(StatusCode::OK, &self.entry_point(&name), None),
                    false => error(StatusCode::NOT_FOUND, &format!("entry point not found: {name}")),
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
            "features": {
                "tracing": "",
                "metrics": if self.statics.metrics.is_some() { "Prometheus" } else { "" },
                "accessLog": self.statics.access_log.is_some(),
            },
            "providers": if self.statics.file.is_some() { json!([provider, "File"]) } else { json!([provider]) },
        })
    }

    fn entry_point(&self, name: &str) -> Value {
        let ep = &self.statics.entry_points[name];
        let mut object = Map::new();
        object.insert("address".into(), json!(ep.address.to_string()));
        if let Some(redirect) = &ep.redirect {
            let to = json!({ "to": redirect.entry_point, "permanent": redirect.permanent });
            object.insert("http".into(), json!({ "redirections": { "entryPoint": to } }));
        } else if let Some(tls) = &ep.router_tls {
            let tls =
                json!({ "certResolver": tls.cert_resolver, "options": tls.options.as_deref().unwrap_or("default") });
            object.insert("http".into(), json!({ "tls": tls }));
        }
        if !ep.middlewares.is_empty() {
            object.insert("middlewares".into(), json!(ep.middlewares));
        }
        object.insert("name".into(), json!(name));
        Value::Object(object)
    }
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
