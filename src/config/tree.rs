//! The source tree: every configuration source, static or dynamic (a TOML or YAML file, KV pairs from
//! the store, dotted flags), becomes one tree of the same shape, whose every node remembers where
//! it came from, so that errors found later (by serde or by validation) can name a
//! file:line:column, a flag or a KV key. Keys are case-insensitive, as in Traefik: they are
//! lowercased, except the names users give to map entries (entrypoints, routers, services; see
//! [`NamedTables`]), which are kept as written.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};

use crate::limits::MAX_TREE_DEPTH;

/// The error of a source that nests deeper than [`MAX_TREE_DEPTH`].
pub(super) fn too_deep() -> String {
    format!("the configuration nests deeper than {MAX_TREE_DEPTH} levels")
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File {
        path: String,
        line: usize,
        column: usize,
    },
    Flag(String),
    /// A `PYLON_*` environment variable.
    Env(String),
    Store(String),
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { path, line, column } => write!(f, "{path}:{line}:{column}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Store(key) => match crate::limits::prefix(key, crate::limits::SHOWN_KEY) {
                (all, true) => write!(f, "KV key {all}"),
                (start, false) => write!(f, "KV key {start}... ({} bytes)", key.len()),
            },
            Origin::Default => f.write_str("default"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Value(toml::Value, Origin),
    Table(BTreeMap<String, Node>, Origin),
    Array(Vec<Node>, Origin),
}

/// The paths of tables whose keys are names chosen by the user (kept as written, not
/// lowercased); `*` stands for any one segment.
pub type NamedTables = &'static [&'static [&'static str]];

/// In the static configuration: entrypoint and certificate resolver names.
pub const STATIC_NAMES: NamedTables = &[&["entrypoints"], &["certificatesresolvers"]];

fn is_named(names: NamedTables, path: &[String]) -> bool {
    names
        .iter()
        .any(|pattern| pattern.len() == path.len() && pattern.iter().zip(path).all(|(p, s)| *p == "*" || p == s))
}

impl Node {
    pub fn empty() -> Node {
        Node::Table(BTreeMap::new(), Origin::Default)
    }

    pub fn origin(&self) -> &Origin {
        match self {
            Node::Value(_, o) | Node::Table(_, o) | Node::Array(_, o) => o,
        }
    }

    /// Parses a file's text as YAML when its name ends in `.yml` or `.yaml`, else as TOML.
    pub fn from_text(path: &std::path::Path, text: &str, names: NamedTables) -> Result<Node, (Origin, String)> {
        let name = path.display().to_string();
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("yml" | "yaml") => Node::from_yaml(&name, text, names),
            _ => Node::from_toml(&name, text, names),
        }
    }

    /// Parses a TOML document, keeping line and column of every key and value.
    pub fn from_toml(path: &str, text: &str, names: NamedTables) -> Result<Node, (Origin, String)> {
        let lines = LineIndex::new(text);
        let at = |offset: usize| {
            let (line, column) = lines.position(offset);
            Origin::File { path: path.to_string(), line, column }
        };
        let root = DeTable::parse(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            (at(offset), e.message().trim().to_string())
        })?;
        type Built = Result<Node, (Origin, String)>;
        fn table(t: &DeTable<'_>, at: &dyn Fn(usize) -> Origin, origin: Origin, depth: usize) -> Built {
            if depth > MAX_TREE_DEPTH {
                return Err((origin, too_deep()));
            }
            let mut map = BTreeMap::new();
            for (k, v) in t.iter() {
                map.insert(k.get_ref().to_string(), value(v.get_ref(), at, at(v.span().start), depth + 1)?);
            }
            Ok(Node::Table(map, origin))
        }
        fn value(v: &DeValue<'_>, at: &dyn Fn(usize) -> Origin, origin: Origin, depth: usize) -> Built {
            Ok(match v {
                DeValue::Table(t) => table(t, at, origin, depth)?,
                DeValue::Array(a) => {
                    if depth > MAX_TREE_DEPTH {
                        return Err((origin, too_deep()));
                    }
                    let items = a.iter().map(|i| value(i.get_ref(), at, at(i.span().start), depth + 1));
                    Node::Array(items.collect::<Result<_, _>>()?, origin)
                }
                DeValue::String(s) => Node::Value(toml::Value::String(s.to_string()), origin),
                DeValue::Integer(i) => match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                    Ok(n) => Node::Value(toml::Value::Integer(n), origin),
                    Err(_) => Node::Value(toml::Value::String(i.as_str().to_string()), origin),
                },
                DeValue::Float(x) => {
                    Node::Value(toml::Value::Float(x.as_str().replace('_', "").parse().unwrap_or(f64::NAN)), origin)
                }
                DeValue::Boolean(b) => Node::Value(toml::Value::Boolean(*b), origin),
                DeValue::Datetime(d) => Node::Value(toml::Value::String(d.to_string()), origin),
            })
        }
        Ok(table(root.get_ref(), &at, at(0), 1)?.normalized(&[], names))
    }

    /// Builds a tree from `(path, value)` pairs; `path` segments are already split. A path of
    /// more than [`MAX_TREE_DEPTH`] segments is an error located at its pair.
    pub fn from_pairs<I: IntoIterator<Item = (Vec<String>, String, Origin)>>(
        pairs: I,
        names: NamedTables,
    ) -> Result<Node, (Origin, String)> {
        let mut root = Node::empty();
        for (path, value, origin) in pairs {
            if path.len() > MAX_TREE_DEPTH {
                return Err((origin, too_deep()));
            }
            let leaf = match value.as_str() {
                // Markers the KV codec writes for sections that hold nothing (`[entryPoints.https.tls]`).
                "{}" => Node::Table(BTreeMap::new(), origin),
                "[]" => Node::Array(Vec::new(), origin),
                _ => Node::Value(toml::Value::String(value), origin),
            };
            // Keys lowercased as they are set, so that a later pair replaces an earlier one
            // whatever the case each was written in (`--entryPoints.web` after `PYLON_ENTRYPOINTS_WEB`).
            let mut keys: Vec<String> = Vec::with_capacity(path.len());
            for segment in path {
                let named = is_named(names, &keys);
                keys.push(if named { segment } else { segment.to_ascii_lowercase() });
            }
            root.set(&keys, leaf);
        }
        Ok(root.normalized(&[], names))
    }

    /// Sets `path` to `leaf`, creating tables on the way and replacing what was there.
    pub fn set(&mut self, path: &[String], leaf: Node) {
        let Some((first, rest)) = path.split_first() else {
            *self = leaf;
            return;
        };
        if !matches!(self, Node::Table(..)) {
            *self = Node::Table(BTreeMap::new(), leaf.origin().clone());
        }
        let Node::Table(map, _) = self else { unreachable!() };
        let child = map.entry(first.clone()).or_insert_with(|| Node::Table(BTreeMap::new(), leaf.origin().clone()));
        if rest.is_empty() {
            *child = leaf;
        } else {
            child.set(rest, leaf);
        }
    }

    /// How many nodes this tree has, and how deep it nests (a leaf is 1 deep).
    pub fn measure(&self) -> (usize, usize) {
        let children: Box<dyn Iterator<Item = &Node>> = match self {
            Node::Value(..) => return (1, 1),
            Node::Table(map, _) => Box::new(map.values()),
            Node::Array(items, _) => Box::new(items.iter()),
        };
        children.map(Node::measure).fold((1, 1), |(n, d), (cn, cd)| (n + cn, d.max(cd + 1)))
    }

    /// Lays `over` on top of `self`: tables merge key by key, anything else is replaced.
    pub fn overlay(self, over: Node) -> Node {
        match (self, over) {
            (Node::Table(mut base, origin), Node::Table(top, _)) => {
                for (k, v) in top {
                    let merged = match base.remove(&k) {
                        Some(old) => old.overlay(v),
                        None => v,
                    };
                    base.insert(k, merged);
                }
                Node::Table(base, origin)
            }
            (_, over) => over,
        }
    }

    /// Lowercases keys (but not user-chosen names) and turns tables keyed `0`, `1`, ... (as
    /// lists come from KV keys) into arrays.
    pub(super) fn normalized(self, path: &[String], names: NamedTables) -> Node {
        match self {
            Node::Table(map, origin) => {
                let named = is_named(names, path);
                // Keys that differ only in case (`loadBalancer`, `loadbalancer`) merge before
                // their children are normalized, while numbered tables are still tables.
                let mut merged: BTreeMap<String, Node> = BTreeMap::new();
                for (k, v) in map {
                    let key = if named { k } else { k.to_ascii_lowercase() };
                    let v = match merged.remove(&key) {
                        Some(old) => old.overlay(v),
                        None => v,
                    };
                    merged.insert(key, v);
                }
                let mut child_path = path.to_vec();
                let mut out = BTreeMap::new();
                for (key, v) in merged {
                    child_path.push(key);
                    let v = v.normalized(&child_path, names);
                    out.insert(child_path.pop().unwrap_or_default(), v);
                }
                // A table of names is never a list, even when the names are numbers (`404`).
                let numeric = !named && !out.is_empty() && out.keys().all(|k| k.parse::<usize>().is_ok());
                if numeric {
                    let mut items: Vec<(usize, Node)> =
                        out.into_iter().map(|(k, v)| (k.parse().unwrap_or(0), v)).collect();
                    items.sort_by_key(|(i, _)| *i);
                    return Node::Array(items.into_iter().map(|(_, v)| v).collect(), origin);
                }
                Node::Table(out, origin)
            }
            Node::Array(items, origin) => {
                Node::Array(items.into_iter().map(|n| n.normalized(path, names)).collect(), origin)
            }
            leaf => leaf,
        }
    }

    /// The plain TOML value serde reads, and the origin of every path in it (`a.b.0.c`).
    pub fn into_value(self) -> (toml::Value, BTreeMap<String, Origin>) {
        let mut origins = BTreeMap::new();
        let value = self.strip(String::new(), &mut origins);
        (value, origins)
    }

    fn strip(self, path: String, origins: &mut BTreeMap<String, Origin>) -> toml::Value {
        let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
        match self {
            Node::Value(v, origin) => {
                origins.insert(path, origin);
                v
            }
            Node::Array(items, origin) => {
                let values =
                    items.into_iter().enumerate().map(|(i, n)| n.strip(join(&i.to_string()), origins)).collect();
                origins.insert(path, origin);
                toml::Value::Array(values)
            }
            Node::Table(map, origin) => {
                let table = map.into_iter().map(|(k, n)| (k.clone(), n.strip(join(&k), origins))).collect();
                origins.insert(path, origin);
                toml::Value::Table(table)
            }
        }
    }
}

