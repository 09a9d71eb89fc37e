//! What an entrypoint's `http` section says, checked key by key: what its routers inherit
//! (`http.tls`), how request paths are made canonical, which `Upgrade` protocols it tunnels;
//! and whom it trusts (`forwardedHeaders`, `proxyProtocol`). Its `tls` section's settings are
//! read as TLS options (`tls_options.rs`).

use super::{
    file::*,
    model::{Domain, ForwardedTrust, RouterTlsDefaults},
    Checker,
};
use crate::data::proxy::path::{PathPolicy, REFUSED};

/// Without `http.allowedUpgrades`: WebSocket only.
pub(super) fn default_upgrades() -> Vec<String> {
    vec!["websocket".to_string()]
}

/// `http.allowedUpgrades`: protocol tokens (RFC 9110 §7.8), lowercased; `h2c` is allowed only
/// by name, since it lets a client speak HTTP/2 to an upstream past routing.
pub(super) fn allowed_upgrades(list: &[String], path: &str, c: &mut Checker) -> Vec<String> {
    let mut out = Vec::new();
    for (i, token) in list.iter().enumerate() {
        let token = token.trim().to_ascii_lowercase();
        let valid =
            !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
        if valid {
            out.push(token);
        } else {
            c.error(&format!("{path}.{i}"), format!("{token:?} is not an Upgrade protocol token"));
        }
    }
    out
}

/// `http.sanitizePath` and `http.encodedCharacters`: how request paths are made canonical.
pub(super) fn path_policy(http: Option<&RawEntryPointHttp>) -> PathPolicy {
    let mut policy = PathPolicy { sanitize: http.and_then(|h| h.sanitizepath).unwrap_or(true), allowed: 0 };
    if let Some(encoded) = http.and_then(|h| h.encodedcharacters.as_ref()) {
        for (allow, refused) in encoded.options().into_iter().zip(REFUSED) {
            if allow == Some(true) {
                policy.allowed |= refused.bit;
            }
        }
    }
    policy
}

/// `http.tls` on an entrypoint: its `certResolver`, `options` and `domains` apply to its
/// routers that name none of their own.
pub(super) fn router_tls_defaults(t: &RawEntryPointTls, path: &str, c: &mut Checker) -> RouterTlsDefaults {
    let options = t.options.as_deref().map(|o| o.split('@').next().unwrap_or(o).to_string());
    let options = options.filter(|o| !o.is_empty() && o != crate::data::tls::handshakes::DEFAULT);
    let mut domains = Vec::new();
    for (i, d) in t.domains.iter().enumerate() {
        match &d.main {
            Some(main) if !main.is_empty() => {
                domains.push(Domain { main: main.to_ascii_lowercase(), sans: d.sans.clone().unwrap_or_default() })
            }
            _ => c.error(&format!("{path}.domains.{i}"), "each domain needs a main name"),
        }
    }
    RouterTlsDefaults { cert_resolver: t.certresolver.clone(), options, domains }
}

/// `trustedIPs` and `insecure` (of `forwardedHeaders` or `proxyProtocol`) at `path`.
pub(super) fn trust(raw: &RawTrustedIps, path: &str, c: &mut Checker) -> ForwardedTrust {
    let mut out = ForwardedTrust { insecure: raw.insecure.unwrap_or(false), trusted: Vec::new() };
    for (i, text) in raw.trustedips.iter().flatten().enumerate() {
        match crate::data::routing::rule::Cidr::parse(text.trim()) {
            Some(cidr) => out.trusted.push(cidr),
            None => c.error(&format!("{path}.trustedips.{i}"), format!("{text:?} is not an IP address or CIDR range")),
        }
    }
    out
}
