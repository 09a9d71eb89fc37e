//! The `pylon` binary: parse the command line, start logging, run the command, map errors to
//! exit codes (2 for a bad configuration, 1 for anything else).

use std::process::ExitCode;

use pylon::{
    app::{self, RunError},
    cli::{self, Command},
    logging::Logging,
    setup::SetupError,
    storeconfig,
};
use tokio_util::sync::CancellationToken;

/// mimalloc: per-thread heaps suit the worker-per-core server better than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args()) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    let logging = Logging::init(cli.global.loglevel.as_deref().unwrap_or("info"));
    // The control plane (store, watcher, health checks, signals) runs here, on one thread;
    // connections are served by the server's worker threads, one per core.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("pylon: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if cli.global.check {
            return pylon::check::check(&cli, &mut std::io::stdout()).await;
        }
        match &cli.command {
            Some(Command::Version) => {
                println!("pylon {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
            Some(Command::Storeconfig { dry_run, dynamic }) => {
                let dynamic = dynamic.as_deref();
                storeconfig::storeconfig(&cli.global, &cli.overrides, dynamic, *dry_run, &mut std::io::stdout())
                    .await
                    .map(|_| ())
                    .map_err(RunError::from)
            }
            Some(Command::Acme { action }) => app::acme_command(&cli, action).await,
            Some(Command::Cluster) => app::cluster_command(&cli).await,
            Some(Command::Run) | None => {
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                app::run(&cli, &logging, shutdown).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pylon: {err}");
            match err {
                RunError::Setup(SetupError::Config(_)) | RunError::Certificate(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// SIGTERM or SIGINT starts the graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
