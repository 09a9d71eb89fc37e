//! Where a command's static configuration and store come from: the file named by
//! `--configfile`, the store named by `--consul`/`--etcd` (or the file's `[consul]`/`[etcd]`
//! section, or the embedded store), and the dotted-flag overrides laid on top.

use std::path::PathBuf;

use crate::{
    cli::{Global, Override},
    config::{self, ConfigError, Loaded, Node, StoreKind, StoreSection},
    control::store::{codec, etcd::EtcdOptions, keys::Keys, Store, StoreError, StoreSpec},
};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{flag} needs {needs}")]
    MissingFlag { flag: &'static str, needs: &'static str },
    #[error(
        "no static configuration in {store} under {root}: run `pylon storeconfig --configfile=traefik.toml` \
         with the same store flags first, or pass --configfile"
    )]
    NothingStored { store: String, root: String },
}

/// The store to use and the key prefix within it.
#[derive(Clone, Debug)]
pub struct Target {
    pub spec: StoreSpec,
    pub keys: Keys,
}

/// The file's tree with the command line's overrides on top, if `--configfile` was given.
pub fn file_tree(global: &Global, overrides: &[Override]) -> Result<Option<Node>, SetupError> {
    let Some(path) = &global.configfile else { return Ok(None) };
    Ok(Some(with_overrides(config::read_file(path)?, overrides)?))
}

pub fn with_overrides(tree: Node, overrides: &[Override]) -> Result<Node, ConfigError> {
    let flags = Node::from_pairs(
        overrides.iter().map(|o| (o.path.clone(), o.value.clone(), o.origin.clone())),
        config::tree::STATIC_NAMES,
    )
    .map_err(|(origin, message)| ConfigError(vec![config::Diagnostic { origin, message }]))?;
    Ok(tree.overlay(flags))
}

/// Chooses the store: named flags first (`--etcd.endpoint`), then the file's `[etcd]`/`[consul]`
/// (v3: `providers.etcd`/`providers.consul`) with the dotted flags on it, or without a file the
/// dotted flags alone (`--providers.etcd.endpoints=...`), then the embedded store.
pub fn target(global: &Global, file: Option<&StoreSection>, overrides: &[Override]) -> Result<Target, SetupError> {
    let flagged = match (file, global.configfile.is_some()) {
        (None, false) => config::store_of(with_overrides(Node::empty(), overrides)?)?,
        _ => None,
    };
    let file = file.or(flagged.as_ref());
    let from_file = |kind| file.filter(|s| s.kind == kind);
    if global.etcd || (!global.consul && from_file(StoreKind::Etcd).is_some()) {
        let section = from_file(StoreKind::Etcd);
        let endpoints = match (&global.etcd_endpoint, section) {
            (Some(list), _) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            (None, Some(s)) if !s.endpoints.is_empty() => s.endpoints.clone(),
            _ => vec!["127.0.0.1:2379".to_string()],
        };
        let options = EtcdOptions {
            endpoints,
            username: global.etcd_username.clone().or_else(|| section.and_then(|s| s.username.clone())),
            password: global.etcd_password.clone().or_else(|| section.and_then(|s| s.password.clone())),
            tls: section.and_then(|s| s.tls.clone()),
        };
        if options.username.is_some() != options.password.is_some() {
            return Err(SetupError::MissingFlag {
                flag: "--etcd.username",
                needs: "--etcd.password (and the reverse)",
            });
        }
        let prefix = global.etcd_prefix.clone().or_else(|| section.and_then(|s| s.prefix.clone()));
        return Ok(Target { spec: StoreSpec::Etcd(options), keys: Keys::new(prefix.as_deref().unwrap_or_default()) });
    }
    if global.consul || from_file(StoreKind::Consul).is_some() {
        let section = from_file(StoreKind::Consul);
        let endpoint = global
            .consul_endpoint
            .clone()
            .or_else(|| section.and_then(|s| s.endpoints.first().cloned()))
            .unwrap_or_else(|| "127.0.0.1:8500".to_string());
        let token = global.consul_token.clone().or_else(|| section.and_then(|s| s.token.clone()));
        let prefix = global.consul_prefix.clone().or_else(|| section.and_then(|s| s.prefix.clone()));
        let tls = section.and_then(|s| s.tls.clone());
        return Ok(Target {
            spec: StoreSpec::Consul { endpoint, token, tls },
            keys: Keys::new(prefix.as_deref().unwrap_or_default()),
        });
    }
    let dir: PathBuf = global.datadir.clone();
    Ok(Target { spec: StoreSpec::Embedded { dir }, keys: Keys::new("") })
}

/// Reads the static configuration stored under `keys`, with the overrides on top.
pub async fn stored_config(store: &Store, keys: &Keys, overrides: &[Override]) -> Result<Loaded, SetupError> {
    let listing = store.list(&keys.static_root()).await?;
    let Some(tree) = codec::decode_static(keys, &listing.kvs).map_err(|d| ConfigError(vec![d]))? else {
        // As Traefik takes its static configuration from flags alone: flags that declare an
        // entrypoint are a configuration; flags that only name the store wait for storeconfig.
        if overrides.iter().any(|o| o.path.first().is_some_and(|p| p.eq_ignore_ascii_case("entrypoints"))) {
            tracing::info!(store = %store.describe(), "no static configuration stored; using the command line's");
            return Ok(config::load(with_overrides(Node::empty(), overrides)?)?);
        }
        return Err(SetupError::NothingStored { store: store.describe(), root: keys.static_root() });
    };
    Ok(config::load(with_overrides(tree, overrides)?)?)
}
