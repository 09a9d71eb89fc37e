//! `pylon storeconfig`: validate configuration files and write them to the store, replacing
//! what was stored before. `--configfile` writes the static configuration under
//! `<prefix>/static/`; `--dynamic FILE` writes a file-provider dynamic configuration (routers,
//! services, certificates) in Traefik's KV layout under `<prefix>/http/` and `<prefix>/tls/`.
//! Only new or changed keys are put and keys that left the file are deleted, in one
//! transaction when the store's limits allow it; ACME state is never touched.

use std::{collections::BTreeMap, io::Write, path::Path};

use crate::{
    cli::{Global, Override},
    config::{self, ConfigError, Diagnostic, Node},
    control::store::{self, codec, Op, Store, Txn},
    dynamic,
    setup::{self, SetupError},
};

/// What was (or would be) written by one part.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub keys: usize,
    /// The store revision of the write; `None` for a dry run or when nothing changed.
    pub revision: Option<u64>,
}

/// The roots one part of the configuration lives under, and its pairs.
type Part = (Vec<String>, Vec<(String, String)>);

pub async fn storeconfig(
    global: &Global,
    overrides: &[Override],
    dynamic_file: Option<&Path>,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<Vec<Report>, SetupError> {
    let static_tree = setup::file_tree(global, overrides)?;
    if static_tree.is_none() && dynamic_file.is_none() {
        return Err(SetupError::MissingFlag {
            flag: "storeconfig",
            needs: "--configfile=PATH (the traefik.toml to store) and/or --dynamic=PATH (routers and services)",
        });
    }
    let loaded = static_tree.as_ref().map(|tree| config::load(tree.clone())).transpose()?;
    for warning in loaded.iter().flat_map(|l| &l.warnings) {
        tracing::warn!("{warning}");
    }
    let dynamic_tree = dynamic_file.map(read_dynamic).transpose()?;
    let target = setup::target(global, loaded.as_ref().and_then(|l| l.store.as_ref()), overrides)?;

    let mut parts: Vec<Part> = Vec::new();
    if let Some(tree) = &static_tree {
        parts.push((vec![target.keys.static_root()], codec::encode_static(&target.keys, tree)));
    }
    if let Some(tree) = &dynamic_tree {
        parts.push((target.keys.dynamic_roots().to_vec(), codec::encode_dynamic(&target.keys, tree)));
    }
    for (roots, pairs) in &parts {
        let _ = writeln!(out, "{} keys under {} for {}", pairs.len(), roots.join(" and "), target.spec.describe());
    }
    if dry_run {
        for (key, value) in parts.iter().flat_map(|(_, pairs)| pairs) {
            let _ = writeln!(out, "{key} = {}", shown(key, value));
        }
        return Ok(parts.iter().map(|(_, pairs)| Report { keys: pairs.len(), revision: None }).collect());
    }
    let store = store::open(&target.spec).await?;
    let mut reports = Vec::new();
    for (roots, pairs) in parts {
        reports.push(replace(&store, &roots, pairs, out).await?);
    }
    Ok(reports)
}

/// Reads and validates a dynamic-config file; any rejected router, service or certificate is
/// an error, so a broken file never reaches the replicas.
fn read_dynamic(path: &Path) -> Result<Node, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![Diagnostic {
            origin: config::Origin::File { path: path.display().to_string(), line: 0, column: 0 },
            message: format!("cannot read the dynamic configuration: {e}"),
        }])
    })?;
    let mut tree = Node::from_text(path, &text, dynamic::DYNAMIC_NAMES)
        .map_err(|(origin, message)| ConfigError(vec![Diagnostic { origin, message }]))?;
    // Traefik's file-provider files refer to their own objects as `name@file`; in the store
    // they are the store's.
    dynamic::from_file::into_store(&mut tree);
    let built = dynamic::build(tree.clone());
    for warning in &built.warnings {
        tracing::warn!("{warning}");
    }
    if !built.rejected.is_empty() {
        return Err(ConfigError(built.rejected).into());
    }
    Ok(tree)
}

/// A value as `--dry-run` prints it: secrets (password hashes, passwords, tokens) as their size.
fn shown<'v>(key: &str, value: &'v str) -> std::borrow::Cow<'v, str> {
    let key = key.to_ascii_lowercase();
    let secret = ["/basicauth/users", "/digestauth/users"].iter().any(|k| key.contains(k))
        || key.ends_with("/password")
        || key.ends_with("/token");
    match secret {
        true => format!("<secret, {} bytes>", value.len()).into(),
        false => value.into(),
    }
}

/// Makes the keys under `roots` equal to `pairs`: puts for new or changed keys, deletes for
/// stored keys that are not in `pairs`. One transaction when it fits the store's limits;
/// otherwise batches in an order that keeps every intermediate state consistent for replicas:
/// services and certificates before the routers that use them, routers removed before their
/// services.
async fn replace(
    store: &Store,
    roots: &[String],
    pairs: Vec<(String, String)>,
    out: &mut dyn Write,
) -> Result<Report, SetupError> {
    let mut stored = BTreeMap::new();
    let mut revision = 0;
    for root in roots {
        let listing = store.list(root).await?;
        revision = revision.max(listing.revision);
        stored.extend(listing.kvs.into_iter().map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned())));
    }
    let file: BTreeMap<String, String> = pairs.into_iter().collect();
    if stored == file {
        let _ = writeln!(out, "unchanged: the store already holds this configuration (revision {revision})");
        return Ok(Report { keys: file.len(), revision: None });
    }
    let is_router = |k: &str| k.to_ascii_lowercase().contains("/http/routers/");
    let mut puts: Vec<Op> = Vec::new();
    let mut router_puts = Vec::new();
    for (k, v) in file.iter().filter(|(k, v)| stored.get(*k) != Some(*v)) {
        let op = Op::put(k.clone(), v.clone().into_bytes());
        if is_router(k) {
            router_puts.push(op)
        } else {
            puts.push(op)
        }
    }
    let changed = puts.len() + router_puts.len();
    let (mut deletes, router_deletes): (Vec<Op>, Vec<Op>) = stored
        .keys()
        .filter(|k| !file.contains_key(*k))
        .map(|key| Op::Delete { key: key.clone() })
        .partition(|op| !matches!(op, Op::Delete { key } if is_router(key)));
    let removed = deletes.len() + router_deletes.len();
    let mut ops = router_deletes;
    ops.append(&mut puts);
    ops.append(&mut router_puts);
    ops.append(&mut deletes);

    let limit = store.backend().max_txn_ops();
    let batches = ops.len().div_ceil(limit).max(1);
    let mut last = 0;
    let mut rest = ops;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(limit));
        last = store.txn(Txn { compares: vec![], ops: rest }).await?.revision;
        rest = tail;
    }
    let how = if batches == 1 { String::new() } else { format!(" in {batches} transactions of at most {limit}") };
    let _ = writeln!(
        out,
        "wrote {} keys ({changed} new or changed, {removed} removed) to {}{how} at revision {last}",
        file.len(),
        store.describe(),
    );
    Ok(Report { keys: file.len(), revision: Some(last) })
}
