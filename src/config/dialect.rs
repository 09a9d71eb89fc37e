//! Which Traefik a static configuration speaks, told by its keys: v1.7 (`[acme]`, `[consul]`,
//! `defaultEntryPoints`, ...) or v3 (`providers`, `certificatesResolvers`, `log`, ...). A v3
//! tree is folded into the vocabulary the serde types read (`providers.etcd.endpoints` becomes
//! `etcd.endpoint`, `log.level` becomes `loglevel`, ...), origins kept, so that every later
//! diagnostic still points at the line the user wrote; [`Aliases`] names keys back in v3 terms.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::{Diagnostic, Origin};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    V1,
    V3,
}

/// Top-level keys only Traefik v1.7 has (besides its providers' sections,
/// [`super::file::FOREIGN_PROVIDERS`] and `file`).
const V1_TOP: &[&str] = &[
    "defaultentrypoints",
    "loglevel",
    "debug",
    "traefiklog",
    "acme",
    "consul",
    "etcd",
    "file",
    "web",
    "respondingtimeouts",
    "forwardingtimeouts",
    "gracetimeout",
    "insecureskipverify",
    "maxidleconnsperhost",
    "rootcas",
];

fn v1_top(key: &str) -> bool {
    V1_TOP.contains(&key) || super::file::FOREIGN_PROVIDERS.contains(&key)
}
/// Entrypoint keys only Traefik v1.7 has.
const V1_ENTRYPOINT: &[&str] = &["redirect", "tls", "compress", "auth", "whitelist", "whitelistsourcerange"];
/// Top-level keys only Traefik v2/v3 has.
const V3_TOP: &[&str] = &["providers", "certificatesresolvers", "log", "serverstransport", "global", "experimental"];
/// Entrypoint keys only Traefik v2/v3 has.
const V3_ENTRYPOINT: &[&str] = &["transport", "asdefault"];

/// Traefik v3's providers that Pylon does not implement.
pub const FOREIGN_V3_PROVIDERS: &[&str] = &[
    "docker",
    "swarm",
    "kubernetescrd",
    "kubernetesingress",
    "kubernetesgateway",
    "kubernetesingressnginx",
    "consulcatalog",
    "nomad",
    "ecs",
    "zookeeper",
    "redis",
    "http",
    "plugin",
    "rest",
];

/// How keys folded from v3 are named back (`etcd.endpoint` → `providers.etcd.endpoints`), for
/// the messages about them.
#[derive(Debug, Default)]
pub struct Aliases(Vec<(String, String)>);

impl Aliases {
    /// `path` as the user wrote it.
    pub fn shown(&self, path: &str) -> String {
        let mut path = path.to_string();
        // A key folded twice (`providers.etcd.endpoints` → `providers.etcd.endpoint` → `etcd.endpoint`)
        // is named back in as many steps.
        for _ in 0..=self.0.len() {
            let Some(next) = self.step(&path) else { break };
            path = next;
        }
        path
    }

    fn step(&self, path: &str) -> Option<String> {
        self.0.iter().find_map(|(folded, written)| {
            if path == folded {
                return Some(written.clone());
            }
            let rest = path.strip_prefix(folded.as_str())?.strip_prefix('.')?;
            Some(format!("{written}.{rest}"))
        })
    }
}

/// What [`detect`] found: the dialect of the file (or the store) and whether any v3 key is
/// there at all (flags of v3's form laid over a v1.7 file are folded too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub dialect: Dialect,
    pub any_v3: bool,
}

/// The dialect of `value`, told by the keys of the file or the store (flags and variables
/// may use either form over either), or an error naming a v1.7 key and a v3 key found together.
pub fn detect(value: &Value, origins: &BTreeMap<String, Origin>) -> Result<Found, Diagnostic> {
    let Some(top) = value.as_table() else { return Ok(Found { dialect: Dialect::V1, any_v3: false }) };
    let mut v1 = Vec::new();
    let mut v3 = Vec::new();
    let mut any_v3 = false;
    let written = |path: &str| !matches!(origins.get(path), Some(Origin::Flag(_) | Origin::Env(_)));
    for key in top.keys() {
        if v1_top(key) && written(key) {
            v1.push(key.clone());
        }
        if V3_TOP.contains(&key.as_str()) {
            any_v3 = true;
            if written(key) {
                v3.push(key.clone());
            }
        }
    }
    if let Some(entry_points) = top.get("entrypoints").and_then(Value::as_table) {
        for (name, ep) in entry_points {
            for key in ep.as_table().map(|t| t.keys().collect::<Vec<_>>()).unwrap_or_default() {
                let path = format!("entrypoints.{name}.{key}");
                if V1_ENTRYPOINT.contains(&key.as_str()) && written(&path) {
                    v1.push(path.clone());
                }
                if V3_ENTRYPOINT.contains(&key.as_str()) {
                    any_v3 = true;
                    if written(&path) {
                        v3.push(path);
                    }
                }
            }
        }
    }
    let found = |dialect| Ok(Found { dialect, any_v3 });
    match (v1.first(), v3.first()) {
        (Some(old), Some(new)) => {
            let at = |k: &str| origins.get(k).cloned().unwrap_or(Origin::Default);
            Err(Diagnostic {
                origin: at(new),
                message: format!(
                    "this configuration mixes Traefik v1.7's {old:?} ({}) with Traefik v3's {new:?} ({}); \
                     write it in one dialect (docs/configuration.md shows both side by side)",
                    at(old),
                    at(new)
                ),
            })
        }
        // Flags alone in v3's form (or over a file of neither dialect's own keys) are v3.
        (None, _) if any_v3 => found(Dialect::V3),
        _ => found(Dialect::V1),
    }
}

