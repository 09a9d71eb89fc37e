//! `chain` and reference resolution: a router's list of middleware names becomes the flat list
//! of middlewares it runs, chains expanded in place. A name may carry a provider
//! (`auth@file`); Pylon has one namespace, so the provider is dropped. A reference cycle, a
//! missing or invalid middleware, or a type Pylon does not implement makes the whole list
//! unusable, and the router is disabled.

use serde::Deserialize;

use super::Spec;
use crate::{config::Checker, dynamic::unqualified};

/// More middlewares than this on one router (chains of chains can multiply) is an error.
pub const MAX_LAYERS: usize = 256;

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    middlewares: Option<Vec<String>>,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Vec<String>> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    match raw.middlewares.filter(|m| !m.is_empty()) {
        Some(names) => Some(names),
        None => {
            c.error(path, "a chain needs middlewares");
            None
        }
    }
}

/// The middlewares `references` stand for, in order, chains expanded: `(name, spec)` for each.
/// `lookup` finds a middleware by name or says why it cannot be used (`its middleware "x"
/// does not exist`); the error is the first reason the list cannot be used.
pub fn resolve<'s>(
    references: &[String],
    lookup: &dyn Fn(&str) -> Result<&'s Spec, String>,
) -> Result<Vec<(String, &'s Spec)>, String> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    expand(references, lookup, &mut path, &mut out)?;
    Ok(out)
}

fn expand<'s>(
    references: &[String],
    lookup: &dyn Fn(&str) -> Result<&'s Spec, String>,
    path: &mut Vec<String>,
    out: &mut Vec<(String, &'s Spec)>,
) -> Result<(), String> {
    for reference in references {
        let name = unqualified(reference);
        let through = match path.last() {
            Some(chain) => format!(" (in chain {chain:?})"),
            None => String::new(),
        };
        if path.iter().any(|p| p == name) {
            let cycle: Vec<&str> = path.iter().map(String::as_str).chain([name]).collect();
            return Err(format!("its middlewares form a cycle: {}", cycle.join(" -> ")));
        }
        let spec = lookup(name).map_err(|why| format!("{why}{through}"))?;
        match spec {
            Spec::Chain(members) => {
                path.push(name.to_string());
                expand(members, lookup, path, out)?;
                path.pop();
            }
            Spec::Unimplemented(kind) => {
                return Err(format!(
                    "its middleware {reference:?}{through} is a {kind}, which Pylon does not implement yet"
                ));
            }
            spec => {
                if out.len() == MAX_LAYERS {
                    return Err(format!("it would run more than {MAX_LAYERS} middlewares"));
                }
                out.push((name.to_string(), spec));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::data::middleware::add_prefix;

    fn prefix(p: &str) -> Spec {
        Spec::AddPrefix(add_prefix::Spec { prefix: p.to_string() })
    }

    fn chain(names: &[&str]) -> Spec {
        Spec::Chain(names.iter().map(|n| n.to_string()).collect())
    }

    fn run(specs: &BTreeMap<&str, Spec>, refs: &[&str]) -> Result<Vec<String>, String> {
        let lookup = |name: &str| specs.get(name).ok_or_else(|| format!("its middleware {name:?} does not exist"));
        let refs: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
        resolve(&refs, &lookup).map(|list| list.into_iter().map(|(n, _)| n).collect())
    }

    #[test]
    fn chains_expand_in_place_and_providers_are_dropped() {
        let specs = BTreeMap::from([("a", prefix("/a")), ("b", prefix("/b")), ("c", chain(&["b@consul", "a"]))]);
        assert_eq!(run(&specs, &["a", "c@etcd", "b"]).unwrap(), ["a", "b", "a", "b"]);
    }

    #[test]
    fn cycles_missing_members_and_unimplemented_types_are_refused() {
        let specs = BTreeMap::from([
            ("a", chain(&["b"])),
            ("b", chain(&["a"])),
            ("c", chain(&["gone"])),
            ("d", Spec::Unimplemented("rateLimit")),
        ]);
        assert_eq!(run(&specs, &["a"]).unwrap_err(), "its middlewares form a cycle: a -> b -> a");
        assert_eq!(run(&specs, &["c"]).unwrap_err(), "its middleware \"gone\" does not exist (in chain \"c\")");
        assert!(run(&specs, &["d"]).unwrap_err().contains("is a rateLimit, which Pylon does not implement yet"));
    }

    #[test]
    fn chains_that_multiply_are_bounded() {
        let ten = ["x"; 10];
        let specs = BTreeMap::from([("x", chain(&["y"; 10])), ("y", chain(&["z"; 10])), ("z", prefix("/z"))]);
        assert!(run(&specs, &ten).unwrap_err().contains("more than 256"));
    }
}
