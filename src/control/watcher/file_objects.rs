//! The file provider's objects in the watcher: each new [`FileSet`] is laid beside the store's
//! owners (`name@file`), only the owners that changed decoded again; its unreadable files are
//! rejections, reported with file:line:column until they are fixed.

use std::sync::Arc;

use super::Watcher;
use crate::{
    control::files::FileSet,
    dynamic::{from_file, Owner},
};

impl Watcher {
    /// Takes in `set`; whether the table needs rebuilding.
    pub(super) fn take_files(&mut self, set: &Arc<FileSet>) -> bool {
        let (owners, warnings) = from_file::owners(&set.trees);
        let mut changed = false;
        for (owner, tree) in &owners {
            if self.files.owners.get(owner) != Some(tree) {
                self.files.certificates_dirty |= *owner == Owner::FileRest;
                self.parts.update(owner.clone(), Some(tree.clone()));
                changed = true;
            }
        }
        for gone in self.files.owners.keys().filter(|o| !owners.contains_key(*o)) {
            self.files.certificates_dirty |= *gone == Owner::FileRest;
            self.parts.update(gone.clone(), None);
            changed = true;
        }
        let errors: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        changed |= errors != self.files.errors || warnings != self.files.warnings;
        self.files.owners = owners;
        self.files.errors = errors;
        self.files.warnings = warnings;
        changed
    }
}
