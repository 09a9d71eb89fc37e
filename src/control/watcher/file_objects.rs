//! The file provider's objects in the watcher: each new [`FileSet`] is laid beside the store's
//! owners (`name@file`), only the owners that changed decoded again; its unreadable files are
//! rejections, reported with file:line:column until they are fixed.

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::watch;

use super::Watcher;
use crate::{
    control::files::FileSet,
    dynamic::{from_file, Owner},
};

/// What the watcher took in from the file provider.
#[derive(Default)]
pub(super) struct Files {
    pub(super) owners: BTreeMap<Owner, crate::config::Node>,
    /// Files that cannot be read, as rejections; duplicate objects, as warnings.
    pub(super) errors: Vec<String>,
    pub(super) warnings: Vec<String>,
    /// The files' certificates changed since the last rebuild.
    pub(super) certificates_dirty: bool,
    /// Files taken in that no table serves yet.
    pub(super) pending: bool,
}

impl Watcher {
    /// Takes in `set`; whether the table needs rebuilding.
    pub(super) fn take_files(&mut self, set: &Arc<FileSet>) -> bool {
        let (mut owners, warnings) = from_file::owners(&set.trees);
        let mut errors: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
        // One set of default TLS options, as in Traefik: the store's, when it has them.
        let defaults = Owner::TlsOptions(from_file::DEFAULT_OPTIONS.into());
        let stored_defaults = self
            .mirror
            .owners
            .keys()
            .any(|o| matches!(o, Owner::TlsOptions(n) if n.eq_ignore_ascii_case(from_file::DEFAULT_OPTIONS)));
        if stored_defaults && owners.remove(&defaults).is_some() {
            errors.push("the file provider's tls.options.default: the store defines the default TLS options already; the files' are ignored".into());
        }
        let mut changed = false;
        for (owner, tree) in &owners {
            if self.files.owners.get(owner) != Some(tree) {
                self.files.certificates_dirty |= *owner == Owner::FileRest;
                self.parts.update(owner.clone(), Some(tree.clone()));
                changed = true;
            }
        }
        let gone = self.files.owners.keys().filter(|o| !owners.contains_key(*o));
        for gone in gone.filter(|o| !(stored_defaults && **o == defaults)) {
            self.files.certificates_dirty |= *gone == Owner::FileRest;
            self.parts.update(gone.clone(), None);
            changed = true;
        }
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        changed |= errors != self.files.errors || warnings != self.files.warnings;
        self.files.owners = owners;
        self.files.errors = errors;
        self.files.warnings = warnings;
        self.files.pending |= changed;
        changed
    }
}

/// The next file set, once it changes; never when there is no file provider (or it stopped).
pub(super) async fn changed(files: &mut Option<watch::Receiver<Arc<FileSet>>>) -> Arc<FileSet> {
    if let Some(rx) = files {
        if rx.changed().await.is_ok() {
            return rx.borrow_and_update().clone();
        }
    }
    std::future::pending().await
}
