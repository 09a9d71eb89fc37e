//! YAML sources (`traefik.yml`, a dynamic `dynamic.yml`): the same source tree as TOML, built
//! from the YAML event stream so that every key and value keeps its line and column. Plain
//! scalars follow YAML 1.2's core schema (booleans, integers, floats, null); anchors, aliases
//! and `<<` merge keys work as in Traefik's YAML files.

use std::collections::{BTreeMap, HashMap};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::tree::{too_deep, NamedTables, Node, Origin};
use crate::limits::MAX_TREE_DEPTH;

/// How many nodes aliases may copy into one document: `*alias` repeats a whole subtree, so a
/// few lines of nested aliases could otherwise ask for billions ("billion laughs").
const MAX_ALIASED_NODES: usize = 100_000;

impl Node {
    /// Parses the first YAML document of `text`.
    pub fn from_yaml(path: &str, text: &str, names: NamedTables) -> Result<Node, (Origin, String)> {
        let at = |span: &Span| Origin::File {
            path: path.to_string(),
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        let mut builder = Builder::default();
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|e| {
                let m = e.marker();
                let origin = Origin::File { path: path.to_string(), line: m.line(), column: m.col() + 1 };
                (origin, e.info().to_string())
            })?;
            if builder.event(event, at(&span)).map_err(|message| (at(&span), message))? {
                break;
            }
        }
        Ok(builder.root.unwrap_or_else(Node::empty).normalized(&[], names))
    }
}

/// A collection being filled, with the anchor it will be registered under.
enum Open {
    Map { map: BTreeMap<String, Node>, key: Option<String>, merged: Vec<Node>, origin: Origin, anchor: usize },
    Seq { items: Vec<Node>, origin: Origin, anchor: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    /// Nodes copied by aliases so far, bounded by [`MAX_ALIASED_NODES`].
    aliased: usize,
}

impl Builder {
    /// Feeds one event; true once the first document is complete.
    fn event(&mut self, event: Event<'_>, origin: Origin) -> Result<bool, String> {
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                // A scalar in key position names the next value.
                if let Some(Open::Map { key: key @ None, .. }) = self.stack.last_mut() {
                    *key = Some(text.into_owned());
                    return Ok(false);
                }
                let node = scalar(&text, style, origin);
                self.register(anchor, &node);
                self.place(node)
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).ok_or_else(|| format!("unknown alias (anchor {id})"))?;
                let (nodes, depth) = node.measure();
                self.aliased += nodes;
                if self.aliased > MAX_ALIASED_NODES {
                    return Err(format!("aliases copy more than {MAX_ALIASED_NODES} nodes into the document"));
                }
                if self.stack.len() + depth > MAX_TREE_DEPTH {
                    return Err(too_deep());
                }
                let node = node.clone();
                if let Some(Open::Map { key: key @ None, .. }) = self.stack.last_mut() {
                    let Node::Value(v, _) = node else { return Err("a map key must be a scalar".to_string()) };
                    *key = Some(v.as_str().map_or_else(|| v.to_string(), str::to_string));
                    return Ok(false);
                }
                self.place(node)
            }
            Event::MappingStart(anchor, _) => {
                self.key_position_is_free()?;
                self.not_too_deep()?;
                self.stack.push(Open::Map { map: BTreeMap::new(), key: None, merged: Vec::new(), origin, anchor });
                Ok(false)
            }
            Event::SequenceStart(anchor, _) => {
                self.key_position_is_free()?;
                self.not_too_deep()?;
                self.stack.push(Open::Seq { items: Vec::new(), origin, anchor });
                Ok(false)
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Map { map, merged, origin, anchor, .. }) => {
                        // `<<: *base` lays the map's own keys over the merged ones.
                        let base = merged.into_iter().fold(Node::Table(BTreeMap::new(), origin.clone()), Node::overlay);
                        (base.overlay(Node::Table(map, origin)), anchor)
                    }
                    Some(Open::Seq { items, origin, anchor }) => (Node::Array(items, origin), anchor),
                    None => return Err("unbalanced collection end".to_string()),
                };
                self.register(anchor, &node);
                self.place(node)
            }
            Event::DocumentEnd => Ok(self.root.is_some()),
            Event::StreamEnd | Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => Ok(false),
        }
    }

    fn key_position_is_free(&self) -> Result<(), String> {
        match self.stack.last() {
            Some(Open::Map { key: None, .. }) => Err("a map key must be a scalar".to_string()),
            _ => Ok(()),
        }
    }

    fn not_too_deep(&self) -> Result<(), String> {
        if self.stack.len() >= MAX_TREE_DEPTH {
            return Err(too_deep());
        }
        Ok(())
    }

    fn register(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    /// Puts a finished node where the open collection expects it.
    fn place(&mut self, node: Node) -> Result<bool, String> {
        match self.stack.last_mut() {
            None if matches!(node, Node::Table(..)) => {
                self.root = Some(node);
                Ok(false)
            }
            None => Err("the document must be a map of settings".to_string()),
            Some(Open::Seq { items, .. }) => {
                items.push(node);
                Ok(false)
            }
            Some(Open::Map { map, key, merged, .. }) => {
                let key = key.take().ok_or("a value without a key")?;
                if key == "<<" {
                    match node {
                        Node::Array(items, _) => merged.extend(items),
                        node => merged.push(node),
                    }
                } else if map.insert(key.clone(), node).is_some() {
                    return Err(format!("duplicate key `{key}`"));
                }
                Ok(false)
            }
        }
    }
}

