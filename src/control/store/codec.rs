//! Configuration as KV pairs, both ways: `pylon storeconfig` encodes the static configuration
//! and (`--dynamic`) the dynamic one in Traefik v3's layout; `pylon run` and the watcher decode
//! them. One leaf is one key; list items are numbered
//! (`defaultentrypoints/0`); a section that holds nothing, such as `[entryPoints.https.tls]`,
//! is the key of the section with the value `{}` so that it survives the round trip.
//! How to reach the store (`[consul]`, `[etcd]`, v3's `providers.consul`, `providers.etcd`) is a
//! replica's own business and is not stored.

use crate::{
    config::{Diagnostic, Node, Origin},
    limits::MAX_TREE_DEPTH,
};

use super::{keys::Keys, KeyValue};

/// Sections that describe the store itself and stay out of it.
const LOCAL_SECTIONS: &[&str] = &["consul", "etcd"];

/// The pairs `storeconfig` writes for a static source tree, sorted by key.
pub fn encode_static(keys: &Keys, tree: &Node) -> Vec<(String, String)> {
    // Traefik v3's `providers.etcd` and `providers.consul` are the same sections.
    let mut tree = tree.clone();
    if let Node::Table(top, _) = &mut tree {
        if let Some(Node::Table(providers, _)) = top.get_mut("providers") {
            providers.retain(|name, _| !LOCAL_SECTIONS.contains(&name.as_str()));
        }
    }
    encode(&tree, |top| !LOCAL_SECTIONS.contains(&top), |path| keys.static_key(path))
}

/// The pairs `storeconfig --dynamic` writes for a dynamic-config tree: Traefik's layout,
/// `<prefix>/http/routers/<name>/rule` and so on, sorted by key.
pub fn encode_dynamic(keys: &Keys, tree: &Node) -> Vec<(String, String)> {
    let known = |top: &str| top == "http" || top == "tls";
    encode(tree, known, |path| format!("{}/{}", keys.prefix(), path.join("/")))
}

fn encode(tree: &Node, keep: impl Fn(&str) -> bool, key: impl Fn(&[String]) -> String) -> Vec<(String, String)> {
    let (value, _) = tree.clone().into_value();
    let mut out = Vec::new();
    if let toml::Value::Table(table) = value {
        for (name, value) in table {
            if keep(&name) {
                flatten(&key, &mut vec![name], &value, &mut out);
            }
        }
    }
    out.sort();
    out
}

fn flatten(
    key: &impl Fn(&[String]) -> String,
    path: &mut Vec<String>,
    value: &toml::Value,
    out: &mut Vec<(String, String)>,
) {
    let mut descend = |path: &mut Vec<String>, k: String, v: &toml::Value| {
        path.push(k);
        flatten(key, path, v, out);
        path.pop();
    };
    match value {
        toml::Value::Table(t) if t.is_empty() => out.push((key(path), "{}".into())),
        toml::Value::Array(a) if a.is_empty() => out.push((key(path), "[]".into())),
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| descend(path, k.clone(), v)),
        toml::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| descend(path, i.to_string(), v)),
        toml::Value::String(s) => out.push((key(path), s.clone())),
        other => out.push((key(path), other.to_string())),
    }
}

