//! Objects from the file provider, named as Traefik names them: `name@file`. A file object's
//! bare references (`service = "app"`) are to the file's own objects and become `app@file`;
//! a reference to a store object names its provider (`app@etcd`), and a store object reaches a
//! file object as `app@file`. Pylon keys store objects by their plain name and file objects by
//! `name@file`, so that [`super::unqualified`] (which keeps `@file`) finds both.

use std::collections::BTreeMap;

use super::Owner;
use crate::config::{Diagnostic, Node};

/// The provider suffix of file objects.
pub const SUFFIX: &str = "@file";

/// The provider an object comes from: `file` for `name@file`, else the store's.
pub fn provider<'a>(name: &str, store: &'a str) -> &'a str {
    match name.ends_with(SUFFIX) {
        true => "file",
        false => store,
    }
}

/// Where references sit in each kind of object (lowercased keys; `*` is any array item).
const ROUTER_REFS: &[&[&str]] = &[&["service"], &["middlewares", "*"], &["tls", "options"]];
const SERVICE_REFS: &[&[&str]] = &[
    &["weighted", "services", "*", "name"],
    &["mirroring", "service"],
    &["mirroring", "mirrors", "*", "name"],
    &["failover", "service"],
    &["failover", "fallback"],
];
const MIDDLEWARE_REFS: &[&[&str]] = &[&["chain", "middlewares", "*"], &["errors", "service"]];
/// The TLS options every provider shares, as in Traefik: never qualified.
pub const DEFAULT_OPTIONS: &str = "default";

/// Every owner in the file provider's trees (`files` in path order), each as the tree
/// [`super::Parts::update`] takes. An object defined in two files keeps the first; the second
/// is a located warning.
pub fn owners(files: &[Node]) -> (BTreeMap<Owner, Node>, Vec<Diagnostic>) {
    let mut out = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut rest: Option<Node> = None;
    for tree in files {
        let Node::Table(top, origin) = tree else { continue };
        for (section, kind) in [("http", "routers"), ("http", "services"), ("http", "middlewares"), ("tls", "options")]
        {
            let Some(Node::Table(objects, _)) = child(top, section).and_then(|s| table_child(s, kind)) else {
                continue;
            };
            for (name, object) in objects {
                let plain = super::unqualified(name).trim_end_matches(SUFFIX);
                let qualified = match (kind, plain) {
                    ("options", DEFAULT_OPTIONS) => DEFAULT_OPTIONS.to_string(),
                    _ => format!("{plain}{SUFFIX}"),
                };
                let owner = match kind {
                    "routers" => Owner::Router(qualified.clone()),
                    "services" => Owner::Service(qualified.clone()),
                    "middlewares" => Owner::Middleware(qualified.clone()),
                    _ => Owner::TlsOptions(qualified.clone()),
                };
                if out.contains_key(&owner) {
                    warnings.push(Diagnostic {
                        origin: object.origin().clone(),
                        message: format!(
                            "{kind} {qualified:?} is defined in another file already; this one is ignored"
                        ),
                    });
                    continue;
                }
                let mut object = object.clone();
                let refs = match kind {
                    "routers" => ROUTER_REFS,
                    "services" => SERVICE_REFS,
                    "middlewares" => MIDDLEWARE_REFS,
                    _ => &[],
                };
                for path in refs {
                    // `default` TLS options are everyone's; a service named `default` is not.
                    let shared = (*path == ["tls", "options"]).then_some(DEFAULT_OPTIONS);
                    localize(&mut object, path, shared);
                }
                out.insert(owner, wrap(&[section, kind, &qualified], object, origin));
            }
        }
        // Certificates and stores: every file's, together.
        let Some(tls) = child(top, "tls") else { continue };
        let mut kept = tls.clone();
        if let Node::Table(map, _) = &mut kept {
            map.remove("options");
        }
        let kept = wrap(&["tls"], kept, origin);
        rest = Some(match rest {
            None => kept,
            Some(before) => append_certificates(before, kept),
        });
    }
    if let Some(rest) = rest {
        out.insert(Owner::FileRest, rest);
    }
    (out, warnings)
}

fn child<'a>(map: &'a BTreeMap<String, Node>, key: &str) -> Option<&'a Node> {
    map.get(key)
}

fn table_child<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match node {
        Node::Table(map, _) => map.get(key),
        _ => None,
    }
}

/// `leaf` under `path`, each table on the way located at `origin`.
fn wrap(path: &[&str], leaf: Node, origin: &crate::config::Origin) -> Node {
    path.iter().rev().fold(leaf, |inner, key| Node::Table(BTreeMap::from([(key.to_string(), inner)]), origin.clone()))
}

/// Rewrites the bare references at `path` in `node` as `name@file`, but `shared`.
fn localize(node: &mut Node, path: &[&str], shared: Option<&str>) {
    let local = |name: &str| match name.contains('@') || name.is_empty() || Some(name) == shared {
        true => name.to_string(),
        false => format!("{name}{SUFFIX}"),
    };
    rewrite(node, path, &local);
}

