//! Just enough DER to read what Pylon needs from an X.509 certificate: for ACME's bookkeeping,
//! its validity, its issuer's common name and the two parts of its renewal-information
//! identifier (authority key identifier and serial); for `passTLSClientCert`, the fields it
//! shows ([`details`]: subject, issuer, serial, validity, subject alternative names). A full
//! X.509 parser would be a large dependency for a dozen fields. Every reader returns `None` on
//! malformed input and never panics (fuzzed).

/// What Pylon keeps about a certificate besides its PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub issuer: String,
}

/// Reads the validity and issuer of a DER certificate.
pub fn facts(cert: &[u8]) -> Option<Facts> {
    let (certificate, _) = element(cert, SEQUENCE)?;
    let (mut tbs, _) = element(certificate, SEQUENCE)?;
    // [0] EXPLICIT version, optional.
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs)?;
    }
    let tbs = skip(tbs)?; // serialNumber
    let tbs = skip(tbs)?; // signature algorithm
    let (issuer, tbs) = element(tbs, SEQUENCE)?;
    let (validity, _) = element(tbs, SEQUENCE)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some(Facts { not_before, not_after, issuer: common_name(issuer).unwrap_or_default() })
}

/// The authority key identifier's `keyIdentifier` and the serial number's content octets, which
/// make a certificate's ACME renewal-information identifier (RFC 9773 §4.1).
pub fn renewal_parts(cert: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (certificate, _) = element(cert, SEQUENCE)?;
    let (mut tbs, _) = element(certificate, SEQUENCE)?;
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs)?;
    }
    let (serial, mut tbs) = element(tbs, INTEGER)?;
    for _ in 0..5 {
        tbs = skip(tbs)?; // signature, issuer, validity, subject, subjectPublicKeyInfo
    }
    while let Some((tag, content, rest)) = next(tbs) {
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (mut extensions, _) = element(content, SEQUENCE)?;
        while !extensions.is_empty() {
            let (extension, rest) = element(extensions, SEQUENCE)?;
            extensions = rest;
            let (oid, mut value) = element(extension, OID)?;
            if oid != AUTHORITY_KEY_IDENTIFIER {
                continue;
            }
            if value.first() == Some(&BOOLEAN) {
                value = skip(value)?;
            }
            let (octets, _) = element(value, OCTET_STRING)?;
            let (aki, _) = element(octets, SEQUENCE)?;
            let (key_id, _) = element(aki, KEY_IDENTIFIER)?;
            return Some((key_id.to_vec(), serial.to_vec()));
        }
    }
    None
}

/// A distinguished-name attribute `passTLSClientCert` can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attr {
    Country,
    Province,
    Locality,
    Organization,
    OrganizationalUnit,
    CommonName,
    /// The DN's serialNumber attribute, not the certificate's serial.
    SerialNumber,
    DomainComponent,
}

/// What `passTLSClientCert` shows of a certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// The serial number in decimal.
    pub serial: String,
    /// The subject's and the issuer's attributes, in the certificate's order.
    pub subject: Vec<(Attr, String)>,
    pub issuer: Vec<(Attr, String)>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Subject alternative names: DNS names, then e-mail addresses, IP addresses and URIs
    /// (Go's order).
    pub sans: Vec<String>,
}

/// Reads the fields `passTLSClientCert` shows from a DER certificate.
pub fn details(cert: &[u8]) -> Option<Details> {
    let (certificate, _) = element(cert, SEQUENCE)?;
    let (mut tbs, _) = element(certificate, SEQUENCE)?;
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs)?;
    }
    let (serial, tbs) = element(tbs, INTEGER)?;
    let tbs = skip(tbs)?; // signature algorithm
    let (issuer, tbs) = element(tbs, SEQUENCE)?;
    let (validity, tbs) = element(tbs, SEQUENCE)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    let (subject, mut tbs) = element(tbs, SEQUENCE)?;
    tbs = skip(tbs)?; // subjectPublicKeyInfo
    let mut sans = Vec::new();
    while let Some((tag, content, rest)) = next(tbs) {
        tbs = rest;
        if tag == EXTENSIONS {
            sans = alternative_names(content)?;
        }
    }
    Some(Details {
        serial: decimal(serial),
        subject: attributes(subject)?,
        issuer: attributes(issuer)?,
        not_before,
        not_after,
        sans,
    })
}

