//! What an entrypoint's `http` and `tls` sections say, checked key by key: the TLS settings
//! it enforces, what its routers inherit (`http.tls`), how request paths are made canonical,
//! and which `Upgrade` protocols it tunnels.

use super::{file::*, model::Domain, model::RouterTlsDefaults, Checker};
use crate::proxy::path::{PathPolicy, REFUSED};

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

/// `http.tls` on an entrypoint: its `certResolver` and `domains` apply to its routers; TLS
/// options other than the default ones would not be enforced, so they are an error.
pub(super) fn router_tls_defaults(t: &RawEntryPointTls, path: &str, c: &mut Checker) -> RouterTlsDefaults {
    if let Some(options) = t.options.as_deref().filter(|o| o.split('@').next() != Some("default")) {
        c.error(
            &format!("{path}.options"),
            format!("TLS options {options:?} are not implemented yet; set minVersion, cipherSuites and sniStrict in the entrypoint's tls section"),
        );
    }
    let mut domains = Vec::new();
    for (i, d) in t.domains.iter().enumerate() {
        match &d.main {
            Some(main) if !main.is_empty() => {
                domains.push(Domain { main: main.to_ascii_lowercase(), sans: d.sans.clone().unwrap_or_default() })
            }
            _ => c.error(&format!("{path}.domains.{i}"), "each domain needs a main name"),
        }
    }
    RouterTlsDefaults { cert_resolver: t.certresolver.clone(), domains }
}

/// `[entryPoints.<name>.tls]`'s client-certificate requirement: Traefik 1.x's `ClientCA`
/// (`files`, `optional`) or Traefik 2's `clientAuth` (`caFiles`, `clientAuthType`, which
/// defaults to `RequireAndVerifyClientCert` when CAs are given, as in Traefik). Every CA file
/// is read here; one that cannot be read or holds no certificate is an error at its entry.
fn client_auth(t: &RawTls, path: &str, c: &mut Checker) -> Option<crate::tls::client_auth::ClientAuth> {
    use crate::tls::client_auth::{ClientAuth, Mode};
    let (files, mode, at) = match (&t.clientca, &t.clientauth) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            c.error(&format!("{path}.clientauth"), "set ClientCA or clientAuth, not both");
            return None;
        }
        (Some(ca), None) => {
            let mode = if ca.optional.unwrap_or(false) { Mode::VerifyIfGiven } else { Mode::RequireAndVerify };
            (ca.files.clone().unwrap_or_default(), Some(mode), format!("{path}.clientca.files"))
        }
        (None, Some(auth)) => {
            let files = auth.cafiles.clone().unwrap_or_default();
            let mode = match auth.clientauthtype.as_deref().filter(|m| !m.is_empty()) {
                None if files.is_empty() => None,
                None => Some(Mode::RequireAndVerify),
                Some(text) => match Mode::parse(text) {
                    Ok(mode) => mode,
                    Err(err) => {
                        c.error(&format!("{path}.clientauth.clientauthtype"), err);
                        return None;
                    }
                },
            };
            (files, mode, format!("{path}.clientauth.cafiles"))
        }
    };
    let mut cas = Vec::new();
    for (i, file) in files.iter().enumerate() {
        match crate::tls::certificates_in(file) {
            Ok(certs) => cas.extend(certs),
            Err(err) => c.error(&format!("{at}.{i}"), format!("{}: {err}", crate::limits::shown(file))),
        }
    }
    let mode = mode?;
    if mode.verifies() && files.is_empty() {
        c.error(&at, "verifying client certificates needs CA files");
        return None;
    }
    if !mode.verifies() {
        c.warn(path, format!("{mode:?}: client certificates are not verified; any certificate is let in"));
    }
    Some(ClientAuth { mode, cas })
}

/// `[entryPoints.<name>.tls]`'s `minVersion`, `cipherSuites` and `sniStrict`: enforced, or an
/// error at their key; a value that cannot be honoured exactly is refused or made stricter.
pub(super) fn tls_policy(t: &RawTls, path: &str, c: &mut Checker) -> crate::tls::TlsPolicy {
    use crate::tls::policy::{self, MinVersion, Suite};
    let mut out = crate::tls::TlsPolicy { sni_strict: t.snistrict.unwrap_or(false), ..Default::default() };
    out.client_auth = client_auth(t, path, c);
    if let Some(text) = &t.minversion {
        match policy::min_version(text) {
            Ok(MinVersion::Tls13) => out.min_tls13 = true,
            Ok(MinVersion::Tls12) => {}
            Ok(MinVersion::Raised) => c.warn(
                &format!("{path}.minversion"),
                format!("{text}: Pylon never speaks TLS below 1.2, so TLS 1.2 is the minimum"),
            ),
            Err(err) => c.error(&format!("{path}.minversion"), err),
        }
    }
    if let Some(names) = &t.ciphersuites {
        let mut tls12 = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let at = format!("{path}.ciphersuites.{i}");
            match policy::cipher_suite(name.trim()) {
                Ok(Suite::Tls12(name)) => tls12.push(name),
                Ok(Suite::Tls13) => {}
                Ok(Suite::Unavailable) => {
                    c.warn(&at, format!("{name}: not offered by Pylon's TLS library, so never negotiated"))
                }
                Err(err) => c.error(&at, err),
            }
        }
        if tls12.is_empty() && !out.min_tls13 {
            c.warn(&format!("{path}.ciphersuites"), "no TLS 1.2 suite Pylon offers is listed: only TLS 1.3 is spoken");
        }
        out.tls12_suites = Some(tls12);
    }
    out
}
