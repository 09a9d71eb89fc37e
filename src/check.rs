//! `--check`: the command line and the static configuration validated as the command would
//! read them, without opening a store or binding a port (for manifests, CI and reviews).
//! Warnings are printed; an error exits 2 as the command itself would.

use std::io::Write;

use crate::{
    app::RunError,
    cli::{Cli, Command},
    config::{self, Node},
    setup::{self, SetupError},
    storeconfig,
};

pub async fn check(cli: &Cli, out: &mut dyn Write) -> Result<(), RunError> {
    if let Some(Command::Storeconfig { dynamic, .. }) = &cli.command {
        // A dry run validates both files and writes nothing; the keys are not worth printing.
        let mut sink = Vec::new();
        storeconfig::storeconfig(&cli.global, &cli.overrides, dynamic.as_deref(), true, &mut sink).await?;
        let _ = writeln!(
            out,
            "ok: storeconfig would write {}",
            String::from_utf8_lossy(&sink).lines().next().unwrap_or("")
        );
        return Ok(());
    }
    let (loaded, source) = match setup::file_tree(&cli.global, &cli.overrides)? {
        Some(tree) => (config::load(tree).map_err(SetupError::from)?, "the file and the flags"),
        // The replica reads the rest from the store, which a check does not open.
        None => (
            config::load(setup::with_overrides(Node::empty(), &cli.overrides).map_err(SetupError::from)?)
                .map_err(SetupError::from)?,
            "the flags (the stored configuration is read at start)",
        ),
    };
    for warning in &loaded.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let target = setup::target(&cli.global, loaded.store.as_ref(), &cli.overrides)?;
    let c = &loaded.config;
    let _ = writeln!(
        out,
        "ok: {source}: {} entrypoints, {} certificate resolvers{}; store: {}",
        c.entry_points.len(),
        c.resolvers.len(),
        c.file.as_ref().map(|f| format!(", file provider on {}", f.source)).unwrap_or_default(),
        target.spec.describe()
    );
    Ok(())
}