/// The attributes of a Name that [`Attr`] knows, in order.
fn attributes(mut name: &[u8]) -> Option<Vec<(Attr, String)>> {
    let mut out = Vec::new();
    while !name.is_empty() {
        let (mut set, rest) = element(name, SET)?;
        name = rest;
        while !set.is_empty() {
            let (pair, rest) = element(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = element(pair, OID)?;
            let (_, text, _) = next(value)?;
            if let Some(attr) = ATTRIBUTES.iter().find(|(o, _)| *o == oid).map(|(_, a)| *a) {
                out.push((attr, String::from_utf8_lossy(text).into_owned()));
            }
        }
    }
    Some(out)
}

/// The subject alternative names in an Extensions sequence, in Go's order.
fn alternative_names(extensions: &[u8]) -> Option<Vec<String>> {
    let (mut extensions, _) = element(extensions, SEQUENCE)?;
    while !extensions.is_empty() {
        let (extension, rest) = element(extensions, SEQUENCE)?;
        extensions = rest;
        let (oid, mut value) = element(extension, OID)?;
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        if value.first() == Some(&BOOLEAN) {
            value = skip(value)?;
        }
        let (octets, _) = element(value, OCTET_STRING)?;
        let (mut names, _) = element(octets, SEQUENCE)?;
        let mut by_kind: [Vec<String>; 4] = Default::default();
        while let Some((tag, content, rest)) = next(names) {
            names = rest;
            let text = || String::from_utf8_lossy(content).into_owned();
            match tag {
                DNS_NAME => by_kind[0].push(text()),
                RFC822_NAME => by_kind[1].push(text()),
                IP_ADDRESS => by_kind[2].push(ip(content)?),
                URI => by_kind[3].push(text()),
                _ => {}
            }
        }
        return Some(by_kind.concat());
    }
    Some(Vec::new())
}

fn ip(octets: &[u8]) -> Option<String> {
    Some(match octets.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?).to_string(),
        _ => return None,
    })
}

/// A non-negative INTEGER's content octets in decimal.
fn decimal(octets: &[u8]) -> String {
    let mut number: Vec<u8> = octets.iter().copied().skip_while(|b| *b == 0).collect();
    let mut digits = Vec::new();
    while !number.is_empty() {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = remainder << 8 | u32::from(*byte);
            *byte = (value / 10) as u8;
            remainder = value % 10;
        }
        digits.push(b'0' + remainder as u8);
        let zeros = number.iter().take_while(|b| **b == 0).count();
        number.drain(..zeros);
    }
    if digits.is_empty() {
        return "0".to_string();
    }
    digits.iter().rev().map(|d| *d as char).collect()
}

