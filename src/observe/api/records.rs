//! The API's records, in Traefik's shape: each router, service and middleware as its keys say,
//! with Traefik's runtime fields added (`status`, `error`, `using` or `usedBy`, `name`,
//! `provider`, and `priorityStr`, `type`, `serverStatus` where Traefik has them). Names are
//! qualified with the provider (`app@etcd`).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::{
    config::StaticConfig,
    data::balancer::Pool,
    dynamic::runtime::{Info, Runtime, Status},
};

/// One record, and what filters and sorting read of it.
pub struct Record {
    /// Qualified: `app@etcd`.
    pub name: String,
    pub status: Status,
    pub provider: String,
    pub rule: String,
    /// As configured (routers).
    pub service: String,
    /// Qualified (routers).
    pub middlewares: Vec<String>,
    pub priority: i64,
    pub entry_points: usize,
    pub kind: String,
    pub servers: usize,
    pub json: Value,
}

impl Record {
    /// A service's or middleware's record: only its name, status, provider and type sort it.
    fn plain(name: &str, info: &Info, provider: &str, object: Map<String, Value>) -> Record {
        Record {
            name: qualify(name, provider),
            status: info.status,
            provider: crate::dynamic::from_file::provider(name, provider).to_string(),
            rule: String::new(),
            service: String::new(),
            middlewares: Vec::new(),
            priority: 0,
            entry_points: 0,
            kind: info.kind.clone(),
            servers: 0,
            json: Value::Object(object),
        }
    }
}

/// What records are built from.
pub struct Sources<'a> {
    pub runtime: &'a Runtime,
    pub statics: &'a StaticConfig,
    pub pools: HashMap<&'a str, &'a Pool>,
    pub provider: &'a str,
}

/// `name` with the provider unless it names one.
pub fn qualify(name: &str, provider: &str) -> String {
    if name.contains('@') {
        name.to_string()
    } else {
        format!("{name}@{provider}")
    }
}

/// A key of a configuration object, whatever its case (the KV layout's keys are not folded).
fn field<'v>(object: &'v Value, key: &str) -> Option<&'v Value> {
    object.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().map(|v| text(Some(v))).collect(),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        _ => Vec::new(),
    }
}

/// The record's object: its configuration, then the runtime fields.
fn object(info: &Info, name: &str, provider: &str) -> Map<String, Value> {
    let mut object = match &info.config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    if !info.errors.is_empty() {
        object.insert("error".into(), json!(info.errors));
    }
    object.insert("status".into(), json!(info.status.as_str()));
    object.insert("name".into(), json!(qualify(name, provider)));
    object.insert("provider".into(), json!(crate::dynamic::from_file::provider(name, provider)));
    object
}

impl Sources<'_> {
    pub fn routers(&self) -> Vec<Record> {
        let provider = self.provider;
        self.runtime
            .routers
            .iter()
            .map(|(name, info)| {
                let config = &info.config;
                let middlewares: Vec<String> =
                    strings(field(config, "middlewares")).iter().map(|m| qualify(m, provider)).collect();
                let listed = strings(field(config, "entryPoints"));
                let wanted = if listed.is_empty() { self.statics.default_entry_points.clone() } else { listed };
                let using: Vec<String> =
                    wanted.into_iter().filter(|ep| self.statics.entry_points.contains_key(ep)).collect();
                let priority = text(field(config, "priority")).parse::<i64>().unwrap_or(0);
                let mut object = object(info, name, provider);
                if let Some((key, _)) = object.iter().find(|(k, _)| k.eq_ignore_ascii_case("middlewares")) {
                    let key = key.clone();
                    object.insert(key, json!(middlewares));
                }
                if let Some(Value::Object(tls)) =
                    object.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case("tls")).map(|(_, v)| v)
                {
                    if !tls.keys().any(|k| k.eq_ignore_ascii_case("options")) {
                        tls.insert("options".into(), json!("default"));
                    }
                }
                if !using.is_empty() {
                    object.insert("using".into(), json!(using));
                }
                object.insert("priorityStr".into(), json!(priority.to_string()));
                Record {
                    name: qualify(name, provider),
                    status: info.status,
                    provider: crate::dynamic::from_file::provider(name, provider).to_string(),
                    rule: text(field(config, "rule")),
                    service: text(field(config, "service")),
                    middlewares,
                    priority,
                    // Traefik sorts by the entrypoints configured, not those in use.
                    entry_points: strings(field(config, "entryPoints")).len(),
                    kind: String::new(),
                    servers: 0,
                    json: Value::Object(object),
                }
            })
            .collect()
    }

    /// Which routers name each service and middleware (unqualified names), for `usedBy`.
    fn users(&self) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
        let (mut services, mut middlewares) =
            (BTreeMap::<String, Vec<String>>::new(), BTreeMap::<String, Vec<String>>::new());
        for (name, info) in &self.runtime.routers {
            let router = qualify(name, self.provider);
            let service = text(field(&info.config, "service"));
            // `api@internal` is not the user's service `api`; other providers' names neither.
            let kept = service.ends_with(&format!("@{}", self.provider)) || service.ends_with("@file");
            if !service.contains('@') || kept {
                services.entry(crate::dynamic::unqualified(&service).to_string()).or_default().push(router.clone());
            }
            for m in strings(field(&info.config, "middlewares")) {
                middlewares.entry(crate::dynamic::unqualified(&m).to_string()).or_default().push(router.clone());
            }
        }
        (services, middlewares)
    }

    pub fn services(&self) -> Vec<Record> {
        let (users, _) = self.users();
        self.runtime
            .services
            .iter()
            .map(|(name, info)| {
                let used_by = users.get(name).cloned().unwrap_or_default();
                let mut object = object(info, name, self.provider);
                object.insert("type".into(), json!(info.kind));
                // Traefik shows a load balancer's defaults: Pylon balances by smooth weighted
                // round robin and passes the client's Host unless told not to.
                if let Some(Value::Object(lb)) = object.get_mut("loadBalancer") {
                    lb.entry("passHostHeader").or_insert(json!(true));
                    lb.entry("strategy").or_insert(json!("wrr"));
                }
                if !used_by.is_empty() {
                    object.insert("usedBy".into(), json!(used_by));
                }
                let servers = field(&info.config, "loadBalancer").map_or(0, |lb| match field(lb, "servers") {
                    Some(Value::Array(servers)) => servers.len(),
                    _ => 0,
                });
                // Traefik shows server health for the services routers use; servers start UP.
                if let (false, Some(pool)) = (used_by.is_empty(), self.pools.get(name.as_str())) {
                    let status: Map<String, Value> = pool
                        .servers
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.url.to_string(), json!(if pool.is_healthy(i) { "UP" } else { "DOWN" })))
                        .collect();
                    object.insert("serverStatus".into(), Value::Object(status));
                }
                Record { servers, ..Record::plain(name, info, self.provider, object) }
            })
            .collect()
    }

    pub fn middlewares(&self) -> Vec<Record> {
        let (_, users) = self.users();
        self.runtime
            .middlewares
            .iter()
            .map(|(name, info)| {
                let mut object = object(info, name, self.provider);
                object.insert("type".into(), json!(info.kind));
                if let Some(used_by) = users.get(name) {
                    object.insert("usedBy".into(), json!(used_by));
                }
                Record::plain(name, info, self.provider, object)
            })
            .collect()
    }
}
