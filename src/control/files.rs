//! The file provider: dynamic configuration from one TOML/YAML file or a directory of them,
//! read at start and, with `watch`, again within a second of a change (inotify through
//! `notify`; polling every half second where inotify cannot watch). A file that does not parse
//! keeps its last good version and is reported with file:line:column; the watcher lays the
//! files' objects (`name@file`) beside the store's.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{
        providers::{FileProvider, FileSource},
        Diagnostic, Node, Origin,
    },
    dynamic::DYNAMIC_NAMES,
};

/// Files read from a directory at most (its subdirectories included).
const MAX_FILES: usize = 1000;
/// The largest file read.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// How deep subdirectories are followed.
const MAX_DEPTH: usize = 8;
/// Events closer together than this are one change (an editor writes, renames, chmods).
const SETTLE: Duration = Duration::from_millis(50);
/// The poll period where inotify cannot watch.
const POLL: Duration = Duration::from_millis(500);

/// What the files say now: each file's last good tree, in path order, and what is wrong.
#[derive(Debug, Default, PartialEq)]
pub struct FileSet {
    pub trees: Vec<Node>,
    pub errors: Vec<Diagnostic>,
}

/// The files as they are now, read before the replica starts: the state [`run`] goes on
/// from, and the first [`FileSet`].
pub fn first(source: &FileSource) -> (Good, FileSet) {
    let mut good = Good::new();
    let set = read(source, &mut good);
    (good, set)
}

/// Each file's last good version.
pub type Good = BTreeMap<PathBuf, Parsed>;

/// A file's text, its tree, and the tree served: with the certificate files it names read in.
#[derive(Debug)]
pub struct Parsed {
    text: String,
    raw: Node,
    served: Node,
}

/// Follows the files (when `watch` is on) and publishes each new [`FileSet`] until `shutdown`.
pub async fn run(
    provider: FileProvider,
    mut good: Good,
    out: watch::Sender<Arc<FileSet>>,
    shutdown: CancellationToken,
) {
    let publish = |good: &mut Good| {
        let set = read(&provider.source, good);
        out.send_if_modified(|current| {
            let changed = **current != set;
            if changed {
                *current = Arc::new(set);
            }
            changed
        });
    };
    if !provider.watch {
        return;
    }
    let (tx, mut changes) = mpsc::unbounded_channel();
    let mut watcher = watch_paths(&provider.source, tx);
    if watcher.is_none() {
        tracing::warn!(source = %provider.source, "file provider: inotify cannot watch; polling every {POLL:?}");
    }
    // What changed between the first reading and the watch.
    publish(&mut good);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(ok) = changes.recv(), if watcher.is_some() => {
                // Let the burst settle, then read once.
                tokio::time::sleep(SETTLE).await;
                let mut ok = ok;
                while let Ok(more) = changes.try_recv() {
                    ok &= more;
                }
                // The watched directory itself replaced or removed (`rm -rf` then `mkdir`), or
                // inotify failing: its watch sees nothing more, so polling takes over.
                let gone = watcher.as_ref().is_some_and(|(_, root)| !root.is_dir());
                if !ok || gone {
                    tracing::warn!(source = %provider.source, "file provider: the watch was lost; polling every {POLL:?}");
                    watcher = None;
                }
            }
            _ = tokio::time::sleep(POLL), if watcher.is_none() => {}
        }
        publish(&mut good);
    }
}

/// An inotify watch on the directory (or the file's directory: editors and Kubernetes'
/// ConfigMaps replace files by renaming); `None` when it cannot be set.
fn watch_paths(source: &FileSource, tx: mpsc::UnboundedSender<bool>) -> Option<(notify::RecommendedWatcher, PathBuf)> {
    use notify::Watcher;
    let (path, mode) = match source {
        FileSource::Directory(dir) => (dir.clone(), notify::RecursiveMode::Recursive),
        FileSource::File(file) => {
            let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            (parent.to_path_buf(), notify::RecursiveMode::NonRecursive)
        }
    };
    let handler = move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event.is_ok());
    };
    let mut watcher = notify::recommended_watcher(handler).ok()?;
    match watcher.watch(&path, mode) {
        Ok(()) => Some((watcher, path)),
        Err(err) => {
            tracing::warn!(path = %path.display(), "file provider: cannot watch: {err}");
            None
        }
    }
}

