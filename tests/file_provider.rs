//! The file provider as users run it: a watched directory of dynamic files beside real etcd,
//! edited while a replica serves. Each change is served within a second; a broken file keeps
//! its last good version and is reported with file:line:column; file objects (`name@file`) and
//! etcd objects refer to each other.

mod support;

use std::{path::Path, time::Duration};

use support::{eventually, get_host, replica::Replica, upstream::Upstream, Etcd};

fn write(dir: &Path, name: &str, text: &str) {
    // Written whole, then renamed into place, as editors and ConfigMaps do.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn routes(upstream: &Upstream) -> String {
    format!(
        "[http.routers.app]\nrule = \"Host(`files.pylon.test`)\"\nservice = \"app\"\n\
         [http.services.app.loadBalancer]\nservers = [{{ url = \"{}\" }}]\n",
        upstream.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watched_directory_is_served_within_a_second_of_each_edit() {
    let etcd = Etcd::start().await;
    let (blue, green, shared) =
        (Upstream::start("blue").await, Upstream::start("green").await, Upstream::start("shared").await);
    let dir = tempfile::tempdir().unwrap();
    let dynamic = dir.path().join("dynamic");
    std::fs::create_dir(&dynamic).unwrap();
    write(&dynamic, "app.toml", &routes(&blue));
    let replica =
        Replica::start(&etcd.flags(), &format!("[file]\ndirectory = \"{}\"\nwatch = true\n", dynamic.display())).await;
    let url = replica.web("/");
    let answered = |wanted: &'static str| {
        let url = url.clone();
        move || {
            let url = url.clone();
            async move {
                let reply = get_host(&url, "files.pylon.test").await;
                reply.status == 200 && reply.body.starts_with(wanted)
            }
        }
    };
    eventually("the file's route at start", Duration::from_secs(5), answered("blue")).await;

    // Changed: the new upstream within a second.
    write(&dynamic, "app.toml", &routes(&green));
    eventually("the edited route", Duration::from_secs(1), answered("green")).await;

    // Broken: the last good version keeps serving, the error names file, line and column.
    write(&dynamic, "app.toml", "[http.routers.app]\nrule = \"Host(`files.pylon.test`)\"\nservice = = \"app\"\n");
    let file = dynamic.join("app.toml").display().to_string();
    eventually("the broken file is reported", Duration::from_secs(1), || async {
        replica.log().lines().any(|l| l.contains(&format!("{file}:3:")) && l.contains("last good version is kept"))
    })
    .await;
    assert!(answered("green")().await, "the last good version serves:\n{}", replica.log());

    // Added: a second file whose router uses an etcd service, and an etcd router using a file
    // service.
    let store = pylon::control::store::open(&etcd.spec()).await.unwrap();
    for (key, value) in [
        ("traefik/http/services/shared/loadBalancer/servers/0/url", shared.url()),
        ("traefik/http/routers/fromstore/rule", "Host(`store.pylon.test`)".to_string()),
        ("traefik/http/routers/fromstore/service", "app@file".to_string()),
    ] {
        store.put(key, value.into_bytes()).await.unwrap();
    }
    write(&dynamic, "app.toml", &routes(&green));
    write(
        &dynamic,
        "more.yml",
        "http:\n  routers:\n    more:\n      rule: Host(`more.pylon.test`)\n      service: shared@etcd\n",
    );
    eventually("a file router on an etcd service", Duration::from_secs(1), || async {
        let reply = get_host(&url, "more.pylon.test").await;
        reply.status == 200 && reply.body.starts_with("shared")
    })
    .await;
    eventually("an etcd router on a file service", Duration::from_secs(1), || async {
        let reply = get_host(&url, "store.pylon.test").await;
        reply.status == 200 && reply.body.starts_with("green")
    })
    .await;

    // Removed: its route goes.
    std::fs::remove_file(dynamic.join("more.yml")).unwrap();
    eventually("the removed file's route is gone", Duration::from_secs(1), || async {
        get_host(&url, "more.pylon.test").await.status == 404
    })
    .await;
}
