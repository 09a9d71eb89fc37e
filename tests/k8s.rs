//! The Kubernetes manifests in `k8s/` and the container image's `Dockerfile`, checked as far as
//! this machine can (it runs no cluster and pulls no image): every manifest parses, every Pylon
//! container's `args` is a command line Pylon accepts (`--check`, with the ConfigMap mounted
//! where the manifest mounts it), each Deployment's grace period covers its configuration's
//! lifecycle, and the binary the Dockerfile copies runs from a directory holding only that.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every workflow directory of `k8s/`, as `tests/support/manifests.py` reads it.
fn manifests() -> BTreeMap<String, Value> {
    support::require("/usr/bin/python3");
    let output = Command::new("/usr/bin/python3")
        .arg(Path::new(ROOT).join("tests/support/manifests.py"))
        .arg(Path::new(ROOT).join("k8s"))
        .output()
        .unwrap();
    assert!(output.status.success(), "the manifests parse: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn pylon_containers(flow: &Value) -> Vec<(&Value, &Value)> {
    let workloads = flow["workloads"].as_array().unwrap();
    let containers = workloads.iter().flat_map(|w| w["containers"].as_array().unwrap().iter().map(move |c| (w, c)));
    containers.filter(|(_, c)| c["image"].as_str().unwrap().starts_with("pylon:")).collect()
}

/// Writes the ConfigMaps `container` mounts under `dir` and returns its args with the mount
/// paths moved there.
fn mounted_args(flow: &Value, container: &Value, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> =
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect();
    for (mount, config_map) in container["mounts"].as_object().unwrap() {
        let Some(name) = config_map.as_str() else { continue };
        let at = dir.join(mount.trim_start_matches('/'));
        std::fs::create_dir_all(&at).unwrap();
        for (file, text) in flow["configmaps"][name].as_object().unwrap_or_else(|| panic!("ConfigMap {name}")) {
            std::fs::write(at.join(file), text.as_str().unwrap()).unwrap();
        }
        for arg in &mut args {
            *arg = arg.replace(&format!("{mount}/"), &format!("{}/", at.display()));
        }
    }
    args
}

#[test]
fn every_pylon_container_runs_a_command_line_pylon_accepts() {
    let flows = manifests();
    assert!(["consul", "etcd", "v3"].iter().all(|f| flows.contains_key(*f)), "the three workflows: {:?}", flows.keys());
    for (name, flow) in &flows {
        let containers = pylon_containers(flow);
        let kinds: Vec<&str> = containers.iter().map(|(w, _)| w["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"Job") && kinds.contains(&"Deployment"), "{name}: a storeconfig Job and replicas");
        for (workload, container) in containers {
            let file = workload["file"].as_str().unwrap();
            assert_eq!(workload["service_links"], false, "{file}: service links would be read as PYLON_* settings");
            let dir = tempfile::tempdir().unwrap();
            let args = mounted_args(flow, container, dir.path());
            let output = support::pylon().arg("--check").args(&args).current_dir(dir.path()).output().unwrap();
            let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert!(output.status.success(), "{file}: pylon --check {args:?}:\n{out}{err}");
            assert!(out.contains("ok: "), "{file}: {out}");
            // Every flag is known: none is an unknown key (the seed's own file may warn).
            assert!(!out.lines().any(|l| l.contains("flag --")), "{file}: {args:?}:\n{out}");
        }
    }
}

#[test]
fn each_deployments_grace_period_covers_its_lifecycle() {
    for (name, flow) in &manifests() {
        let (file, text) = flow["configmaps"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|data| data.as_object().unwrap().iter())
            .find(|(file, _)| file.starts_with("traefik."))
            .unwrap_or_else(|| panic!("{name}: a ConfigMap with the static configuration"));
        let tree =
            pylon::config::Node::from_text(Path::new(file), text.as_str().unwrap(), pylon::config::tree::STATIC_NAMES)
                .unwrap();
        let lifecycle = pylon::config::load(tree).unwrap().config.lifecycle;
        let needed = lifecycle.request_accept_grace + lifecycle.grace_timeout;
        for workload in flow["workloads"].as_array().unwrap().iter().filter(|w| w["kind"] == "Deployment") {
            let grace = Duration::from_secs(workload["grace"].as_u64().expect("terminationGracePeriodSeconds"));
            assert!(
                grace > needed,
                "{name}: {grace:?} does not cover requestAcceptGraceTimeout + graceTimeOut = {needed:?}"
            );
        }
    }
}

/// What the Dockerfile's runtime stage holds, from its `# runtime-files:` line.
fn runtime_files() -> Vec<PathBuf> {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let line = dockerfile.lines().find_map(|l| l.strip_prefix("# runtime-files:")).expect("a runtime-files line");
    line.split_whitespace().map(PathBuf::from).collect()
}

#[test]
fn the_images_binary_runs_from_a_directory_holding_only_what_the_dockerfile_copies() {
    let files = runtime_files();
    assert_eq!(files, [PathBuf::from("/usr/local/bin/pylon")]);
    let image = tempfile::tempdir().unwrap();
    let binary = image.path().join("usr/local/bin/pylon");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pylon"), &binary).unwrap();
    let work = image.path().join("var/lib/pylon");
    std::fs::create_dir_all(&work).unwrap();

    // No environment, no repository: the version, and a check of the v3 workflow's file.
    let flows = manifests();
    let text = flows["v3"]["configmaps"]["pylon-conf"]["traefik.yml"].as_str().unwrap().to_string();
    std::fs::write(work.join("traefik.yml"), text).unwrap();
    for args in [vec!["version"], vec!["--check", "--configfile=traefik.yml"]] {
        let output = Command::new(&binary).args(&args).env_clear().current_dir(&work).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    // The runtime stage is Debian bookworm-slim plus ca-certificates: the binary may link only
    // against what that image has.
    let ldd = Command::new("ldd").arg(&binary).output().unwrap();
    let linked = String::from_utf8_lossy(&ldd.stdout).to_string();
    for line in linked.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let library = line.split_whitespace().next().unwrap();
        let base = Path::new(library).file_name().unwrap().to_str().unwrap();
        let slim = ["linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0", "libdl.so.2"];
        assert!(slim.contains(&base) || base.starts_with("ld-linux"), "links against {library}, not in the slim image");
    }
}
