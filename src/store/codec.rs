//! Configuration as KV pairs, both ways: `pylon storeconfig` encodes the static configuration
//! and (`--dynamic`) the dynamic one in Traefik v3's layout; `pylon run` and the watcher decode
//! them. One leaf is one key; list items are numbered
//! (`defaultentrypoints/0`); a section that holds nothing, such as `[entryPoints.https.tls]`,
//! is the key of the section with the value `{}` so that it survives the round trip.
//! How to reach the store (`[consul]`, `[etcd]`) is a replica's own business and is not stored.

use crate::config::{Node, Origin};

use super::{keys::Keys, KeyValue};

/// Sections that describe the store itself and stay out of it.
const LOCAL_SECTIONS: &[&str] = &["consul", "etcd"];

/// The pairs `storeconfig` writes for a static source tree, sorted by key.
pub fn encode_static(keys: &Keys, tree: &Node) -> Vec<(String, String)> {
    encode(tree, |top| !LOCAL_SECTIONS.contains(&top), |path| keys.static_key(path))
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
/// KV key. `None` when nothing is stored.
pub fn decode_static(keys: &Keys, kvs: &[KeyValue]) -> Option<Node> {
    let pairs: Vec<_> = kvs
        .iter()
        .filter_map(|kv| {
            let path = keys.static_path(&kv.key)?;
            let value = String::from_utf8_lossy(&kv.value).into_owned();
            Some((path, value, Origin::Store(kv.key.clone())))
        })
        .collect();
    (!pairs.is_empty()).then(|| Node::from_pairs(pairs, crate::config::tree::STATIC_NAMES))
}

/// The source tree of the dynamic configuration among `kvs` (a listing of the prefix), each
/// value located by its KV key. Keys outside `<prefix>/http/` and `<prefix>/tls/` are ignored.
pub fn decode_dynamic<'a>(keys: &Keys, kvs: impl IntoIterator<Item = &'a KeyValue>) -> Node {
    let pairs = kvs.into_iter().filter_map(|kv| {
        let path = keys.dynamic_path(&kv.key)?;
        Some((path, String::from_utf8_lossy(&kv.value).into_owned(), Origin::Store(kv.key.clone())))
    });
    Node::from_pairs(pairs, crate::dynamic::DYNAMIC_NAMES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const SEED: &str = include_str!("../../configs/traefik.toml");

    #[test]
    fn the_seed_config_survives_the_round_trip_through_kv_pairs() {
        let keys = Keys::new("traefik");
        let tree = Node::from_toml("traefik.toml", SEED, crate::config::tree::STATIC_NAMES).unwrap();
        let pairs = encode_static(&keys, &tree);
        assert!(pairs.contains(&("traefik/static/entrypoints/https/tls".into(), "{}".into())));
        assert!(pairs.contains(&("traefik/static/defaultentrypoints/1".into(), "https".into())));
        assert!(pairs.iter().all(|(k, _)| !k.starts_with("traefik/static/consul")), "{pairs:?}");
        let kvs: Vec<KeyValue> = pairs
            .into_iter()
            .map(|(key, value)| KeyValue {
                key,
                value: value.into_bytes(),
                create_revision: 1,
                mod_revision: 1,
                lease: None,
            })
            .collect();
        let decoded = config::load(decode_static(&keys, &kvs).unwrap()).unwrap().config;
        let original = config::load(tree).unwrap().config;
        assert_eq!(decoded, original);
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
        let d = crate::dynamic::build(decode_dynamic(&keys, &kvs));
        assert!(d.rejected.is_empty() && d.warnings.is_empty(), "{:?} {:?}", d.rejected, d.warnings);
        assert_eq!(d.routers["Web"].entry_points, ["web"]);
        assert!(d.services.contains_key("app"));
    }
}
