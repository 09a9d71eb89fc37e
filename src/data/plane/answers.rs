//! The ACME challenge answers every replica serves, as the control plane last published them
//! from `<prefix>/acme/challenges/` and `<prefix>/acme/alpn/`: a token or name that no pending
//! order of the cluster has is refused from memory, with no store read, whatever the rate.
//! - HTTP-01: `GET /.well-known/acme-challenge/<token>` answers the key authorization;
//! - TLS-ALPN-01: a handshake offering only `acme-tls/1` gets the challenge certificate for its
//!   SNI (RFC 8737).

use std::{collections::HashMap, sync::Arc};

use rustls::sign::CertifiedKey;

/// The path under which HTTP-01 tokens are asked for.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
pub struct Answers {
    /// Token → key authorization.
    tokens: HashMap<String, String>,
    /// Name → TLS-ALPN-01 challenge certificate.
    alpn: HashMap<String, Arc<CertifiedKey>>,
}

impl Answers {
    pub fn new(tokens: HashMap<String, String>, alpn: HashMap<String, Arc<CertifiedKey>>) -> Answers {
        Answers { tokens, alpn }
    }

    /// The key authorization for `token`, if a pending order has it.
    pub fn token(&self, token: &str) -> Option<&str> {
        self.tokens.get(token).map(String::as_str)
    }

    /// The TLS-ALPN-01 certificate for `name` (lowercase, no trailing dot), if a pending order
    /// has it.
    pub fn alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn.get(name).cloned()
    }
}
