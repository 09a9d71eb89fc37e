//! `pylon run`: the numbered start-up steps, then serving until shutdown.
//!
//! 1. Read the file (`--configfile`) if given, with the command line's overrides on top.
//! 2. Choose the store and connect, retrying with backoff (each attempt logged) until it
//!    answers or shutdown is requested.
//! 3. Without a file, read the static configuration from the store.
//! 4. Apply the log level, log what was loaded, bind every entrypoint, serve.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{
    cli::Cli,
    config::{self, Loaded},
    logging::Logging,
    server::{BindError, Server},
    setup::{self, SetupError},
    store::{self, Store, StoreSpec},
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(#[from] SetupError),
    #[error("{0}")]
    Bind(#[from] BindError),
}

pub async fn run(cli: &Cli, logging: &Logging, shutdown: CancellationToken) -> Result<(), RunError> {
    // 1. The file, if any.
    let file = match setup::file_tree(&cli.global, &cli.overrides)? {
        Some(tree) => Some(config::load(tree).map_err(SetupError::from)?),
        None => None,
    };
    // 2. The store.
    let target = setup::target(&cli.global, file.as_ref().and_then(|l| l.store.as_ref()))?;
    let Some(store) = connect(&target.spec, &shutdown).await else { return Ok(()) };
    // 3. The static configuration.
    let loaded: Loaded = match file {
        Some(loaded) => loaded,
        None => setup::stored_config(&store, &target.keys, &cli.overrides).await?,
    };
    // 4. Serve.
    logging.set_level(loaded.config.log_level);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let server = Server::bind(&loaded.config).await?;
    let c = &loaded.config;
    for (name, addr) in server.local_addrs() {
        let ep = &c.entry_points[&name];
        let mut roles = Vec::new();
        if ep.tls.is_some() {
            roles.push("tls".to_string());
        }
        if let Some(r) = &ep.redirect {
            roles.push(format!("redirect to {}", r.entry_point));
        }
        if c.ping.as_deref() == Some(&name) {
            roles.push("ping".into());
        }
        tracing::info!(entrypoint = %name, %addr, roles = %roles.join(", "), "listening");
    }
    tracing::info!(
        store = %store.describe(),
        prefix = %target.keys.prefix(),
        source = if cli.global.configfile.is_some() { "file" } else { "store" },
        entrypoints = c.entry_points.len(),
        acme = c.acme.is_some(),
        acme_domains = c.acme.as_ref().map_or(0, |a| a.domains.len()),
        "pylon {} started",
        env!("CARGO_PKG_VERSION")
    );
    server.serve(shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Connects to the store, retrying with capped exponential backoff; `None` if shutdown came
/// first.
async fn connect(spec: &StoreSpec, shutdown: &CancellationToken) -> Option<Store> {
    let mut delay = Duration::from_millis(500);
    for attempt in 1.. {
        match store::open(spec).await {
            Ok(store) => return Some(store),
            Err(err) => tracing::warn!(attempt, "{err}; retrying in {delay:?}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    None
}
