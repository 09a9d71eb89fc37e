//! The `[acme]` section: its validated model ([`Acme`], the onDemand policy) and the checks that
//! build it from [`super::file::RawAcme`], each error and warning naming its key.

use std::collections::BTreeMap;

use super::{
    file::{RawAcme, RawOnDemandPolicy},
    model::EntryPoint,
    Checker,
};

#[derive(Clone, Debug, PartialEq)]
pub struct Acme {
    pub email: String,
    pub storage: String,
    pub entry_point: String,
    pub on_demand: bool,
    pub on_host_rule: bool,
    pub ca_server: String,
    pub key_type: String,
    pub http_challenge: Option<String>,
    pub tls_challenge: bool,
    pub domains: Vec<Domain>,
    /// PEM files (or PEM text) trusted for the ACME server besides the system's roots.
    pub ca_certificates: Vec<String>,
    /// `id:BASE64[,id:BASE64]`: seals private keys at rest (also `PYLON_STORAGE_KEY`).
    pub storage_encryption_key: Option<String>,
    /// TTL of the leases behind the per-certificate locks and the challenge tokens.
    pub lease_ttl: std::time::Duration,
    /// External account binding: key id and the HMAC key's bytes.
    pub eab: Option<(String, Vec<u8>)>,
    /// The first delay after a failed order; doubled per further failure.
    pub failure_backoff: std::time::Duration,
    pub on_demand_policy: OnDemandPolicy,
}

