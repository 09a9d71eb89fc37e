//! `passTLSClientCert`: the certificate chain a client presented on an entrypoint that asks
//! for one (`ClientCA`, `clientAuth`), passed to the upstream in headers, as Traefik does:
//! `pem` puts each certificate's DER in base64 in `X-Forwarded-Tls-Client-Cert`, comma-joined,
//! leaf first; `info` puts the selected fields in `X-Forwarded-Tls-Client-Cert-Info`,
//! URL-query-escaped. Without a client certificate nothing is set; a client's own headers of
//! those names never get this far unless it is a trusted proxy (they are removed on entry).

use base64::Engine;
use http::{HeaderName, HeaderValue, Request};
use serde::Deserialize;

use crate::{
    config::Checker,
    data::tls::ClientCertificates,
    der::{self, Attr},
};

const CERT: HeaderName = HeaderName::from_static("x-forwarded-tls-client-cert");
const INFO: HeaderName = HeaderName::from_static("x-forwarded-tls-client-cert-info");

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    pem: Option<bool>,
    info: Option<RawInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct RawInfo {
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    notafter: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    notbefore: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    sans: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    serialnumber: Option<bool>,
    subject: Option<RawName>,
    issuer: Option<RawName>,
}

#[derive(Debug, Default, Deserialize)]
struct RawName {
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    country: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    province: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    locality: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    organization: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    organizationalunit: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    commonname: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    serialnumber: Option<bool>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    domaincomponent: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub pem: bool,
    pub info: Option<Info>,
}

/// The fields of `info`, each shown when true.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Info {
    pub not_after: bool,
    pub not_before: bool,
    pub sans: bool,
    pub serial_number: bool,
    /// The subject's and the issuer's attributes shown, in Traefik's order.
    pub subject: Vec<Attr>,
    pub issuer: Vec<Attr>,
}

/// The order Traefik writes a name's attributes in (domain components first).
const ORDER: [Attr; 8] = [
    Attr::DomainComponent,
    Attr::Country,
    Attr::Province,
    Attr::Locality,
    Attr::Organization,
    Attr::OrganizationalUnit,
    Attr::SerialNumber,
    Attr::CommonName,
];

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let on = |b: Option<bool>| b.unwrap_or(false);
    let name = |n: Option<RawName>, ou: bool| -> Vec<Attr> {
        let Some(n) = n else { return Vec::new() };
        let chosen = [
            n.domaincomponent,
            n.country,
            n.province,
            n.locality,
            n.organization,
            n.organizationalunit.filter(|_| ou),
            n.serialnumber,
            n.commonname,
        ];
        ORDER.iter().zip(chosen).filter(|(_, on)| on.unwrap_or(false)).map(|(a, _)| *a).collect()
    };
    if raw.info.as_ref().and_then(|i| i.issuer.as_ref()).is_some_and(|i| i.organizationalunit.is_some()) {
        c.warn(
            &format!("{path}.info.issuer.organizationalunit"),
            "Traefik shows no issuer organizationalUnit; ignored",
        );
    }
    let info = raw.info.map(|i| Info {
        not_after: on(i.notafter),
        not_before: on(i.notbefore),
        sans: on(i.sans),
        serial_number: on(i.serialnumber),
        subject: name(i.subject, true),
        issuer: name(i.issuer, false),
    });
    Some(Spec { pem: on(raw.pem), info })
}

pub struct PassTlsClientCert {
    spec: Spec,
}

impl PassTlsClientCert {
    pub fn new(spec: &Spec) -> PassTlsClientCert {
        PassTlsClientCert { spec: spec.clone() }
    }

    pub fn request<B>(&self, mut req: Request<B>) -> super::Passed<B> {
        let Some(chain) = req.extensions().get::<ClientCertificates>().map(|c| c.0.clone()) else { return Ok(req) };
        if self.spec.pem {
            let b64 = base64::engine::general_purpose::STANDARD;
            let pem: Vec<String> = chain.iter().map(|cert| b64.encode(cert.as_ref())).collect();
            if let Ok(value) = HeaderValue::from_str(&pem.join(",")) {
                req.headers_mut().insert(CERT, value);
            }
        }
        if let Some(info) = &self.spec.info {
            let shown: Vec<String> = chain.iter().map(|cert| describe(info, cert.as_ref())).collect();
            if let Ok(value) = HeaderValue::from_str(&query_escape(&shown.join(","))) {
                req.headers_mut().insert(INFO, value);
            }
        }
        Ok(req)
    }
}

