//! The bounds on untrusted input: how deep a configuration source or a rule may nest, how long a
//! rule may be, how large a rule's regular expression may compile, and how much of a rejected
//! value a log line shows. Each sits far above what a real configuration reaches
//! (`docs/configuration.md` lists them); input beyond one is rejected with its place, so that
//! no value read from a file or the store can exhaust a replica's stack, time or log.

/// Nesting of tables and lists in a configuration source: a file's tables, a KV key's `/`
/// segments below the prefix, a flag's dotted segments. Traefik's deepest real key,
/// `http/services/<s>/loadBalancer/healthCheck/headers/<h>`, has 7.
pub const MAX_TREE_DEPTH: usize = 32;

/// Nesting of parentheses and `!` in a routing rule.
pub const MAX_RULE_DEPTH: usize = 64;

/// A routing rule's length, in bytes: room for a `Host(...)` list of a thousand names.
pub const MAX_RULE_LEN: usize = 64 * 1024;

/// The compiled size of one regular expression in a rule (the `regex` crate's `size_limit`).
pub const MAX_REGEX_SIZE: usize = 2 * 1024 * 1024;

/// How many characters of a rejected value a diagnostic quotes.
pub const SHOWN_VALUE: usize = 64;

/// How many characters of a KV key a diagnostic shows.
pub const SHOWN_KEY: usize = 256;

/// The first `n` characters of `text`, and whether that is all of it.
pub fn prefix(text: &str, n: usize) -> (&str, bool) {
    match text.char_indices().nth(n) {
        None => (text, true),
        Some((cut, _)) => (&text[..cut], false),
    }
}

/// `value` as a diagnostic quotes it: in full when short, else its first characters and its
/// length, so that a rejected 1 MiB value costs a log line, not a megabyte.
pub fn shown(value: &str) -> String {
    match prefix(value, SHOWN_VALUE) {
        (all, true) => format!("{all:?}"),
        (start, false) => format!("{start:?}... ({} bytes)", value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_with_their_length() {
        assert_eq!(shown("Host(`a`)"), "\"Host(`a`)\"");
        let long = "é".repeat(1000);
        let s = shown(&long);
        assert!(s.starts_with(&format!("\"{}\"", "é".repeat(SHOWN_VALUE))), "{s}");
        assert!(s.ends_with("... (2000 bytes)"), "{s}");
    }
}
