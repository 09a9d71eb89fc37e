//! `pylon storeconfig`: load and validate the static configuration file, encode it as KV pairs
//! and write it in one transaction that replaces whatever static configuration was stored
//! before. It never touches ACME state or dynamic configuration.

use std::{collections::BTreeMap, io::Write};

use crate::{
    cli::{Global, Override},
    config,
    setup::{self, SetupError},
    store::{self, codec, Op, Txn},
};

/// What was (or would be) written.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub keys: usize,
    /// The store revision of the write; `None` for a dry run or when nothing changed.
    pub revision: Option<u64>,
}

pub async fn storeconfig(
    global: &Global,
    overrides: &[Override],
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<Report, SetupError> {
    let tree = setup::file_tree(global, overrides)?.ok_or(SetupError::MissingFlag {
        flag: "storeconfig",
        needs: "--configfile=PATH (the traefik.toml to store)",
    })?;
    let loaded = config::load(tree.clone())?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let target = setup::target(global, loaded.store.as_ref())?;
    let root = target.keys.static_root();
    let pairs = codec::encode_static(&target.keys, &tree);
    let _ = writeln!(out, "{} keys under {root} for {}", pairs.len(), target.spec.describe());
    if dry_run {
        for (key, value) in &pairs {
            let _ = writeln!(out, "{key} = {value}");
        }
        return Ok(Report { keys: pairs.len(), revision: None });
    }

    let store = store::open(&target.spec).await?;
    let current = store.list(&root).await?;
    let stored: BTreeMap<String, String> =
        current.kvs.iter().map(|kv| (kv.key.clone(), String::from_utf8_lossy(&kv.value).into_owned())).collect();
    let file: BTreeMap<String, String> = pairs.iter().cloned().collect();
    if stored == file {
        let _ = writeln!(out, "unchanged: the store already holds this configuration (revision {})", current.revision);
        return Ok(Report { keys: pairs.len(), revision: None });
    }
    // One transaction: a put for each key that is new or changed, a delete for each stored key
    // that left the file. (etcd refuses a range delete and a put inside that range together.)
    let mut ops: Vec<Op> = file
        .iter()
        .filter(|(k, v)| stored.get(*k) != Some(*v))
        .map(|(k, v)| Op::put(k.clone(), v.clone().into_bytes()))
        .collect();
    let changed = ops.len();
    ops.extend(stored.keys().filter(|k| !file.contains_key(*k)).map(|key| Op::Delete { key: key.clone() }));
    let removed = ops.len() - changed;
    let result = store.txn(Txn { compares: vec![], ops }).await?;
    let _ = writeln!(
        out,
        "wrote {} keys ({changed} new or changed, {removed} removed) to {} at revision {}",
        pairs.len(),
        store.describe(),
        result.revision
    );
    Ok(Report { keys: pairs.len(), revision: Some(result.revision) })
}