/// One certificate's selected fields, `;`-joined in Traefik's order.
fn describe(info: &Info, cert: &[u8]) -> String {
    let Some(d) = der::details(cert) else { return String::new() };
    let mut fields = Vec::new();
    let name = |attrs: &[(Attr, String)], wanted: &[Attr]| {
        let mut parts = Vec::new();
        for attr in wanted {
            let mut values = attrs.iter().filter(|(a, v)| a == attr && !v.is_empty()).map(|(_, v)| v);
            // Go keeps one serialNumber and one commonName per name: the last.
            let values: Vec<&String> = match attr {
                Attr::SerialNumber | Attr::CommonName => values.next_back().into_iter().collect(),
                _ => values.collect(),
            };
            parts.extend(values.into_iter().map(|v| format!("{}={v}", short(*attr))));
        }
        parts.join(",")
    };
    for (key, attrs, wanted) in [("Subject", &d.subject, &info.subject), ("Issuer", &d.issuer, &info.issuer)] {
        let text = name(attrs, wanted);
        if !text.is_empty() {
            fields.push(format!("{key}=\"{text}\""));
        }
    }
    if info.serial_number && !d.serial.is_empty() {
        fields.push(format!("SerialNumber=\"{}\"", d.serial));
    }
    if info.not_before {
        fields.push(format!("NB=\"{}\"", d.not_before.max(0)));
    }
    if info.not_after {
        fields.push(format!("NA=\"{}\"", d.not_after.max(0)));
    }
    if info.sans && !d.sans.is_empty() {
        fields.push(format!("SAN=\"{}\"", d.sans.join(",")));
    }
    fields.join(";")
}

fn short(attr: Attr) -> &'static str {
    match attr {
        Attr::Country => "C",
        Attr::Province => "ST",
        Attr::Locality => "L",
        Attr::Organization => "O",
        Attr::OrganizationalUnit => "OU",
        Attr::CommonName => "CN",
        Attr::SerialNumber => "SN",
        Attr::DomainComponent => "DC",
    }
}

/// Go's `url.QueryEscape`: letters, digits and `-_.~` kept, a space as `+`, every other byte
/// as `%XX`.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::middleware::testing::spec;

    #[test]
    fn query_escape_is_gos() {
        assert_eq!(query_escape(r#"Subject="CN=a b,O=x";NB="1""#), "Subject%3D%22CN%3Da+b%2CO%3Dx%22%3BNB%3D%221%22");
    }

    #[test]
    fn info_fields_follow_traefiks_order_whatever_the_keys_order() {
        let text = "[http.middlewares.m.passTLSClientCert.info]\nsans = true\n[http.middlewares.m.passTLSClientCert.info.subject]\ncommonName = true\ncountry = true\ndomainComponent = true\n";
        let Ok(crate::data::middleware::Spec::PassTlsClientCert(s)) = spec(text) else { panic!("valid") };
        let info = s.info.unwrap();
        assert_eq!(info.subject, [Attr::DomainComponent, Attr::Country, Attr::CommonName]);
        assert!(info.sans && !info.not_after && info.issuer.is_empty() && !s.pem);
    }

    #[test]
    fn a_certificate_is_described_as_traefik_does() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0x00]));
        params.not_before = rcgen::date_time_ymd(2026, 3, 1);
        params.not_after = rcgen::date_time_ymd(2027, 3, 1);
        params.distinguished_name.push(rcgen::DnType::CountryName, "FR");
        params.distinguished_name.push(rcgen::DnType::CommonName, "client");
        let cert = params.self_signed(&key).unwrap();
        let info = Info {
            not_after: true,
            not_before: true,
            sans: true,
            serial_number: true,
            subject: vec![Attr::Country, Attr::CommonName],
            issuer: vec![Attr::CommonName],
        };
        assert_eq!(
            describe(&info, cert.der()),
            r#"Subject="C=FR,CN=client";Issuer="CN=client";SerialNumber="256";NB="1772323200";NA="1803859200";SAN="a.example""#
        );
        assert_eq!(describe(&Info::default(), cert.der()), "");
    }
}