/// A scalar: quoted and block scalars are text; plain ones follow the core schema. `null` (or
/// nothing) stands for a section that is present but empty, like TOML's `[entryPoints.x.tls]`.
fn scalar(text: &str, style: ScalarStyle, origin: Origin) -> Node {
    if style != ScalarStyle::Plain {
        return Node::Value(toml::Value::String(text.to_string()), origin);
    }
    let value = match text {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Table(BTreeMap::new(), origin),
        "true" | "True" | "TRUE" => toml::Value::Boolean(true),
        "false" | "False" | "FALSE" => toml::Value::Boolean(false),
        _ => integer(text)
            .map(toml::Value::Integer)
            .or_else(|| float(text).map(toml::Value::Float))
            .unwrap_or_else(|| toml::Value::String(text.to_string())),
    };
    Node::Value(value, origin)
}

fn integer(text: &str) -> Option<i64> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    };
    parsed.map(|n: i64| sign * n)
}

fn float(text: &str) -> Option<f64> {
    let looks_numeric =
        text.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) && text.bytes().any(|b| b.is_ascii_digit());
    looks_numeric.then(|| text.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree::STATIC_NAMES;

    #[test]
    fn keys_and_values_keep_line_and_column() {
        let text = "log:\n  level: INFO\nentryPoints:\n  Web:\n    address: \":80\"\n";
        let (value, origins) = Node::from_yaml("t.yml", text, STATIC_NAMES).unwrap().into_value();
        assert_eq!(value["entrypoints"]["Web"]["address"].as_str(), Some(":80"));
        assert_eq!(origins["entrypoints.Web.address"].to_string(), "t.yml:5:14");
        assert_eq!(origins["log.level"].to_string(), "t.yml:2:10");
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        let text = "a: true\nb: 42\nc: '42'\nd: 1.5\ne:\nf: [x, y]\ng: 0x10\n";
        let (value, _) = Node::from_yaml("t.yml", text, STATIC_NAMES).unwrap().into_value();
        assert_eq!(value["a"].as_bool(), Some(true));
        assert_eq!(value["b"].as_integer(), Some(42));
        assert_eq!(value["c"].as_str(), Some("42"));
        assert_eq!(value["d"].as_float(), Some(1.5));
        assert!(value["e"].as_table().is_some_and(|t| t.is_empty()));
        assert_eq!(value["f"].as_array().map(Vec::len), Some(2));
        assert_eq!(value["g"].as_integer(), Some(16));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "base: &b\n  x: 1\n  y: 2\nother:\n  <<: *b\n  y: 3\ncopy: *b\n";
        let (value, _) = Node::from_yaml("t.yml", text, STATIC_NAMES).unwrap().into_value();
        assert_eq!(value["other"]["x"].as_integer(), Some(1));
        assert_eq!(value["other"]["y"].as_integer(), Some(3));
        assert_eq!(value["copy"]["y"].as_integer(), Some(2));
    }

    #[test]
    fn errors_name_the_position() {
        let err = Node::from_yaml("t.yml", "a: 1\nb: [1, 2\n", STATIC_NAMES).unwrap_err();
        assert!(matches!(err.0, Origin::File { line: 3, .. } | Origin::File { line: 2, .. }), "{err:?}");
        let err = Node::from_yaml("t.yml", "a: 1\na: 2\n", STATIC_NAMES).unwrap_err();
        assert_eq!(err.0.to_string(), "t.yml:2:4");
        assert!(err.1.contains("duplicate key `a`"), "{err:?}");
    }

    #[test]
    fn an_empty_document_is_an_empty_table() {
        let (value, _) = Node::from_yaml("t.yml", "", STATIC_NAMES).unwrap().into_value();
        assert!(value.as_table().is_some_and(|t| t.is_empty()));
    }

    #[test]
    fn deep_nesting_and_alias_bombs_are_errors_at_their_place() {
        let flow = format!("a: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let (origin, message) = Node::from_yaml("t.yml", &flow, STATIC_NAMES).unwrap_err();
        assert!(matches!(origin, Origin::File { line: 1, .. }), "{origin}: {message}");
        let block: String = (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(Node::from_yaml("t.yml", &block, STATIC_NAMES).unwrap_err().1.contains("nests deeper"));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g"].iter().zip(["b", "c", "d", "e", "f", "g", "h"]) {
            bomb.push_str(&format!("{name}: &{name} [{}]\n", vec![format!("*{prev}"); 10].join(", ")));
        }
        let (origin, message) = Node::from_yaml("t.yml", &bomb, STATIC_NAMES).unwrap_err();
        assert!(message.contains("aliases copy more than"), "{origin}: {message}");
    }
}
