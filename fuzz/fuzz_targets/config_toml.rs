//! Fuzzes TOML configuration files: the text is parsed as a static configuration
//! (`Node::from_toml` then `config::load`) and as a dynamic one (`dynamic::build`); asserts that
//! neither panics nor overflows the stack, however the document nests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pylon::config::{tree::STATIC_NAMES, Node};
use pylon::dynamic::DYNAMIC_NAMES;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(node) = Node::from_toml("f.toml", &text, STATIC_NAMES) {
        let _ = pylon::config::load(node);
    }
    if let Ok(node) = Node::from_toml("f.toml", &text, DYNAMIC_NAMES) {
        let _ = pylon::dynamic::build(node);
    }
});
