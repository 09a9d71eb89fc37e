//! Fuzzes the ACME challenge answers: `load_alpn` on arbitrary bytes as a stored TLS-ALPN-01
//! value, and `Challenges::answer` on an arbitrary token against an embedded store (opened once,
//! an order in progress, so misses read the store); asserts that neither panics and that a
//! token only ever gets the answer stored for it.
#![no_main]

use std::{collections::HashMap, sync::Arc, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use pylon::acme::challenge::{load_alpn, Challenges};
use pylon::store::{keys::Keys, StoreSpec};
use tokio::runtime::Runtime;

struct Fixture {
    runtime: Runtime,
    challenges: Arc<Challenges>,
}

/// Answers the store holds (read on a cache miss) and answers already cached.
const STORED: &[(&str, &str)] = &[("stored-token", "stored-token.thumbprint"), ("caf\u{e9}", "caf\u{e9}.thumb")];
const CACHED: &[(&str, &str)] = &[("cached-token", "cached-token.thumbprint")];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let dir = std::env::temp_dir().join(format!("pylon-fuzz-challenge-{}", std::process::id()));
        let challenges = runtime.block_on(async {
            let store = pylon::store::open(&StoreSpec::Embedded { dir: dir.clone() }).await.expect("embedded store");
            let keys = Keys::new("traefik");
            for (token, answer) in STORED {
                store.put(&keys.acme_challenge(token), *answer).await.expect("put");
            }
            let challenges = Challenges::new(store, keys);
            challenges.replace(CACHED.iter().map(|(t, a)| (t.to_string(), a.to_string())).collect::<HashMap<_, _>>());
            challenges.set_ordering(true);
            challenges
        });
        // The store keeps its file open: the directory can go now, so no run leaves one behind.
        let _ = std::fs::remove_dir_all(&dir);
        Fixture { runtime, challenges }
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = load_alpn("k", data);
    let fixture = fixture();
    let token = String::from_utf8_lossy(data);
    let answer = fixture.runtime.block_on(fixture.challenges.answer(&token));
    let expected = STORED.iter().chain(CACHED).find(|(t, _)| *t == token).map(|(_, a)| a.to_string());
    assert_eq!(answer, expected, "token {token:?}");
});
