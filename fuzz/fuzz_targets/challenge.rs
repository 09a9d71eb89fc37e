//! Fuzzes the ACME challenge answers: `load_alpn` on arbitrary bytes as a stored TLS-ALPN-01
//! value, and the data plane's `Answers` on an arbitrary token and name; asserts that nothing
//! panics and that a token only ever gets the answer published for it.
#![no_main]

use std::{collections::HashMap, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use pylon::{control::acme::challenge::load_alpn, data::plane::Answers};

/// Answers published for pending orders.
const PUBLISHED: &[(&str, &str)] = &[("stored-token", "stored-token.thumbprint"), ("caf\u{e9}", "caf\u{e9}.thumb")];

fn answers() -> &'static Answers {
    static ANSWERS: OnceLock<Answers> = OnceLock::new();
    ANSWERS.get_or_init(|| {
        let tokens = PUBLISHED.iter().map(|(t, a)| (t.to_string(), a.to_string())).collect::<HashMap<_, _>>();
        Answers::new(tokens, HashMap::new())
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = load_alpn("k", data);
    let token = String::from_utf8_lossy(data);
    let expected = PUBLISHED.iter().find(|(t, _)| *t == token).map(|(_, a)| *a);
    assert_eq!(answers().token(&token), expected, "token {token:?}");
    assert!(answers().alpn(&token).is_none(), "no TLS-ALPN-01 answer was published");
});
