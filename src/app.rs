//! `pylon run`: the numbered start-up steps, then serving until shutdown.
//!
//! 1. Read the file (`--configfile`) if given, with the command line's overrides on top.
//! 2. Choose the store and connect, retrying with backoff (each attempt logged) until it
//!    answers or shutdown is requested.
//! 3. Without a file, read the static configuration from the store.
//! 4. Load the static certificates, build the upstream client and the access log.
//! 5. Read the dynamic configuration (routers, services, certificates) and start watching it.
//! 6. Bind every entrypoint and serve until shutdown.
//!
//! Every control task (the watcher, the ACME manager, health checks) runs on one
//! `TaskTracker` that `run` owns. On SIGTERM the ACME manager stops scheduling at once and its
//! orders in flight get `graceTimeOut`; the server drains; then the other control tasks are
//! cancelled, and `run` waits for the whole tree (the lease revoked, so that another replica
//! takes this one's locks at once) before it returns.

use std::{sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    cli::Cli,
    config::{self, Loaded},
    control::acme,
    control::events::Bus,
    control::replicas::ReplicaRecord,
    control::store::{self, Store, StoreSpec},
    control::watcher::Watcher,
    data::access_log::AccessLog,
    data::metrics::Metrics,
    data::plane::Plane,
    data::proxy::internal::Internal,
    data::proxy::Proxy,
    data::server::{BindError, Server},
    data::tls::{self, CertStore},
    data::upstream::{RootCaError, Upstream},
    logging::Logging,
    observe::{
        api::Api,
        cluster::Cluster,
        control::ControlMetrics,
        prometheus::{Exposition, Scrape},
        Endpoints,
    },
    setup::{self, SetupError},
};

