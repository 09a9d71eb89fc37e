//! Just enough DER to read what certificate bookkeeping needs from an X.509 certificate: its
//! validity (notBefore, notAfter), its issuer's common name, and the two parts of its ACME
//! renewal-information identifier (authority key identifier and serial). A full X.509 parser
//! would be a large dependency for five fields.

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
    fn garbage_is_none() {
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