/// Sections that a flag turns on with `true` (`--api`, `--providers.etcd=true`,
/// `--certificatesResolvers.le.acme.tlsChallenge=true`): `"true"` becomes an empty section,
/// `"false"` removes it. `*` is any one name.
const SECTIONS: &[&[&str]] = &[
    &["api"],
    &["ping"],
    &["web"],
    &["accesslog"],
    &["log"],
    &["metrics", "prometheus"],
    &["providers", "*"],
    &["consul"],
    &["etcd"],
    &["file"],
    &["acme", "tlschallenge"],
    &["acme", "httpchallenge"],
    &["certificatesresolvers", "*", "acme", "tlschallenge"],
    &["certificatesresolvers", "*", "acme", "httpchallenge"],
    &["entrypoints", "*", "http", "tls"],
    &["entrypoints", "*", "tls"],
    &["entrypoints", "*", "forwardedheaders"],
    &["entrypoints", "*", "proxyprotocol"],
];

/// Applies [`SECTIONS`] to `value`.
pub fn enable_flagged_sections(value: &mut Value) {
    for pattern in SECTIONS {
        enable(value, pattern);
    }
}

fn enable(value: &mut Value, pattern: &[&str]) {
    let Some((first, rest)) = pattern.split_first() else { return };
    let Some(table) = value.as_table_mut() else { return };
    let keys: Vec<String> = match *first {
        "*" => table.keys().cloned().collect(),
        key => vec![key.to_string()],
    };
    for key in keys {
        if rest.is_empty() {
            match table.get(&key).and_then(Value::as_str) {
                Some("true") => drop(table.insert(key, Value::Table(Table::new()))),
                Some("false") => drop(table.remove(&key)),
                _ => {}
            }
        } else if let Some(child) = table.get_mut(&key) {
            enable(child, rest);
        }
    }
}

