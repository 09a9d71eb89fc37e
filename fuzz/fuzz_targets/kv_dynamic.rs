//! Fuzzes decoding configuration from KV pairs: the input's `key=value` lines (keys under
//! `traefik/`, values as raw bytes) go through `decode_dynamic` into `dynamic::build`, and through
//! `decode_static` into `config::load`; asserts that none of it panics, whatever the keys nest
//! like or whatever the values hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pylon::control::store::{codec, keys::Keys, KeyValue};

fuzz_target!(|data: &[u8]| {
    let kvs: Vec<KeyValue> = data
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (key, value) = match line.iter().position(|&b| b == b'=') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &[][..]),
            };
            KeyValue {
                key: format!("traefik/{}", String::from_utf8_lossy(key)),
                value: value.to_vec(),
                create_revision: 1,
                mod_revision: 1,
                lease: None,
            }
        })
        .collect();
    let keys = Keys::new("traefik");
    if let Ok(node) = codec::decode_dynamic(&keys, &kvs) {
        let _ = pylon::dynamic::build(node);
    }
    if let Ok(Some(node)) = codec::decode_static(&keys, &kvs) {
        let _ = pylon::config::load(node);
    }
});
