//! Where dynamic configuration comes from, as the static file says: the file provider
//! (v1.7's `[file]`, v3's `providers.file`) as a validated [`FileProvider`], v3's certificate
//! resolvers' and `global`'s serde types, and the checks on the store sections and on providers
//! Pylon does not implement (each a located warning or error).

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    dialect::FOREIGN_V3_PROVIDERS,
    file::{RawAcme, RawConfig},
    lenient, Checker,
};

/// `certificatesResolvers.<name>`.
#[derive(Debug, Default, Deserialize)]
pub struct RawResolver {
    pub acme: Option<RawAcme>,
}

/// `[file]` or `providers.file`.
#[derive(Debug, Default, Deserialize)]
pub struct RawFileProvider {
    pub filename: Option<String>,
    pub directory: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub watch: Option<bool>,
    /// Traefik's Go templates in dynamic files: a warning (Pylon's files are not templates).
    #[serde(default, deserialize_with = "lenient::bool")]
    pub debugloggeneratedtemplate: Option<bool>,
}

/// Traefik v3's `global`: Pylon never phones home, so both mean what Pylon always does.
#[derive(Debug, Default, Deserialize)]
pub struct RawGlobal {
    #[serde(default, deserialize_with = "lenient::bool")]
    pub checknewversion: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub sendanonymoususage: Option<bool>,
}

/// The file provider: dynamic configuration from one file or every `.toml`/`.yml`/`.yaml`
/// file of a directory, reloaded on change when `watch` is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProvider {
    pub source: FileSource,
    pub watch: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSource {
    File(PathBuf),
    Directory(PathBuf),
}

impl std::fmt::Display for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSource::File(p) => write!(f, "file {}", p.display()),
            FileSource::Directory(p) => write!(f, "directory {}", p.display()),
        }
    }
}

pub(super) fn file_provider(raw: &RawConfig, c: &mut Checker) -> Option<FileProvider> {
    let file = raw.file.as_ref()?;
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let source = match (nonempty(&file.filename), nonempty(&file.directory)) {
        (Some(_), Some(_)) => {
            c.error("file", "the file provider takes filename or directory, not both");
            return None;
        }
        (Some(name), None) => FileSource::File(name.into()),
        (None, Some(dir)) => FileSource::Directory(dir.into()),
        (None, None) => {
            c.error(
                "file",
                "the file provider needs filename or directory (Traefik 1.x's frontends and backends written in \
                 traefik.toml itself are not read: move them to a dynamic file in Traefik v2+'s format)",
            );
            return None;
        }
    };
    if file.debugloggeneratedtemplate.is_some() {
        c.warn("file.debugloggeneratedtemplate", "dynamic files are not Go templates in Pylon; ignored");
    }
    Some(FileProvider { source, watch: file.watch.unwrap_or(true) })
}

/// Located findings on the providers' sections: v3 providers Pylon lacks, store settings it
/// cannot honour.
pub(super) fn check(raw: &RawConfig, c: &mut Checker) {
    for key in raw.providers.iter().flat_map(|p| p.keys()) {
        let path = format!("providers.{key}");
        if FOREIGN_V3_PROVIDERS.contains(&key.as_str()) {
            c.warn(
                &path,
                format!(
                    "providers.{key} is a Traefik provider that Pylon does not implement; ignored (Pylon reads \
                     dynamic configuration from etcd, Consul, its embedded store and files)"
                ),
            );
        } else {
            c.warn(&path, format!("unknown key {path:?}; ignored"));
        }
    }
    for (name, store) in [("etcd", &raw.etcd), ("consul", &raw.consul)] {
        let Some(store) = store else { continue };
        if let Some(tls) = &store.tls {
            let at = |key: &str| format!("{name}.tls.{key}");
            if tls.insecureskipverify == Some(true) {
                // Fail closed: a TLS connection to an unverified store is one anyone can answer.
                c.error(
                    &at("insecureskipverify"),
                    "not supported: give tls.ca, the CA that signed the store's certificate",
                );
            }
            if tls.cert.is_some() != tls.key.is_some() {
                c.error(&format!("{name}.tls"), "tls.cert and tls.key go together");
            }
            if tls.caoptional.is_some() {
                c.warn(&at("caoptional"), "not needed: the store's certificate is always verified; ignored");
            }
        }
        let endpoints = store.endpoint.as_deref().unwrap_or_default();
        if name == "consul" && endpoints.len() > 1 {
            c.warn(
                &format!("{name}.endpoint"),
                "Pylon talks to one Consul agent: the first endpoint is used, the others are not (point it at the \
                 local agent, which forwards to the servers)",
            );
        }
    }
}