const ATTRIBUTES: &[(&[u8], Attr)] = &[
    (&[0x55, 0x04, 0x06], Attr::Country),
    (&[0x55, 0x04, 0x08], Attr::Province),
    (&[0x55, 0x04, 0x07], Attr::Locality),
    (&[0x55, 0x04, 0x0a], Attr::Organization),
    (&[0x55, 0x04, 0x0b], Attr::OrganizationalUnit),
    (&[0x55, 0x04, 0x03], Attr::CommonName),
    (&[0x55, 0x04, 0x05], Attr::SerialNumber),
    (&[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19], Attr::DomainComponent),
];
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// GeneralName's `[1] rfc822Name`, `[2] dNSName`, `[6] URI` and `[7] iPAddress`, implicit.
const RFC822_NAME: u8 = 0x81;
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;
const IP_ADDRESS: u8 = 0x87;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` in a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `[0] IMPLICIT KeyIdentifier` in an AuthorityKeyIdentifier.
const KEY_IDENTIFIER: u8 = 0x80;
const AUTHORITY_KEY_IDENTIFIER: &[u8] = &[0x55, 0x1d, 0x23];
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The tag, content and the bytes after one element.
fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = next(input)?;
    (t == tag).then_some((content, rest))
}

fn skip(input: &[u8]) -> Option<&[u8]> {
    next(input).map(|(_, _, rest)| rest)
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (tag, content, rest) = next(input)?;
    let text = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None; // No sign, and no multi-byte character for the slices below to cut through.
    }
    let (year, rest_digits) = match tag {
        UTC_TIME if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest_digits.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days = crate::calendar::days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second, rest))
}

/// The first commonName in a Name (a sequence of sets of attribute pairs).
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (set, rest) = element(name, SET)?;
        name = rest;
        let (pair, _) = element(set, SEQUENCE)?;
        let (oid, value) = element(pair, OID)?;
        if oid == COMMON_NAME {
            let (_, text, _) = next(value)?;
            return Some(String::from_utf8_lossy(text).into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_and_issuer_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 3, 1);
        params.not_after = rcgen::date_time_ymd(2051, 5, 31);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Pylon Test Issuer");
        let cert = params.self_signed(&key).unwrap();
        let facts = facts(cert.der()).unwrap();
        assert_eq!(facts.not_before, 1_772_323_200, "2026-03-01T00:00:00Z (UTCTime)");
        assert_eq!(facts.not_after, 2_569_104_000, "2051-05-31T00:00:00Z (GeneralizedTime)");
        assert_eq!(facts.issuer, "Pylon Test Issuer");
    }

    #[test]
    fn renewal_parts_match_rfc_9773s_example() {
        // RFC 9773 §4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4 and
        // serial 00:87:65:43:21 give the identifier "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".
        let aki = [0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C];
        let aki: Vec<u8> = aki.iter().copied().chain([0xDE, 0x01, 0xC8, 0xD4]).collect();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(aki.clone());
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x87, 0x65, 0x43, 0x21]));
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&rcgen::KeyPair::generate().unwrap(), &ca).unwrap();
        let (key_id, serial) = renewal_parts(leaf.der()).unwrap();
        assert_eq!((key_id.as_slice(), serial.as_slice()), (aki.as_slice(), &[0x00, 0x87, 0x65, 0x43, 0x21][..]));
        let id = instant_acme::CertificateIdentifier::new(key_id.as_slice().into(), serial.as_slice().into());
        assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    }

    #[test]
    fn details_read_names_serial_validity_and_alternative_names() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name("ops@a.example".try_into().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::IpAddress("10.0.1.2".parse().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::URI("spiffe://a/b".try_into().unwrap()));
        params.serial_number =
            Some(rcgen::SerialNumber::from_slice(&[0x00, 0x87, 0x65, 0x43, 0x21, 0xff, 0x01, 0x02, 0x03]));
        params.not_before = rcgen::date_time_ymd(2026, 3, 1);
        let dn = &mut params.distinguished_name;
        dn.push(rcgen::DnType::CountryName, "FR");
        dn.push(rcgen::DnType::OrganizationName, "Cheese");
        dn.push(rcgen::DnType::CommonName, "client");
        let cert = params.self_signed(&key).unwrap();
        let d = details(cert.der()).unwrap();
        assert_eq!(d.serial, "9756277981059285507", "0x87654321ff010203 in decimal");
        // rcgen writes the common name first.
        let names: Vec<(Attr, &str)> = d.subject.iter().map(|(a, v)| (*a, v.as_str())).collect();
        assert_eq!(names, [(Attr::CommonName, "client"), (Attr::Country, "FR"), (Attr::Organization, "Cheese")]);
        assert_eq!(d.issuer, d.subject, "self-signed");
        assert_eq!(d.not_before, 1_772_323_200);
        assert_eq!(d.sans, ["a.example", "ops@a.example", "10.0.1.2", "spiffe://a/b"]);
        assert_eq!(decimal(&[0]), "0");
        assert_eq!(decimal(&[0x01, 0x00]), "256");
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(details(b"not a certificate"), None);
        assert_eq!(renewal_parts(b"not a certificate"), None);
        assert_eq!(facts(b"not a certificate"), None);
        assert_eq!(facts(&[0x30, 0x82, 0xff]), None);
    }

    #[test]
    fn a_time_with_anything_but_digits_is_none() {
        // A notBefore UTCTime "1é010100000Z" is 12 bytes before its Z, but slicing its two-digit
        // year cut through the 'é' and panicked (fuzz/seeds/der/utf8_in_time replays it).
        let mut cert = [
            0x30, 0x1a, 0x30, 0x18, // Certificate, TBSCertificate
            0x02, 0x01, 0x01, // serialNumber
            0x30, 0x00, // signature
            0x30, 0x00, // issuer
            0x30, 0x0f, 0x17, 0x0d, // validity, notBefore (UTCTime):
            b'1', 0xc3, 0xa9, b'0', b'1', b'0', b'1', b'0', b'0', b'0', b'0', b'0', b'Z',
        ];
        assert_eq!(facts(&cert), None);
        cert[15..18].copy_from_slice(b"+60");
        assert_eq!(facts(&cert), None, "a year of \"+6\" is no year");
    }
}