/// Rewrites every reference at `path` in `node` with `to`.
fn rewrite(node: &mut Node, path: &[&str], to: &dyn Fn(&str) -> String) {
    let Some((first, rest)) = path.split_first() else {
        if let Node::Value(toml::Value::String(name), _) = node {
            *name = to(name);
        }
        return;
    };
    match (node, *first) {
        (Node::Array(items, _), "*") => items.iter_mut().for_each(|item| rewrite(item, rest, to)),
        // A comma-separated list (`middlewares = "a,b"`) is read as one; each name is rewritten.
        (Node::Value(toml::Value::String(list), _), "*") if rest.is_empty() => {
            *list = list.split(',').map(str::trim).map(to).collect::<Vec<_>>().join(",");
        }
        (Node::Table(map, _), key) => {
            if let Some(child) = map.get_mut(key) {
                rewrite(child, rest, to);
            }
        }
        _ => {}
    }
}

/// A file-provider file written into the store (`storeconfig --dynamic`): its objects become
/// the store's, so its references to `name@file` become references to `name`.
pub fn into_store(tree: &mut Node) {
    let plain = |name: &str| name.strip_suffix(SUFFIX).unwrap_or(name).to_string();
    let Node::Table(top, _) = tree else { return };
    let Some(Node::Table(http, _)) = top.get_mut("http") else { return };
    for (kind, refs) in [("routers", ROUTER_REFS), ("services", SERVICE_REFS), ("middlewares", MIDDLEWARE_REFS)] {
        let Some(Node::Table(objects, _)) = http.get_mut(kind) else { continue };
        for object in objects.values_mut() {
            for path in refs {
                rewrite(object, path, &plain);
            }
        }
    }
}

/// `before` with `more`'s `tls.certificates` appended (and its `tls.stores` laid over).
fn append_certificates(before: Node, more: Node) -> Node {
    let certificates = |n: &Node| match table_child(n, "tls").and_then(|t| table_child(t, "certificates")) {
        Some(Node::Array(items, _)) => items.clone(),
        _ => Vec::new(),
    };
    let mut all = certificates(&before);
    all.extend(certificates(&more));
    let mut merged = before.overlay(more);
    if let Node::Table(top, _) = &mut merged {
        if let Some(Node::Table(tls, origin)) = top.get_mut("tls") {
            tls.insert("certificates".into(), Node::Array(all, origin.clone()));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamic::DYNAMIC_NAMES;

    #[test]
    fn file_objects_are_name_at_file_and_their_bare_references_their_own() {
        let text = r#"
            [http.routers.web]
            rule = "Host(`a.example`)"
            service = "app"
            middlewares = ["auth", "strip@etcd"]
            [http.services.app.weighted]
            services = [{ name = "blue", weight = 1 }, { name = "green@consul", weight = 1 }]
            [http.routers.web.tls]
            options = "default"
            [http.middlewares.both.chain]
            middlewares = ["auth"]
            [http.middlewares.oops.errors]
            status = ["500"]
            service = "pages"
            [tls.options.default]
            minVersion = "VersionTLS13"
            [[tls.certificates]]
            certFile = "a.pem"
            keyFile = "a.key"
        "#;
        let tree = Node::from_toml("d.toml", text, DYNAMIC_NAMES).unwrap();
        let (owners, warnings) = owners(&[tree.clone(), tree]);
        assert_eq!(warnings.len(), 5, "the second file's objects are ignored: {warnings:?}");
        assert!(owners.contains_key(&Owner::TlsOptions("default".into())), "default options are everyone's");
        let (value, _) = owners[&Owner::Router("web@file".into())].clone().into_value();
        let router = &value["http"]["routers"]["web@file"];
        assert_eq!(router["service"].as_str(), Some("app@file"));
        assert_eq!(router["middlewares"][0].as_str(), Some("auth@file"));
        assert_eq!(router["middlewares"][1].as_str(), Some("strip@etcd"));
        assert_eq!(router["tls"]["options"].as_str(), Some("default"));
        let (value, _) = owners[&Owner::Middleware("oops@file".into())].clone().into_value();
        assert_eq!(value["http"]["middlewares"]["oops@file"]["errors"]["service"].as_str(), Some("pages@file"));
        let (value, _) = owners[&Owner::Service("app@file".into())].clone().into_value();
        let services = &value["http"]["services"]["app@file"]["weighted"]["services"];
        assert_eq!(
            (services[0]["name"].as_str(), services[1]["name"].as_str()),
            (Some("blue@file"), Some("green@consul"))
        );
        let (value, _) = owners[&Owner::Middleware("both@file".into())].clone().into_value();
        assert_eq!(value["http"]["middlewares"]["both@file"]["chain"]["middlewares"][0].as_str(), Some("auth@file"));
        let (value, _) = owners[&Owner::FileRest].clone().into_value();
        assert_eq!(value["tls"]["certificates"].as_array().map(Vec::len), Some(2), "both files' certificates");
        let mut stored = Node::from_toml(
            "d.toml",
            "[http.routers.r]\nrule = \"Path(`/`)\"\nservice = \"app@file\"\nmiddlewares = [\"a@file\", \"b@etcd\"]\n",
            DYNAMIC_NAMES,
        )
        .unwrap();
        into_store(&mut stored);
        let (value, _) = stored.into_value();
        let router = &value["http"]["routers"]["r"];
        assert_eq!(router["service"].as_str(), Some("app"), "a file written into the store refers to the store's");
        assert_eq!((router["middlewares"][0].as_str(), router["middlewares"][1].as_str()), (Some("a"), Some("b@etcd")));
    }
}