/// Folds a v3 tree into the vocabulary of [`super::file::RawConfig`], moving origins along.
/// Entrypoints' `transport.lifeCycle` and `transport.respondingTimeouts` become the one set
/// Pylon applies to every entrypoint: two entrypoints that disagree are an error. Returns the
/// aliases, the errors and the warnings.
pub fn fold_v3(
    value: &mut Value,
    origins: &mut BTreeMap<String, Origin>,
) -> (Aliases, Vec<Diagnostic>, Vec<Diagnostic>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let mut moves: Vec<(String, String)> = Vec::new();
    let Some(top) = value.as_table_mut() else { return (Aliases::default(), errors, warnings) };
    let at = |origins: &BTreeMap<String, Origin>, path: &str| origins.get(path).cloned().unwrap_or(Origin::Default);
    // `--loglevel` (a flag of both dialects) wins over the file's `log.level`; a flag's
    // `--log.level` wins over a v1.7 file's `logLevel` (the move below replaces it).
    if top.contains_key("loglevel") && rank(origins, "loglevel") > 0 {
        let _ = take(top, "log.level");
    }
    let mut renames = vec![("log.level".to_string(), "loglevel".to_string()), ("log".into(), "traefiklog".into())];
    for store in ["etcd", "consul"] {
        renames.push((format!("providers.{store}.endpoints"), format!("providers.{store}.endpoint")));
        renames.push((format!("providers.{store}.rootkey"), format!("providers.{store}.prefix")));
        renames.push((format!("providers.{store}"), store.to_string()));
    }
    renames.push(("providers.file".into(), "file".into()));
    for key in ["insecureskipverify", "rootcas", "maxidleconnsperhost", "forwardingtimeouts"] {
        renames.push((format!("serverstransport.{key}"), key.to_string()));
    }
    for (from, to) in renames {
        if let Some(v) = take(top, &from) {
            if put(top, &to, v, (&to, &from), origins) {
                move_origins(origins, &from, &to);
                moves.push((from, to));
            }
        }
    }
    for empty in ["providers", "serverstransport"] {
        if top.get(empty).and_then(Value::as_table).is_some_and(Table::is_empty) {
            top.remove(empty);
        }
    }
    let names: Vec<String> =
        top.get("entrypoints").and_then(Value::as_table).map(|t| t.keys().cloned().collect()).unwrap_or_default();
    for section in ["lifecycle", "respondingtimeouts"] {
        let mut first: Option<(String, Value)> = None;
        for name in &names {
            let from = format!("entrypoints.{name}.transport.{section}");
            let Some(v) = take(top, &from) else { continue };
            match &first {
                None => {
                    first = Some((from.clone(), v.clone()));
                    if put(top, section, v, (section, &from), origins) {
                        move_origins(origins, &from, section);
                        moves.push((from, section.to_string()));
                    }
                }
                Some((other, seen)) if *seen != v => errors.push(Diagnostic {
                    origin: at(origins, &from),
                    message: format!(
                        "{from} differs from {other}: Pylon applies one {section} to every entrypoint; \
                         give them the same values or keep one"
                    ),
                }),
                Some(_) => {}
            }
        }
    }
    for name in &names {
        let path = format!("entrypoints.{name}.transport");
        let Some(Value::Table(rest)) = take(top, &path) else { continue };
        for key in rest.keys() {
            warnings.push(Diagnostic {
                origin: at(origins, &format!("{path}.{key}")),
                message: format!("{path}.{key} is not supported (Pylon reads transport.lifeCycle and transport.respondingTimeouts); ignored"),
            });
        }
    }
    let mut aliases = Aliases::default();
    for (from, to) in moves {
        aliases.0.push((to, from));
    }
    // Longest folded paths first, so that `etcd.endpoint` is shown before `etcd`.
    aliases.0.sort_by_key(|(to, _)| std::cmp::Reverse(to.len()));
    (aliases, errors, warnings)
}

fn take(table: &mut Table, path: &str) -> Option<Value> {
    match path.split_once('.') {
        None => table.remove(path),
        Some((first, rest)) => take(table.get_mut(first)?.as_table_mut()?, rest),
    }
}

/// How much a value's origin weighs when two give the same key: a flag, then a variable, then
/// the file or the store.
fn rank(origins: &BTreeMap<String, Origin>, path: &str) -> u8 {
    origins.get(path).map_or(0, weight)
}

fn weight(origin: &Origin) -> u8 {
    match origin {
        Origin::Flag(_) => 2,
        Origin::Env(_) => 1,
        _ => 0,
    }
}

/// Puts `v` (from the key `paths.1`) at `path` (the key `paths.0`), laid over what is there key
/// by key: of two values for one key, the one with the weightier origin wins (a v1.7 flag over
/// a v3 file's key, or a v3 flag over a v1.7 file's); `false` when a value that is no table is
/// in the way.
fn put(table: &mut Table, path: &str, v: Value, paths: (&str, &str), origins: &BTreeMap<String, Origin>) -> bool {
    match path.split_once('.') {
        None => {
            match table.get_mut(path) {
                Some(existing) => merge(existing, v, paths, origins),
                None => drop(table.insert(path.to_string(), v)),
            }
            true
        }
        Some((first, rest)) => match table.entry(first).or_insert_with(|| Value::Table(Table::new())) {
            Value::Table(child) => put(child, rest, v, paths, origins),
            _ => false,
        },
    }
}

fn merge(into: &mut Value, over: Value, (into_at, over_at): (&str, &str), origins: &BTreeMap<String, Origin>) {
    match (into, over) {
        (Value::Table(base), Value::Table(top)) => {
            for (key, value) in top {
                let at = (format!("{into_at}.{key}"), format!("{over_at}.{key}"));
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value, (&at.0, &at.1), origins),
                    None => drop(base.insert(key, value)),
                }
            }
        }
        (slot, over) => {
            if rank(origins, over_at) >= rank(origins, into_at) {
                *slot = over;
            }
        }
    }
}

/// Gives the keys moved from `from` to `to` their origins, but where a weightier origin's value
/// stayed (see [`merge`]).
fn move_origins(origins: &mut BTreeMap<String, Origin>, from: &str, to: &str) {
    let moved: Vec<(String, Origin)> = origins
        .iter()
        .filter(|(k, _)| *k == from || k.starts_with(&format!("{from}.")))
        .map(|(k, o)| (format!("{to}{}", &k[from.len()..]), o.clone()))
        .collect();
    for (path, origin) in moved {
        if origins.get(&path).is_none_or(|kept| weight(kept) <= weight(&origin)) {
            origins.insert(path, origin);
        }
    }
}
