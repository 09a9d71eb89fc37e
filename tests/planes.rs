//! The boundary between the planes, checked on the source: no file of the data plane
//! (`src/data/`, what runs per request or handshake) imports the control plane (`src/control/`:
//! the store, the watcher, ACME) or the start-up. The data plane reads the control plane's
//! snapshot (`data::plane`) and nothing else of it.

use std::{collections::BTreeSet, path::Path};

/// What the data plane must not import: the control plane, the start-up around it, and the
/// observability above both (which the data plane only asks, through `proxy::internal`).
const CONTROL_PLANE: &[&str] = &["control", "app", "setup", "storeconfig", "observe"];

#[test]
fn no_data_plane_module_imports_the_store_or_the_control_plane() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("data.rs")];
    collect(&src.join("data"), &mut files);
    let mut crossings = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for module in crate_modules(&text) {
            if CONTROL_PLANE.contains(&module.as_str()) {
                crossings.push(format!("{} imports crate::{module}", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(files.len() > 40, "the data plane's files were found ({})", files.len());
    assert!(crossings.is_empty(), "the data plane reaches into the control plane:\n{}", crossings.join("\n"));
}

#[test]
fn the_checker_sees_every_form_of_import() {
    let text = "use crate::{\n    control::{store::Keys, acme},\n    data::tls::{self, X},\n};\nfn f() { crate::app::go(); }\nuse crate::setup;";
    let found = crate_modules(text);
    assert_eq!(found, ["app", "control", "data", "setup"].map(String::from).into_iter().collect());
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The top-level modules named after `crate::`, in paths and in `use crate::{...}` groups.
fn crate_modules(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(ident(rest));
            continue;
        };
        // Names at the group's top level: after its `{` and after each top-level `,`.
        let (mut depth, mut expect_name) = (1, true);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => expect_name = true,
                c if expect_name && (c.is_alphanumeric() || c == '_') => {
                    found.insert(ident(&group[i..]));
                    expect_name = false;
                }
                _ => {}
            }
        }
    }
    found.remove("");
    found
}
