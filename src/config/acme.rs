//! The `[acme]` section: its validated model ([`Acme`], the onDemand policy) and the checks that
//! build it from [`super::file::RawAcme`], each error and warning naming its key.

use std::collections::BTreeMap;

use super::{
    dialect::Dialect,
    file::{RawAcme, RawConfig, RawOnDemandPolicy},
    model::EntryPoint,
    Checker,
};

#[derive(Clone, Debug, PartialEq)]
pub struct Acme {
    /// The resolver's name: routers pick it with `tls.certResolver`.
    pub name: String,
    /// Traefik 1.x's one `[acme]`: every router that names any resolver (or, with onHostRule,
    /// every TLS router) gets its certificates here.
    pub any_resolver: bool,
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

/// Every certificate resolver: v1.7's `[acme]` or v3's `certificatesResolvers`. At most one
/// orders at the handshake (`onDemand`), and all share the storage keys (they seal one store).
pub(super) fn resolvers(raw: &RawConfig, c: &mut Checker, entry_points: &BTreeMap<String, EntryPoint>) -> Vec<Acme> {
    let mut out = Vec::new();
    if let Some(a) = &raw.acme {
        out.push(acme(a, &Section { base: "acme", name: "acme", dialect: Dialect::V1 }, c, entry_points));
    }
    for (name, resolver) in &raw.certificatesresolvers {
        let base = format!("certificatesresolvers.{name}.acme");
        match &resolver.acme {
            // A v3 section, whatever the rest of the configuration speaks.
            Some(a) => out.push(acme(a, &Section { base: &base, name, dialect: Dialect::V3 }, c, entry_points)),
            None => c.error(
                &format!("certificatesresolvers.{name}"),
                format!("certificate resolver {name:?} has no acme section (Pylon's resolvers are ACME resolvers)"),
            ),
        }
    }
    let on_demand: Vec<&Acme> = out.iter().filter(|a| a.on_demand).collect();
    if let [_, second, ..] = on_demand.as_slice() {
        c.error(
            &format!("certificatesresolvers.{}.acme.ondemand", second.name),
            "only one certificate resolver may order certificates at the handshake (onDemand)",
        );
    }
    if let Some(first) = out.first() {
        if let Some(other) = out.iter().find(|a| a.storage_encryption_key != first.storage_encryption_key) {
            c.error(
                &format!("certificatesresolvers.{}.acme.storageencryptionkey", other.name),
                format!(
                    "resolvers {:?} and {:?} have different storageEncryptionKey: they seal one store, give them the same",
                    first.name, other.name
                ),
            );
        }
    }
    out
}

/// Where a resolver was written and which dialect wrote it.
pub(super) struct Section<'a> {
    /// `acme` (v1.7) or `certificatesresolvers.<name>.acme` (v3): the key path of its settings.
    pub base: &'a str,
    /// The resolver's name (`acme` for v1.7's one section).
    pub name: &'a str,
    pub dialect: Dialect,
}