/// Reads every file of `source`; a file that cannot be read or parsed keeps its version in
/// `good`, if it had one.
fn read(source: &FileSource, good: &mut Good) -> FileSet {
    let mut errors = Vec::new();
    let paths = match source {
        FileSource::File(file) => vec![file.clone()],
        FileSource::Directory(dir) => {
            let mut paths = Vec::new();
            if let Err(err) = list(dir, 0, &mut paths) {
                errors.push(at(dir, format!("cannot read the directory {}: {err}", dir.display())));
            }
            paths
        }
    };
    if paths.len() > MAX_FILES {
        errors.push(at(&paths[MAX_FILES], format!("more than {MAX_FILES} files; the rest are not read")));
    }
    let paths: Vec<PathBuf> = paths.into_iter().take(MAX_FILES).collect();
    good.retain(|path, _| paths.contains(path));
    for path in &paths {
        let text = match std::fs::metadata(path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => Err(format!("larger than {MAX_FILE_BYTES} bytes")),
            Ok(_) => std::fs::read_to_string(path).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let text = match text {
            Ok(text) => text,
            Err(err) => {
                errors.push(at(path, format!("cannot read {}: {err}{}", path.display(), kept(good, path))));
                continue;
            }
        };
        // The same text keeps its parsed tree; the certificate files it names are read again
        // every time (a rotated certificate is served without an edit of the dynamic file).
        let raw = match good.get(path).filter(|g| g.text == text) {
            Some(g) => g.raw.clone(),
            None => match Node::from_text(path, &text, DYNAMIC_NAMES) {
                Ok(tree) => tree,
                Err((origin, message)) => {
                    errors.push(Diagnostic { origin, message: format!("{message}{}", kept(good, path)) });
                    continue;
                }
            },
        };
        let mut served = raw.clone();
        match certificate_files(&mut served) {
            Ok(()) => drop(good.insert(path.clone(), Parsed { text, raw, served })),
            Err(diagnostic) => {
                errors.push(Diagnostic { message: format!("{}{}", diagnostic.message, kept(good, path)), ..diagnostic })
            }
        }
    }
    FileSet { trees: good.values().map(|g| g.served.clone()).collect(), errors }
}

/// Reads the certificate and key files a file names (`certFile = "/certs/a.pem"`) into the
/// tree, as PEM text: the store's values are PEM text already, and only a file, written by
/// whoever runs the replica, may make it read a local file.
fn certificate_files(tree: &mut Node) -> Result<(), Diagnostic> {
    let Node::Table(top, _) = tree else { return Ok(()) };
    let Some(Node::Table(tls, _)) = top.get_mut("tls") else { return Ok(()) };
    let mut pairs: Vec<&mut Node> = Vec::new();
    for (key, section) in tls.iter_mut() {
        match (key.as_str(), section) {
            ("certificates", Node::Array(items, _)) => pairs.extend(items.iter_mut()),
            ("stores", Node::Table(stores, _)) => {
                for store in stores.values_mut() {
                    if let Node::Table(store, _) = store {
                        pairs.extend(store.get_mut("defaultcertificate"));
                    }
                }
            }
            _ => {}
        }
    }
    for pair in pairs {
        let Node::Table(fields, origin) = pair else { continue };
        let at = origin.clone();
        for key in ["certfile", "keyfile"] {
            let Some(Node::Value(toml::Value::String(value), origin)) = fields.get_mut(key) else { continue };
            if value.contains("-----BEGIN") {
                continue;
            }
            match std::fs::read_to_string(&*value) {
                Ok(pem) => *value = pem,
                Err(err) => {
                    return Err(Diagnostic { origin: origin.clone(), message: format!("cannot read {value}: {err}") })
                }
            }
        }
        // A pair that cannot serve is this file's error, at its place, not a store key's.
        let text = |key: &str| match fields.get(key) {
            Some(Node::Value(toml::Value::String(v), _)) => v.clone(),
            _ => String::new(),
        };
        if let Err(err) = crate::data::tls::Loaded::from_pem(&text("certfile"), &text("keyfile")) {
            return Err(Diagnostic { origin: at, message: format!("the certificate: {err}") });
        }
    }
    Ok(())
}

fn kept(good: &Good, path: &Path) -> &'static str {
    match good.contains_key(path) {
        true => "; its last good version is kept",
        false => "",
    }
}

fn at(path: &Path, message: String) -> Diagnostic {
    Diagnostic { origin: Origin::File { path: path.display().to_string(), line: 1, column: 1 }, message }
}

/// The `.toml`, `.yml` and `.yaml` files under `dir`, sorted; hidden entries (Kubernetes'
/// `..data`) are skipped.
fn list(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| Some(e.ok()?.path())).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || out.len() > MAX_FILES {
            continue;
        }
        if path.is_dir() {
            if depth < MAX_DEPTH {
                list(&path, depth + 1, out)?;
            }
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("toml" | "yml" | "yaml")) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose directory does not exist yet cannot be watched by inotify: the provider
    /// polls, and finds the file once it is written.
    #[tokio::test]
    async fn where_inotify_cannot_watch_the_files_are_polled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("later").join("d.toml");
        let provider = FileProvider { source: FileSource::File(file.clone()), watch: true };
        let (good, set) = first(&provider.source);
        assert!(set.trees.is_empty() && set.errors.len() == 1, "a missing file is an error: {set:?}");
        let (tx, mut rx) = watch::channel(Arc::new(set));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(provider, good, tx, shutdown.clone()));
        // On this one-thread runtime the task runs up to its first wait: its watch has failed.
        tokio::task::yield_now().await;
        std::fs::create_dir(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "[http.routers.r]\nrule = \"Path(`/`)\"\nservice = \"s\"\n").unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(2), rx.changed()).await;
        assert!(seen.is_ok(), "polled within two periods");
        let set = rx.borrow().clone();
        assert_eq!((set.trees.len(), set.errors.len()), (1, 0), "{set:?}");
        shutdown.cancel();
        task.await.unwrap();
    }
}
