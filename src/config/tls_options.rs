//! A set of TLS options, checked key by key: an entrypoint's `tls` section (Traefik 1.x and
//! 2's keys there) and each of the dynamic configuration's `tls.options.<name>` (Traefik v3's
//! `tls/options/<name>/...`) are read by the same code into a [`crate::data::tls::TlsPolicy`].

use super::{file::RawTls, Checker};

/// `[entryPoints.<name>.tls]`'s client-certificate requirement: Traefik 1.x's `ClientCA`
/// (`files`, `optional`) or Traefik 2's `clientAuth` (`caFiles`, `clientAuthType`, which
/// defaults to `RequireAndVerifyClientCert` when CAs are given, as in Traefik). Every CA file
/// is read here; one that cannot be read or holds no certificate is an error at its entry.
fn client_auth(t: &RawTls, path: &str, c: &mut Checker) -> Option<crate::data::tls::client_auth::ClientAuth> {
    use crate::data::tls::client_auth::{ClientAuth, Mode};
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
        match crate::data::tls::certificates_in(file) {
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

/// One set of TLS options at `path`: every key enforced, or an error at it; a value that
/// cannot be honoured exactly is refused or made stricter, never weaker.
pub fn tls_options(t: &RawTls, path: &str, c: &mut Checker) -> crate::data::tls::TlsPolicy {
    use crate::data::tls::policy::{self, MinVersion, Suite};
    let mut out = crate::data::tls::TlsPolicy {
        sni_strict: t.snistrict.unwrap_or(false),
        no_session_tickets: t.disablesessiontickets.unwrap_or(false),
        ..Default::default()
    };
    out.client_auth = client_auth(t, path, c);
    if let Some(text) = &t.maxversion {
        match policy::max_version(text) {
            Ok(MinVersion::Tls13) => {}
            Ok(MinVersion::Tls12) => out.max_tls12 = true,
            Ok(MinVersion::Raised) => c.error(
                &format!("{path}.maxversion"),
                format!("{text}: Pylon never speaks TLS below 1.2; use VersionTLS12 or VersionTLS13"),
            ),
            Err(err) => c.error(&format!("{path}.maxversion"), err),
        }
    }
    out.curves = t.curvepreferences.as_ref().map(|names| curves(names, &format!("{path}.curvepreferences"), c));
    if let Some(names) = &t.alpnprotocols {
        let mut alpn = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match policy::alpn_protocol(name.trim()) {
                Ok(Some(p)) if !alpn.contains(&p) => alpn.push(p),
                Ok(_) => {}
                Err(err) => c.error(&format!("{path}.alpnprotocols.{i}"), err),
            }
        }
        out.alpn = Some(alpn);
    }
    if t.preferserverciphersuites.is_some() {
        c.warn(
            &format!("{path}.preferserverciphersuites"),
            "deprecated in Traefik and without effect: the server's order is always preferred",
        );
    }
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
    if let Some(why) = out.impossible() {
        c.error(path, why);
    }
    out
}

/// `curvePreferences`: the groups rustls offers, in the order given; at least one.
fn curves(names: &[String], path: &str, c: &mut Checker) -> Vec<crate::data::tls::policy::Curve> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match crate::data::tls::policy::curve(name.trim()) {
            Ok(Some(curve)) if !out.contains(&curve) => out.push(curve),
            Ok(Some(_)) => {}
            Ok(None) => c.warn(
                &format!("{path}.{i}"),
                format!("{name}: not offered by Pylon's TLS library, so never negotiated"),
            ),
            Err(err) => c.error(&format!("{path}.{i}"), err),
        }
    }
    if out.is_empty() {
        c.error(path, "no curve Pylon offers is listed (X25519, CurveP256, CurveP384): no handshake could succeed");
    }
    out
}