pub(super) fn acme(a: &RawAcme, at: &Section, c: &mut Checker, entry_points: &BTreeMap<String, EntryPoint>) -> Acme {
    let base = at.base;
    let v1 = at.dialect == Dialect::V1;
    let known = || entry_points.keys().cloned().collect::<Vec<_>>().join(", ");
    let entry_point = a.entrypoint.clone().unwrap_or_default();
    if !v1 && a.entrypoint.is_some() {
        c.warn(
            &format!("{base}.entrypoint"),
            "acme.entryPoint is Traefik 1.x's; a v3 resolver serves the routers that name it in tls.certResolver; ignored",
        );
    } else if v1 && entry_point.is_empty() {
        c.error(base, "[acme] needs entryPoint, the TLS entrypoint its certificates are for");
    } else if v1 && !entry_points.contains_key(&entry_point) {
        c.error(
            &format!("{base}.entrypoint"),
            format!("acme.entryPoint {entry_point:?} does not exist (entrypoints: {})", known()),
        );
    }
    let http_challenge = a.httpchallenge.as_ref().map(|h| h.entrypoint.clone().unwrap_or_default());
    if let Some(ep) = &http_challenge {
        if !entry_points.contains_key(ep) {
            c.error(
                &format!("{base}.httpchallenge.entrypoint"),
                format!("httpChallenge.entryPoint {ep:?} does not exist (entrypoints: {})", known()),
            );
        }
    }
    if a.dnschallenge.is_some() {
        let message = "the DNS-01 challenge is not supported; use httpChallenge or tlsChallenge";
        match v1 {
            true => c.warn(&format!("{base}.dnschallenge"), message),
            // A v3 resolver with only DNS-01 could order nothing: refused rather than idle.
            false if http_challenge.is_none() && a.tlschallenge.is_none() => {
                c.error(&format!("{base}.dnschallenge"), message)
            }
            false => c.warn(&format!("{base}.dnschallenge"), message),
        }
    }
    // Traefik 1.x used TLS-SNI-01 when no challenge was named; its successor is TLS-ALPN-01.
    let tls_challenge = a.tlschallenge.is_some() || http_challenge.is_none();
    if http_challenge.is_some() && a.tlschallenge.is_some() {
        c.warn(
            &format!("{base}.tlschallenge"),
            "both httpChallenge and tlsChallenge: orders use HTTP-01 (as Traefik does); TLS-ALPN-01 is still answered",
        );
    }
    if http_challenge.is_none() && a.tlschallenge.is_none() && a.dnschallenge.is_none() {
        match v1 {
            true => c.warn(
                base,
                "[acme] names no challenge: using TLS-ALPN-01 on acme.entryPoint (Traefik 1.x's TLS-SNI-01 is retired); \
                 add [acme.httpChallenge] entryPoint for HTTP-01",
            ),
            false => c.error(base, "a certificate resolver needs httpChallenge.entryPoint or tlsChallenge"),
        }
    }
    if let Some(hours) = a.certificatesduration {
        if hours == 0 {
            c.error(&format!("{base}.certificatesduration"), "certificatesDuration must be more than 0 hours");
        } else if hours != 2160 {
            c.warn(
                &format!("{base}.certificatesduration"),
                "not needed: Pylon reads each certificate's lifetime from the certificate and renews at two thirds of \
                 it (or when the CA's renewal info says); ignored",
            );
        }
    }
    if a.preferredchain.is_some() {
        c.warn(
            &format!("{base}.preferredchain"),
            "not supported yet: certificates are stored with the CA's default chain; ignored",
        );
    }
    let ca_server = a.caserver.clone().unwrap_or_else(|| LETS_ENCRYPT.to_string());
    if !(ca_server.starts_with("https://") || ca_server.starts_with("http://"))
        || ca_server.parse::<http::Uri>().is_err()
    {
        c.error(&format!("{base}.caserver"), format!("acme.caServer {ca_server:?} is not an http(s) URL"));
    }
    let mut key_type = a.keytype.clone().unwrap_or_else(|| "EC256".to_string());
    if !KEY_TYPES.contains(&key_type.as_str()) {
        c.error(
            &format!("{base}.keytype"),
            format!("acme.keyType {key_type:?} is not one of {}", KEY_TYPES.join(", ")),
        );
    } else if key_type.starts_with("RSA") {
        c.warn(&format!("{base}.keytype"),
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
            _ => c.error(&format!("{base}.domains.{i}"), "each [[acme.domains]] needs a main domain"),
        }
    }
    let eab = a.eab.as_ref().and_then(|e| {
        use base64::Engine;
        let (Some(kid), Some(hmac)) = (&e.kid, &e.hmacencoded) else {
            c.error(&format!("{base}.eab"), "[acme.eab] needs both kid and hmacEncoded");
            return None;
        };
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(hmac.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(hmac));
        match decoded {
            Ok(bytes) => Some((kid.clone(), bytes)),
            Err(_) => {
                c.error(&format!("{base}.eab.hmacencoded"), "hmacEncoded is not base64");
                None
            }
        }
    });
    let failure_backoff = a.failurebackoff.unwrap_or(std::time::Duration::from_secs(120));
    if failure_backoff < std::time::Duration::from_secs(1) {
        c.error(&format!("{base}.failurebackoff"), "acme.failureBackoff must be at least 1s");
    }
    let on_demand_policy = on_demand_policy(a.ondemandpolicy.as_ref().unwrap_or(&Default::default()), base, c);
    if a.ondemand == Some(true) && on_demand_policy.allow.is_empty() && on_demand_policy.ask.is_none() {
        c.warn(
            &format!("{base}.ondemand"),
            "acme.onDemand is on but [acme.onDemandPolicy] has neither allow nor ask: no name will be ordered at \
             the handshake (anyone could make this cluster order certificates otherwise)",
        );
    }
    let lease_ttl = a.leasettl.unwrap_or(std::time::Duration::from_secs(30));
    if lease_ttl < std::time::Duration::from_secs(2) {
        c.error(&format!("{base}.leasettl"), "acme.leaseTTL must be at least 2s");
    }
    Acme {
        name: at.name.to_string(),
        any_resolver: v1,
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

fn on_demand_policy(p: &RawOnDemandPolicy, base: &str, c: &mut Checker) -> OnDemandPolicy {
    let allow: Vec<String> =
        p.allow.clone().unwrap_or_default().iter().map(|a| a.trim().to_ascii_lowercase()).collect();
    for (i, pattern) in allow.iter().enumerate() {
        let name = pattern.strip_prefix("*.").unwrap_or(pattern);
        if name.is_empty() || name.contains('*') || !name.contains('.') {
            c.error(
                &format!("{base}.ondemandpolicy.allow.{i}"),
                format!("{pattern:?} is not a name or *.parent pattern"),
            );
        }
    }
    if let Some(ask) = &p.ask {
        if !ask.starts_with("http://") && !ask.starts_with("https://") || ask.parse::<http::Uri>().is_err() {
            c.error(
                &format!("{base}.ondemandpolicy.ask"),
                format!("acme.onDemandPolicy.ask {ask:?} is not an http(s) URL"),
            );
        }
    }
    OnDemandPolicy {
        allow,
        ask: p.ask.clone(),
        rate_per_minute: p.rateperminute.map_or(10, |r| r.min(u64::from(u32::MAX)) as u32),
        timeout: p.timeout.unwrap_or(std::time::Duration::from_secs(10)),
    }
}
