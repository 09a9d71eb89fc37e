//! The static configuration pipeline: sources (file, store, flags) become one [`tree::Node`];
//! serde reads it into the [`file`] types; [`model`] validates them into the domain model.
//! Every diagnostic names where the offending value came from: `file:line:column`, a flag, or
//! a KV key. Unknown keys are warnings; wrong types and invalid values are errors.

mod acme;
pub mod dialect;
mod entrypoint;
pub mod file;
pub(crate) mod lenient;
pub mod model;
pub mod providers;
pub mod tls_options;
pub mod transport;
pub mod tree;
mod unhonoured;
mod yaml;

use std::{collections::BTreeMap, fmt, path::Path};

pub use lenient::parse_duration;
pub use model::StaticConfig;
pub use tree::{Node, Origin};

/// One finding, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: Origin,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Everything wrong with a configuration, one located line each.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<Diagnostic>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// How to reach a KV store, as the `[consul]` or `[etcd]` section says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSection {
    pub kind: StoreKind,
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<crate::control::store::tls::StoreTls>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Consul,
    Etcd,
}

/// A loaded configuration and what was worth a warning.
#[derive(Debug)]
pub struct Loaded {
    pub config: StaticConfig,
    pub store: Option<StoreSection>,
    pub warnings: Vec<Diagnostic>,
}

/// Collects located errors and warnings while the configuration is checked.
pub struct Checker {
    origins: BTreeMap<String, Origin>,
    /// How keys folded from Traefik v3's vocabulary are named in messages.
    aliases: dialect::Aliases,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker {
    pub fn new(origins: BTreeMap<String, Origin>) -> Checker {
        Checker { origins, aliases: dialect::Aliases::default(), errors: Vec::new(), warnings: Vec::new() }
    }

    /// The errors and warnings collected so far, leaving the checker empty.
    pub fn take(&mut self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        (std::mem::take(&mut self.errors), std::mem::take(&mut self.warnings))
    }

    /// Reads `value` (found at `base`, e.g. `http.routers.web`) into `T`: a type error is an
    /// error located at the offending key, an unknown key a located warning. `None` on error.
    pub fn deserialize<T: serde::de::DeserializeOwned>(&mut self, value: toml::Value, base: &str) -> Option<T> {
        let join = |path: &str| match (base.is_empty(), path.is_empty()) {
            (true, _) => path.to_string(),
            (false, true) => base.to_string(),
            (false, false) => format!("{base}.{path}"),
        };
        let mut ignored = Vec::new();
        let mut on_ignored = |path: serde_ignored::Path| ignored.push(ignored_path(&path));
        let deserializer = serde_ignored::Deserializer::new(value, &mut on_ignored);
        let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
        for path in ignored {
            let full = self.aliases.shown(&join(&path));
            let top = full.split('.').next().unwrap_or_default();
            if base.is_empty() && path == top && file::FOREIGN_PROVIDERS.contains(&top) {
                self.warn(&full, format!("[{top}] is a Traefik provider that Pylon does not implement; ignored (Pylon reads dynamic configuration from the KV store)"));
            } else {
                self.warn(&full, format!("unknown key {full:?}; ignored"));
            }
        }
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                let path = join(&err.path().iter().map(segment).collect::<Vec<_>>().join("."));
                let written = self.aliases.shown(&path);
                let shown = if path.is_empty() { "config" } else { &written };
                let message = format!("{shown}: {}", err.inner().message());
                self.error(&path, message);
                None
            }
        }
    }

    /// Where `path` (`a.b.0.c`) came from; the nearest known ancestor if the path itself is not.
    pub fn locate(&self, path: &str) -> Origin {
        let mut path = path;
        loop {
            if let Some(origin) = self.origins.get(path) {
                return origin.clone();
            }
            match path.rsplit_once('.') {
                Some((parent, _)) => path = parent,
                None => return self.origins.get("").cloned().unwrap_or(Origin::Default),
            }
        }
    }
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic { origin: self.locate(path), message: message.into() });
    }
    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Diagnostic { origin: self.locate(path), message: message.into() });
    }
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Reads and parses a TOML or YAML file (by its extension) into a source tree.
pub fn read_file(path: &Path) -> Result<Node, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![Diagnostic {
            origin: Origin::Flag(format!("--configfile={name}")),
            message: format!("cannot read {name}: {e}"),
        }])
    })?;
    Node::from_text(path, &text, tree::STATIC_NAMES)
        .map_err(|(origin, message)| ConfigError(vec![Diagnostic { origin, message }]))
}