/// Byte offsets to 1-based line and column (in characters).
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        LineIndex { text, starts }
    }
    fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self.text.get(start..offset.min(self.text.len())).map_or(1, |s| s.chars().count() + 1);
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_positions_are_line_and_column() {
        let tree =
            Node::from_toml("t.toml", "logLevel = \"INFO\"\n[entryPoints.Web]\n  address = \":80\"\n", STATIC_NAMES)
                .unwrap();
        let (_, origins) = tree.into_value();
        let at = |p: &str| origins.get(p).map(|o| o.to_string());
        assert_eq!(at("entrypoints.Web.address").as_deref(), Some("t.toml:3:13"));
        assert_eq!(at("loglevel").as_deref(), Some("t.toml:1:12"));
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let err = Node::from_toml("t.toml", "a = 1\nb = = 2\n", STATIC_NAMES).unwrap_err();
        assert!(matches!(err.0, Origin::File { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn numbered_keys_become_lists_and_keys_lose_case() {
        let o = Origin::Store("k".into());
        let tree = Node::from_pairs(
            [
                (vec!["defaultEntryPoints".into(), "1".into()], "https".into(), o.clone()),
                (vec!["defaultEntryPoints".into(), "0".into()], "http".into(), o.clone()),
                (vec!["entryPoints".into(), "HTTP".into(), "Address".into()], ":80".into(), o),
            ],
            STATIC_NAMES,
        )
        .unwrap();
        let (value, _) = tree.into_value();
        assert_eq!(value["defaultentrypoints"].as_array().unwrap().len(), 2);
        assert_eq!(value["defaultentrypoints"][0].as_str(), Some("http"));
        assert_eq!(value["entrypoints"]["HTTP"]["address"].as_str(), Some(":80"));
    }

    #[test]
    fn keys_differing_only_in_case_merge_list_items_too() {
        let o = Origin::Store("k".into());
        let path = |p: &str| p.split('/').map(String::from).collect::<Vec<_>>();
        let tree = Node::from_pairs(
            [
                (path("loadBalancer/servers/0/url"), "http://a".into(), o.clone()),
                (path("loadbalancer/servers/0/weight"), "2".into(), o),
            ],
            STATIC_NAMES,
        )
        .unwrap();
        let (value, _) = tree.into_value();
        let server = &value["loadbalancer"]["servers"][0];
        assert_eq!((server["url"].as_str(), server["weight"].as_str()), (Some("http://a"), Some("2")));
    }

    #[test]
    fn flags_override_the_file() {
        let file = Node::from_toml("t.toml", "[entryPoints.http]\naddress = \":80\"\n", STATIC_NAMES).unwrap();
        let flag = Node::from_pairs(
            [(
                vec!["entryPoints".into(), "http".into(), "address".into()],
                "127.0.0.2:80".into(),
                Origin::Flag("--entryPoints.http.address".into()),
            )],
            STATIC_NAMES,
        )
        .unwrap();
        let (value, origins) = file.overlay(flag).into_value();
        assert_eq!(value["entrypoints"]["http"]["address"].as_str(), Some("127.0.0.2:80"));
        assert_eq!(origins["entrypoints.http.address"].to_string(), "flag --entryPoints.http.address");
    }

    #[test]
    fn sources_nesting_beyond_the_limit_are_errors_at_their_place() {
        let deep_array = format!("a = {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let (origin, message) = Node::from_toml("t.toml", &deep_array, STATIC_NAMES).unwrap_err();
        assert!(matches!(origin, Origin::File { line: 1, .. }), "{origin}: {message}");
        let deep_table = format!("a = {}1{}\n", "{b = ".repeat(10_000), "}".repeat(10_000));
        assert!(Node::from_toml("t.toml", &deep_table, STATIC_NAMES).is_err());
        let dotted = format!("{} = 1\n", vec!["k"; 40].join("."));
        let (_, message) = Node::from_toml("t.toml", &dotted, STATIC_NAMES).unwrap_err();
        assert!(message.contains("nests deeper"), "{message}");

        let segments: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
        let key = Origin::Store("traefik/http/...".into());
        let (origin, message) = Node::from_pairs([(segments, "x".into(), key.clone())], STATIC_NAMES).unwrap_err();
        assert_eq!((origin, message.contains("nests deeper")), (key, true));

        let fine = format!("{} = 1\n", vec!["k"; MAX_TREE_DEPTH].join("."));
        assert!(Node::from_toml("t.toml", &fine, STATIC_NAMES).is_ok(), "{MAX_TREE_DEPTH} levels load");
    }
}