/// Which names `onDemand` may order at the TLS handshake. With neither `allow` nor `ask`, none.
#[derive(Clone, Debug, PartialEq)]
pub struct OnDemandPolicy {
    /// `name` or `*.parent` (any name under `parent`).
    pub allow: Vec<String>,
    /// A URL asked `?domain=<name>`; only a 200 allows the name.
    pub ask: Option<String>,
    /// New names this replica orders per minute at most.
    pub rate_per_minute: u32,
    /// How long a handshake waits for its certificate before it gets the default one.
    pub timeout: std::time::Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Domain {
    pub main: String,
    pub sans: Vec<String>,
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const KEY_TYPES: &[&str] = &["EC256", "EC384", "RSA2048", "RSA4096", "RSA8192"];

pub(super) fn acme(a: &RawAcme, c: &mut Checker, entry_points: &BTreeMap<String, EntryPoint>) -> Acme {
    let known = || entry_points.keys().cloned().collect::<Vec<_>>().join(", ");
    let entry_point = a.entrypoint.clone().unwrap_or_default();
    if entry_point.is_empty() {
        c.error("acme", "[acme] needs entryPoint, the TLS entrypoint its certificates are for");
    } else if !entry_points.contains_key(&entry_point) {
        c.error(
            "acme.entrypoint",
            format!("acme.entryPoint {entry_point:?} does not exist (entrypoints: {})", known()),
        );
    }
    let http_challenge = a.httpchallenge.as_ref().map(|h| h.entrypoint.clone().unwrap_or_default());
    if let Some(ep) = &http_challenge {
        if !entry_points.contains_key(ep) {
            c.error(
                "acme.httpchallenge.entrypoint",
                format!("acme.httpChallenge.entryPoint {ep:?} does not exist (entrypoints: {})", known()),
            );
        }
    }
    if a.dnschallenge.is_some() {
        c.warn("acme.dnschallenge", "the DNS-01 challenge is not supported; use httpChallenge or tlsChallenge");
    }
    // Traefik 1.x used TLS-SNI-01 when no challenge was named; its successor is TLS-ALPN-01.
    let tls_challenge = a.tlschallenge.is_some() || http_challenge.is_none();
    if http_challenge.is_none() && a.tlschallenge.is_none() {
        c.warn(
            "acme",
            "[acme] names no challenge: using TLS-ALPN-01 on acme.entryPoint (Traefik 1.x's TLS-SNI-01 is retired); \
             add [acme.httpChallenge] entryPoint for HTTP-01",
        );
    }
    let ca_server = a.caserver.clone().unwrap_or_else(|| LETS_ENCRYPT.to_string());
    if !(ca_server.starts_with("https://") || ca_server.starts_with("http://"))
        || ca_server.parse::<http::Uri>().is_err()
    {
        c.error("acme.caserver", format!("acme.caServer {ca_server:?} is not an http(s) URL"));
    }
    let mut key_type = a.keytype.clone().unwrap_or_else(|| "EC256".to_string());
    if !KEY_TYPES.contains(&key_type.as_str()) {
        c.error("acme.keytype", format!("acme.keyType {key_type:?} is not one of {}", KEY_TYPES.join(", ")));
    } else if key_type.starts_with("RSA") {
        c.warn(
            "acme.keytype",
            format!("acme.keyType {key_type}: Pylon does not generate RSA keys; certificates get EC256 (ECDSA P-256) keys, which every current client accepts"),
        );
        key_type = "EC256".into();
    }
    let mut domains = Vec::new();
    for (i, d) in a.domains.iter().enumerate() {
        match d.main.as_deref().map(str::trim) {
            Some(main) if !main.is_empty() => {
                domains.push(Domain { main: main.to_ascii_lowercase(), sans: d.sans.clone().unwrap_or_default() })
            }
            _ => c.error(&format!("acme.domains.{i}"), "each [[acme.domains]] needs a main domain"),
        }
    }
    let eab = a.eab.as_ref().and_then(|e| {
        use base64::Engine;
        let (Some(kid), Some(hmac)) = (&e.kid, &e.hmacencoded) else {
            c.error("acme.eab", "[acme.eab] needs both kid and hmacEncoded");
            return None;
        };
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(hmac.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(hmac));
        match decoded {
            Ok(bytes) => Some((kid.clone(), bytes)),
            Err(_) => {
                c.error("acme.eab.hmacencoded", "hmacEncoded is not base64");
                None
            }
        }
    });
    let failure_backoff = a.failurebackoff.unwrap_or(std::time::Duration::from_secs(120));
    if failure_backoff < std::time::Duration::from_secs(1) {
        c.error("acme.failurebackoff", "acme.failureBackoff must be at least 1s");
    }
    let on_demand_policy = on_demand_policy(a.ondemandpolicy.as_ref().unwrap_or(&Default::default()), c);
    if a.ondemand == Some(true) && on_demand_policy.allow.is_empty() && on_demand_policy.ask.is_none() {
        c.warn(
            "acme.ondemand",
            "acme.onDemand is on but [acme.onDemandPolicy] has neither allow nor ask: no name will be ordered at \
             the handshake (anyone could make this cluster order certificates otherwise)",
        );
    }
    let lease_ttl = a.leasettl.unwrap_or(std::time::Duration::from_secs(30));
    if lease_ttl < std::time::Duration::from_secs(2) {
        c.error("acme.leasettl", "acme.leaseTTL must be at least 2s");
    }
    Acme {
        ca_certificates: a.cacertificates.clone().unwrap_or_default(),
        storage_encryption_key: a.storageencryptionkey.clone(),
        lease_ttl,
        eab,
        failure_backoff,
        on_demand_policy,
        email: a.email.clone().unwrap_or_default(),
        storage: a.storage.clone().unwrap_or_else(|| "acme.json".into()),
        entry_point,
        on_demand: a.ondemand.unwrap_or(false),
        on_host_rule: a.onhostrule.unwrap_or(false),
        ca_server,
        key_type,
        http_challenge,
        tls_challenge,
        domains,
    }
}

fn on_demand_policy(p: &RawOnDemandPolicy, c: &mut Checker) -> OnDemandPolicy {
    let allow: Vec<String> =
        p.allow.clone().unwrap_or_default().iter().map(|a| a.trim().to_ascii_lowercase()).collect();
    for (i, pattern) in allow.iter().enumerate() {
        let name = pattern.strip_prefix("*.").unwrap_or(pattern);
        if name.is_empty() || name.contains('*') || !name.contains('.') {
            c.error(
                &format!("acme.ondemandpolicy.allow.{i}"),
                format!("{pattern:?} is not a name or *.parent pattern"),
            );
        }
    }
    if let Some(ask) = &p.ask {
        if !ask.starts_with("http://") && !ask.starts_with("https://") || ask.parse::<http::Uri>().is_err() {
            c.error("acme.ondemandpolicy.ask", format!("acme.onDemandPolicy.ask {ask:?} is not an http(s) URL"));
        }
    }
    OnDemandPolicy {
        allow,
        ask: p.ask.clone(),
        rate_per_minute: p.rateperminute.map_or(10, |r| r.min(u64::from(u32::MAX)) as u32),
        timeout: p.timeout.unwrap_or(std::time::Duration::from_secs(10)),
    }
}