/// Reads a source tree into a validated configuration.
pub fn load(tree: Node) -> Result<Loaded, ConfigError> {
    let (mut value, mut origins) = tree.into_value();
    dialect::enable_flagged_sections(&mut value);
    let found = dialect::detect(&value, &origins).map_err(|d| ConfigError(vec![d]))?;
    let (aliases, errors, warnings) = match found.any_v3 {
        true => dialect::fold_v3(&mut value, &mut origins),
        false => Default::default(),
    };
    let mut checker = Checker::new(origins);
    checker.aliases = aliases;
    checker.errors.extend(errors);
    checker.warnings.extend(warnings);
    let Some(raw) = checker.deserialize::<file::RawConfig>(value, "") else {
        let (errors, warnings) = checker.take();
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        return Err(ConfigError(errors));
    };
    let store = store_section(&raw);
    match model::build(raw, &mut checker) {
        Some(config) if checker.ok() => Ok(Loaded { config, store, warnings: checker.warnings }),
        _ => {
            // The errors stop the command; the warnings may explain them (a misspelt key).
            for warning in &checker.warnings {
                tracing::warn!("{warning}");
            }
            Err(ConfigError(checker.errors))
        }
    }
}

/// The store that flags alone name (`--providers.etcd.endpoints=...`, `--consul.endpoint=...`
/// as a dotted flag), for a command that reads its static configuration from that store.
pub fn store_of(tree: Node) -> Result<Option<StoreSection>, ConfigError> {
    #[derive(Default, serde::Deserialize)]
    struct Stores {
        etcd: Option<file::RawKvStore>,
        consul: Option<file::RawKvStore>,
    }
    let (mut value, mut origins) = tree.into_value();
    dialect::enable_flagged_sections(&mut value);
    if dialect::detect(&value, &origins).map_err(|d| ConfigError(vec![d]))?.any_v3 {
        dialect::fold_v3(&mut value, &mut origins);
    }
    let mut checker = Checker::new(origins);
    let stores = checker.deserialize::<Stores>(value, "");
    let Some(Stores { etcd, consul }) = stores else { return Err(ConfigError(checker.take().0)) };
    let raw = file::RawConfig { etcd, consul, ..Default::default() };
    Ok(store_section(&raw))
}

fn store_section(raw: &file::RawConfig) -> Option<StoreSection> {
    let (kind, section) = match (&raw.etcd, &raw.consul) {
        (Some(etcd), _) => (StoreKind::Etcd, etcd),
        (None, Some(consul)) => (StoreKind::Consul, consul),
        (None, None) => return None,
    };
    Some(StoreSection {
        kind,
        endpoints: section.endpoint.clone().unwrap_or_default(),
        prefix: section.prefix.clone(),
        token: section.token.clone(),
        username: section.username.clone(),
        password: section.password.clone(),
        tls: section.tls.as_ref().map(|t| crate::control::store::tls::StoreTls {
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
        }),
    })
}

fn segment(s: &serde_path_to_error::Segment) -> String {
    use serde_path_to_error::Segment;
    match s {
        Segment::Seq { index } => index.to_string(),
        Segment::Map { key } => key.clone(),
        Segment::Enum { variant } => variant.clone(),
        Segment::Unknown => "?".into(),
    }
}

fn ignored_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    let (parent, own) = match path {
        Path::Root => return String::new(),
        Path::Seq { parent, index } => (*parent, index.to_string()),
        Path::Map { parent, key } => (*parent, key.clone()),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            return ignored_path(parent)
        }
    };
    let parent = ignored_path(parent);
    if parent.is_empty() {
        own
    } else {
        format!("{parent}.{own}")
    }
}

#[cfg(test)]
mod tests_v3;
