//! Structured logs through tracing, to stderr. The level starts from `--loglevel` (or INFO)
//! and follows the configuration's `logLevel` once it is loaded; `RUST_LOG`, when set, wins.

use std::io::IsTerminal;

use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry};

pub struct Logging {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl Logging {
    /// Installs the global subscriber. Call once, from `main`.
    pub fn init(level: &str) -> Logging {
        let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
        let filter = EnvFilter::new(from_env.as_deref().unwrap_or(&directive(level)));
        let (layer, handle) = reload::Layer::new(filter);
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false);
        let _ = tracing_subscriber::registry().with(layer).with(fmt).try_init();
        Logging { handle: from_env.is_none().then_some(handle) }
    }

    /// A handle that changes nothing, for tests and embedding.
    pub fn disabled() -> Logging {
        Logging { handle: None }
    }

    pub fn set_level(&self, level: &str) {
        if let Some(handle) = &self.handle {
            let _ = handle.reload(EnvFilter::new(directive(level)));
        }
    }
}

/// Our level for our crate; the libraries underneath only speak up when something is wrong.
fn directive(level: &str) -> String {
    let level = match level.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => "info",
    };
    format!("warn,pylon={level}")
}
