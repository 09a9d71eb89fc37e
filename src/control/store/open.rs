//! Choosing and opening a backend: what the command line and the `[consul]` / `[etcd]`
//! sections describe, as one [`StoreSpec`].

use std::{path::PathBuf, sync::Arc};

use super::{
    consul::Consul,
    embedded::Embedded,
    etcd::{Etcd, EtcdOptions},
    Result, Store,
};

/// Which store to use and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    Embedded { dir: PathBuf },
    Etcd(EtcdOptions),
    Consul { endpoint: String, token: Option<String>, tls: Option<super::tls::StoreTls> },
}

impl StoreSpec {
    /// The provider Traefik would name for this store, which qualifies names in metrics and
    /// the API (`app@etcd`); the embedded store is `embedded`.
    pub fn provider(&self) -> &'static str {
        match self {
            StoreSpec::Embedded { .. } => "embedded",
            StoreSpec::Etcd(_) => "etcd",
            StoreSpec::Consul { .. } => "consul",
        }
    }

    /// For messages: "etcd at 127.0.0.1:2379".
    pub fn describe(&self) -> String {
        match self {
            StoreSpec::Embedded { dir } => format!("the embedded store in {}", dir.display()),
            StoreSpec::Etcd(o) => {
                format!("etcd at {}{}", o.endpoints.join(","), if o.tls.is_some() { " over TLS" } else { "" })
            }
            StoreSpec::Consul { endpoint, tls, .. } => {
                format!("Consul at {endpoint}{}", if tls.is_some() { " over TLS" } else { "" })
            }
        }
    }
}

/// Opens the store once; a store that cannot be reached is an error naming its endpoint,
/// returned within a few seconds.
pub async fn open(spec: &StoreSpec) -> Result<Store> {
    let backend: Arc<dyn super::Backend> = match spec {
        StoreSpec::Embedded { dir } => Arc::new(Embedded::open(dir).await?),
        StoreSpec::Etcd(options) => Arc::new(Etcd::connect(options).await?),
        StoreSpec::Consul { endpoint, token, tls } => {
            Arc::new(Consul::connect(endpoint, token.clone(), tls.as_ref()).await?)
        }
    };
    Ok(Store::new(backend))
}