/// The source tree of the static configuration stored under `keys`, each value located by its
/// KV key. `None` when nothing is stored; an error names a key that is not valid UTF-8 or nests
/// too deep.
pub fn decode_static(keys: &Keys, kvs: &[KeyValue]) -> Result<Option<Node>, Diagnostic> {
    let mut pairs = Vec::new();
    for kv in kvs {
        let Some(path) = keys.static_path(&kv.key) else { continue };
        let origin = Origin::Store(kv.key.clone());
        let value = text(kv).map_err(|message| Diagnostic { origin: origin.clone(), message })?;
        pairs.push((path, value, origin));
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    let tree = Node::from_pairs(pairs, crate::config::tree::STATIC_NAMES);
    tree.map(Some).map_err(|(origin, message)| Diagnostic { origin, message })
}

/// The path below the prefix of a stored dynamic key (`["http", "routers", "web", "rule"]`),
/// `Ok(None)` for a key that is not dynamic configuration (`acme/...`, a Consul folder), or why
/// the key cannot be read: a key or value that is not UTF-8, an empty name
/// (`http/routers//rule`), a value where Traefik's layout has a section (`http/routers`), a
/// section Pylon does not read, or more than [`MAX_TREE_DEPTH`] segments.
pub fn dynamic_path(keys: &Keys, kv: &KeyValue) -> Result<Option<Vec<String>>, String> {
    let Some(path) = keys.dynamic_path(&kv.key) else { return Ok(None) };
    if kv.key.ends_with('/') && kv.value.is_empty() {
        return Ok(None); // A folder, as Consul's UI makes them.
    }
    if kv.key.contains(char::REPLACEMENT_CHARACTER) {
        return Err("the key is not valid UTF-8".into());
    }
    text(kv)?;
    if path.len() > MAX_TREE_DEPTH {
        return Err(format!("the key has {} segments, more than {MAX_TREE_DEPTH}", path.len()));
    }
    if path.iter().any(String::is_empty) {
        return Err("the key has an empty segment (a name between two slashes)".into());
    }
    let section = path.first().map(|s| s.to_ascii_lowercase());
    let kind = path.get(1).map(|s| s.to_ascii_lowercase());
    match (section.as_deref(), kind.as_deref(), path.len()) {
        (Some("http"), Some("routers" | "services" | "middlewares"), 3..) | (Some("tls"), Some(_), _) => Ok(Some(path)),
        (Some("http"), Some(kind @ ("routers" | "services" | "middlewares")), _) => {
            Err(format!("a value on {kind} itself, where Traefik's layout has one key per setting"))
        }
        (Some("http"), Some(kind), _) => Err(format!("http/{kind} is not a section Pylon reads")),
        _ => Err("a value on a section itself, where Traefik's layout has one key per setting".into()),
    }
}

/// A stored value as text.
fn text(kv: &KeyValue) -> Result<String, String> {
    String::from_utf8(kv.value.clone()).map_err(|_| "the value is not valid UTF-8".to_string())
}

/// The source tree of the dynamic configuration among `kvs` (one owner's keys, or a listing),
/// each value located by its KV key. A key that [`dynamic_path`] refuses is an error naming it:
/// its owner is then rejected and keeps its last good version.
pub fn decode_dynamic<'a>(keys: &Keys, kvs: impl IntoIterator<Item = &'a KeyValue>) -> Result<Node, Diagnostic> {
    let mut pairs = Vec::new();
    for kv in kvs {
        let origin = Origin::Store(kv.key.clone());
        match dynamic_path(keys, kv) {
            Ok(Some(path)) => pairs.push((path, text(kv).unwrap_or_default(), origin)),
            Ok(None) => {}
            Err(message) => return Err(Diagnostic { origin, message }),
        }
    }
    Node::from_pairs(pairs, crate::dynamic::DYNAMIC_NAMES).map_err(|(origin, message)| Diagnostic { origin, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const SEED: &str = include_str!("../../../configs/traefik.toml");

    /// The pairs as the store returns them.
    fn stored(pairs: Vec<(String, String)>) -> Vec<KeyValue> {
        let kv = |(key, value): (String, String)| KeyValue {
            key,
            value: value.into_bytes(),
            create_revision: 1,
            mod_revision: 1,
            lease: None,
        };
        pairs.into_iter().map(kv).collect()
    }

    #[test]
    fn the_seed_config_survives_the_round_trip_through_kv_pairs() {
        let keys = Keys::new("traefik");
        let tree = Node::from_toml("traefik.toml", SEED, crate::config::tree::STATIC_NAMES).unwrap();
        let pairs = encode_static(&keys, &tree);
        assert!(pairs.contains(&("traefik/static/entrypoints/https/tls".into(), "{}".into())));
        assert!(pairs.contains(&("traefik/static/defaultentrypoints/1".into(), "https".into())));
        assert!(pairs.iter().all(|(k, _)| !k.starts_with("traefik/static/consul")), "{pairs:?}");
        let kvs = stored(pairs);
        let decoded = config::load(decode_static(&keys, &kvs).unwrap().unwrap()).unwrap().config;
        let original = config::load(tree).unwrap().config;
        assert_eq!(decoded, original);
    }

    #[test]
    fn a_v3_file_survives_the_round_trip_without_its_store_section() {
        let keys = Keys::new("traefik");
        let text = "entryPoints:\n  web: { address: ':80' }\n  webSecure: { address: ':443', http: { tls: { certResolver: myLE } } }\n\
                    providers:\n  etcd: { endpoints: ['a:2379'] }\n  file: { directory: /etc/pylon }\n\
                    certificatesResolvers:\n  myLE:\n    acme: { email: a@example.com, httpChallenge: { entryPoint: web } }\n";
        let tree = Node::from_yaml("traefik.yml", text, crate::config::tree::STATIC_NAMES).unwrap();
        let pairs = encode_static(&keys, &tree);
        assert!(pairs.iter().all(|(k, _)| !k.starts_with("traefik/static/providers/etcd")), "{pairs:?}");
        assert!(pairs.iter().any(|(k, _)| k == "traefik/static/certificatesresolvers/myLE/acme/email"), "{pairs:?}");
        let kvs = stored(pairs);
        let decoded = config::load(decode_static(&keys, &kvs).unwrap().unwrap()).unwrap();
        let original = config::load(tree).unwrap();
        assert_eq!(decoded.config, original.config);
        assert!(decoded.store.is_none() && original.store.is_some(), "the store section stays with the replica");
    }

    #[test]
    fn dynamic_keys_written_in_traefiks_camel_case_are_read() {
        let keys = Keys::new("traefik");
        let kv = |key: &str, value: &str| KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: 1,
            lease: None,
        };
        let kvs = [
            kv("traefik/http/routers/Web/rule", "Host(`a.example`)"),
            kv("traefik/http/routers/Web/entryPoints/0", "web"),
            kv("traefik/http/routers/Web/service", "app"),
            kv("traefik/http/services/app/loadBalancer/servers/0/url", "http://127.0.0.1:9"),
            kv("traefik/static/loglevel", "INFO"),
            kv("traefik/acme/account", "{}"),
        ];
        let d = crate::dynamic::build(decode_dynamic(&keys, &kvs).unwrap());
        assert!(d.rejected.is_empty() && d.warnings.is_empty(), "{:?} {:?}", d.rejected, d.warnings);
        assert_eq!(d.routers["Web"].entry_points, ["web"]);
        assert!(d.services.contains_key("app"));
    }

    #[test]
    fn dynamic_keys_that_cannot_be_read_are_refused_with_the_reason() {
        let keys = Keys::new("traefik");
        let kv = |key: &str, value: &[u8]| KeyValue {
            key: key.into(),
            value: value.to_vec(),
            create_revision: 1,
            mod_revision: 1,
            lease: None,
        };
        let path = |key: &str, value: &[u8]| dynamic_path(&keys, &kv(key, value));
        assert!(path("traefik/http/routers/r/rule", b"Path(`/`)").unwrap().is_some());
        assert_eq!(path("traefik/acme/account", b"{}"), Ok(None));
        assert_eq!(path("traefik/http/routers/", b""), Ok(None), "a Consul folder");
        assert!(path("traefik/http/routers/r/rule", b"\xff\xfe").unwrap_err().contains("value is not valid UTF-8"));
        assert!(path("traefik/http/routers/r\u{fffd}/rule", b"x").unwrap_err().contains("key is not valid UTF-8"));
        assert!(path("traefik/http/routers//rule", b"x").unwrap_err().contains("empty segment"));
        assert!(path("traefik/http/services//loadbalancer", b"x").unwrap_err().contains("empty segment"));
        assert!(path("traefik/http", b"x").unwrap_err().contains("on a section itself"));
        assert!(path("traefik/http/routers", b"x").unwrap_err().contains("on routers itself"));
        assert!(path("traefik/http/serversTransports/t/x", b"1").unwrap_err().contains("not a section"));
        let deep = format!("traefik/http/routers/r/{}", vec!["a"; 100_000].join("/"));
        assert!(path(&deep, b"x").unwrap_err().contains("segments, more than"));
        let bad = [kv("traefik/http/routers/r/rule", b"Path(`/`)"), kv(&deep, b"x")];
        let err = decode_dynamic(&keys, &bad).unwrap_err();
        assert_eq!(err.origin, Origin::Store(deep), "the refused key is named");
    }
}