/// How long start-up waits for the first dynamic configuration before serving without it.
const FIRST_TABLE: Duration = Duration::from_secs(10);
/// After the drain, how long the control tasks get to stop on top of `graceTimeOut`.
const STOP_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(#[from] SetupError),
    #[error("{0}")]
    Bind(#[from] BindError),
    /// A certificate of the static configuration that cannot be used.
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    RootCa(#[from] RootCaError),
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    #[error("{0}")]
    Acme(#[from] acme::AcmeError),
}

/// `pylon acme ...`: the static configuration from the file or the store, then the action.
pub async fn acme_command(cli: &Cli, action: &acme::admin::Action) -> Result<(), RunError> {
    let file = match setup::file_tree(&cli.global, &cli.overrides)? {
        Some(tree) => Some(config::load(tree).map_err(SetupError::from)?),
        None => None,
    };
    let target = setup::target(&cli.global, file.as_ref().and_then(|l| l.store.as_ref()), &cli.overrides)?;
    let store = store::open(&target.spec).await.map_err(SetupError::from)?;
    let loaded = match file {
        Some(loaded) => loaded,
        None => setup::stored_config(&store, &target.keys, &cli.overrides).await?,
    };
    if loaded.config.resolvers.is_empty() {
        return Err(RunError::Certificate(
            "the static configuration has no certificate resolver ([acme] or certificatesResolvers)".into(),
        ));
    }
    acme::admin::run(&store, &target.keys, &loaded.config.resolvers, action, &mut std::io::stdout()).await?;
    Ok(())
}

/// `pylon cluster`: the replicas' records and the certificates, read from the store.
pub async fn cluster_command(cli: &Cli) -> Result<(), RunError> {
    let file = match setup::file_tree(&cli.global, &cli.overrides)? {
        Some(tree) => Some(config::load(tree).map_err(SetupError::from)?),
        None => None,
    };
    let target = setup::target(&cli.global, file.as_ref().and_then(|l| l.store.as_ref()), &cli.overrides)?;
    let store = store::open(&target.spec).await.map_err(SetupError::from)?;
    let replicas = crate::control::replicas::list(&store, &target.keys).await.map_err(acme::AcmeError::from)?;
    let mut out = std::io::stdout();
    let _ = crate::control::replicas::table(&replicas, crate::calendar::unix_now(), &mut out);
    let acme = acme::admin::Listing::read(&store, &target.keys).await?;
    let _ = std::io::Write::write_all(&mut out, b"\n");
    acme.certificates(&mut out);
    let _ = std::io::Write::write_all(&mut out, b"\n");
    acme.locks(&mut out);
    Ok(())
}

pub async fn run(cli: &Cli, logging: &Logging, shutdown: CancellationToken) -> Result<(), RunError> {
    // 1. The file, if any.
    let file = match setup::file_tree(&cli.global, &cli.overrides)? {
        Some(tree) => Some(config::load(tree).map_err(SetupError::from)?),
        None => None,
    };
    // 2. The store.
    let target = setup::target(&cli.global, file.as_ref().and_then(|l| l.store.as_ref()), &cli.overrides)?;
    let Some(store) = connect(&target.spec, &shutdown).await else { return Ok(()) };
    // 3. The static configuration.
    let loaded: Loaded = match file {
        Some(loaded) => loaded,
        None => setup::stored_config(&store, &target.keys, &cli.overrides).await?,
    };
    // 4. Certificates, upstream client, access log.
    logging.set_level(loaded.config.log_level);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let config = Arc::new(loaded.config);
    let (certs, plane) = CertStore::new().map_err(|e| RunError::Certificate(e.to_string()))?;
    certs.replace(tls::Source::Static, static_certificates(&config)?);
    let upstream = Upstream::new(&config.transport)?;
    let access_log = config.access_log.as_ref().map(AccessLog::start).transpose().map_err(RunError::AccessLog)?;
    let tasks = TaskTracker::new();
    // Cancelled after the drain: the table keeps following the store while requests finish.
    let control = CancellationToken::new();
    let events = Bus::default();
    let control_metrics = Arc::new(ControlMetrics::default());
    tasks.spawn(control_metrics.clone().run(
        events.subscribe(),
        store.clone(),
        target.keys.static_root(),
        control.child_token(),
    ));

    // 5. Dynamic configuration.
    let parts = (plane.clone(), certs.clone());
    let watcher = Watcher::new(
        store.clone(),
        target.keys.clone(),
        config.clone(),
        parts,
        upstream.clone(),
        (events.clone(), tasks.clone()),
    );
    let mut watcher = watcher;
    if let Some(provider) = &config.file {
        let (good, set) = crate::control::files::first(&provider.source);
        let (files, file_set) = tokio::sync::watch::channel(Arc::new(set));
        watcher.file_set = Some(file_set);
        tasks.spawn(crate::control::files::run(provider.clone(), good, files, control.child_token()));
        tracing::info!(source = %provider.source, watch = provider.watch, "file provider");
    }
    let mut status = watcher.status.subscribe();
    let api_status = watcher.status.subscribe();
    let record_status = watcher.status.subscribe();
    let metrics_status = watcher.status.subscribe();
    let wanted = watcher.acme_wanted.subscribe();
    tasks.spawn(watcher.run(control.child_token()));
    if tokio::time::timeout(FIRST_TABLE, status.changed()).await.is_err() {
        tracing::warn!("no dynamic configuration after {FIRST_TABLE:?}; serving without routers until it arrives");
    }

    // 6. Listen, register, then order: a validation request must find the entrypoints bound.
    let server = Server::bind(config.clone()).await?;
    let (stored, acme_state) = tokio::sync::watch::channel(Arc::default());
    if !config.resolvers.is_empty() {
        let refused = control_metrics.on_demand_refused.clone();
        let manager =
            acme_manager(&config.resolvers, &store, &target.keys, (&certs, &plane), wanted, (events.clone(), refused))?;
        let manager = acme::Manager { grace: config.lifecycle.grace_timeout, stored, ..manager };
        tasks.spawn(manager.run(shutdown.child_token()));
    }
    let (replicas_tx, replicas) = tokio::sync::watch::channel(Arc::default());
    tasks.spawn(crate::control::replicas::follow(
        store.clone(),
        target.keys.clone(),
        replicas_tx,
        control.child_token(),
    ));
    let host = host_name();
    let me = ReplicaRecord {
        id: crate::control::replicas::id(&host),
        holder: holder(),
        name: host,
        version: env!("CARGO_PKG_VERSION").to_string(),
        addresses: server.local_addrs().into_iter().map(|(ep, a)| (ep, a.to_string())).collect(),
        started: crate::calendar::unix_now(),
        ..ReplicaRecord::default()
    };
    tasks.spawn(crate::control::replicas::register(
        store.clone(),
        target.keys.clone(),
        me,
        record_status,
        control.child_token(),
    ));
    for (name, addr) in server.local_addrs() {
        let ep = &config.entry_points[&name];
        let mut roles = Vec::new();
        if ep.tls.is_some() {
            roles.push("tls".to_string());
        }
        if let Some(r) = &ep.redirect {
            roles.push(format!("redirect to {}", r.entry_point));
        }
        if config.ping.as_deref() == Some(&name) {
            roles.push("ping".into());
        }
        tracing::info!(entrypoint = %name, %addr, roles = %roles.join(", "), "listening");
    }
    tracing::info!(
        store = %store.describe(),
        prefix = %target.keys.prefix(),
        source = if cli.global.configfile.is_some() { "file" } else { "store" },
        entrypoints = config.entry_points.len(),
        routers = status.borrow().routers,
        resolvers = config.resolvers.len(),
        "pylon {} started",
        env!("CARGO_PKG_VERSION")
    );
    let access_log = access_log.map(Arc::new);
    // The request metrics live as long as the process: each request's meter holds a plain
    // reference, so that counting costs no reference count on a shared cache line.
    let metrics: Option<&'static Metrics> =
        config.metrics.as_ref().map(|m| &*Box::leak(Box::new(Metrics::new(m.settings.clone()))));
    let provider = target.spec.provider();
    let scrape = config.metrics.as_ref().map(|_| {
        let locks = (!config.resolvers.is_empty()).then(|| (acme_state.clone(), holder()));
        let status = metrics_status;
        Scrape::new(Exposition {
            metrics,
            plane: plane.clone(),
            provider,
            control: control_metrics.clone(),
            status,
            locks,
        })
    });
    let cluster = Cluster { replicas, acme: (!config.resolvers.is_empty()).then_some(acme_state) };
    let api = config.api.as_ref().map(|_| Api {
        cluster,
        control: control_metrics.clone(),
        status: api_status,
        statics: config.clone(),
        plane: plane.clone(),
        provider,
        started: crate::calendar::rfc3339(crate::calendar::unix_now()),
    });
    let internal: Option<Arc<dyn Internal>> = match (scrape, api) {
        (None, None) => None,
        (metrics, api) => {
            let dashboard = config.api.as_ref().is_some_and(|a| a.dashboard);
            Some(Arc::new(Endpoints { metrics, api, dashboard }))
        }
    };
    let proxy = Arc::new(Proxy {
        plane,
        upstream,
        draining: Arc::default(),
        access_log,
        acme_http01: !config.resolvers.is_empty(),
        tasks: TaskTracker::new(),
        metrics,
        internal,
    });
    server.serve(proxy, shutdown).await;
    control.cancel();
    tasks.close();
    let limit = config.lifecycle.grace_timeout + STOP_MARGIN;
    if tokio::time::timeout(limit, tasks.wait()).await.is_err() {
        tracing::warn!(tasks = tasks.len(), "control tasks still running after {limit:?}; stopping anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// This replica's ACME manager, and its part in handshakes (onDemand) set on the plane.
fn acme_manager(
    resolvers: &[config::model::Acme],
    store: &Store,
    keys: &crate::control::store::keys::Keys,
    (certs, plane): (&Arc<CertStore>, &Arc<Plane>),
    wanted: tokio::sync::watch::Receiver<acme::Wanted>,
    (events, refused): (Bus, Arc<std::sync::atomic::AtomicU64>),
) -> Result<acme::Manager, RunError> {
    // The resolvers share one storage key (the configuration checks it).
    let keyring = acme::keyring(&resolvers[0]).map_err(RunError::Certificate)?;
    let (demand, demands) = tokio::sync::mpsc::unbounded_channel();
    if let Some(acme) = resolvers.iter().find(|a| a.on_demand) {
        let mut on_demand = acme::on_demand::OnDemand::new(acme.on_demand_policy.clone(), demand)
            .map_err(|e| RunError::Certificate(format!("acme.onDemandPolicy: {e}")))?;
        on_demand.refused = refused;
        plane.set_on_demand(Arc::new(on_demand));
    }
    Ok(acme::Manager {
        store: store.clone(),
        keys: keys.clone(),
        resolvers: resolvers.to_vec(),
        keyring: Arc::new(keyring),
        holder: holder(),
        certs: certs.clone(),
        plane: plane.clone(),
        wanted,
        demands,
        events,
        grace: Duration::ZERO,
        stored: tokio::sync::watch::channel(Arc::default()).0,
    })
}

/// The host name (the pod's name on Kubernetes).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

/// This replica's name in lock keys: host name and process id.
fn holder() -> String {
    format!("{}/{}", host_name(), std::process::id())
}

/// The certificates of `[[entryPoints.<name>.tls.certificates]]`: file paths or PEM contents.
fn static_certificates(config: &config::StaticConfig) -> Result<Vec<tls::Loaded>, RunError> {
    let mut loaded = Vec::new();
    for (name, ep) in &config.entry_points {
        for (i, (cert, key)) in ep.tls.iter().flat_map(|t| t.certificates.iter()).enumerate() {
            let place = format!("entrypoints.{name}.tls.certificates.{i}");
            let read = |value: &str| {
                tls::pem_or_file(value).map_err(|e| RunError::Certificate(format!("{place}: {value}: {e}")))
            };
            let pair = tls::Loaded::from_pem(&read(cert)?, &read(key)?)
                .map_err(|e| RunError::Certificate(format!("{place}: {e}")))?;
            loaded.push(pair);
        }
    }
    Ok(loaded)
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
