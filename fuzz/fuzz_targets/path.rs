//! Fuzzes request-path canonicalization (`proxy::path::normalize`) under three policies (the
//! default, no sanitizing, every refused encoding allowed); asserts that a canonical path is a
//! fixed point (normalizing it again changes nothing), that a sanitized absolute path starts with
//! `/` and has no `.`, `..` or empty segment, and that it never holds an encoding the policy
//! refuses (`%2F %5C %00 %3B %25 %3F %23`, any case).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pylon::data::proxy::path::{normalize, PathPolicy, REFUSED};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let policies = [
        PathPolicy::default(),
        PathPolicy { sanitize: false, allowed: 0 },
        PathPolicy { sanitize: true, allowed: 0x7f },
    ];
    for policy in &policies {
        let Ok(out) = normalize(&text, policy) else { continue };
        match normalize(&out, policy) {
            Ok(again) => assert_eq!(again, out, "not idempotent under {policy:?}: {text:?} gives {out:?}"),
            Err(e) => panic!("under {policy:?}, {text:?} gives {out:?}, which is then refused: {e}"),
        }
        if policy.sanitize && text.starts_with('/') {
            assert!(out.starts_with('/'), "under {policy:?}, {text:?} gives {out:?}, not absolute");
            assert!(!out.contains("//"), "under {policy:?}, {text:?} gives {out:?}, with an empty segment");
            assert!(
                !out.split('/').any(|s| s == "." || s == ".."),
                "under {policy:?}, {text:?} gives {out:?}, with a dot segment"
            );
        }
        let upper = out.to_ascii_uppercase();
        for e in REFUSED.iter().filter(|e| policy.allowed & e.bit == 0) {
            let encoded = format!("%{:02X}", e.byte);
            assert!(!upper.contains(&encoded), "under {policy:?}, {text:?} gives {out:?}, holding {encoded}");
        }
    }
});
