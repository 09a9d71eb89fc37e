//! The request path as Pylon routes and forwards it, made canonical before routing as Traefik
//! v3 does: percent-encoded characters that are dangerous to decode (`/`, `\`, NUL, `;`, `%`,
//! `?`, `#`) are refused unless the entrypoint allows them; encoded unreserved characters are
//! decoded and the other encodings uppercased (RFC 3986 §2.3, §6.2.2.1); `.` and `..` segments
//! are removed and `//` merged (RFC 3986 §5.2.4, `sanitizePath`). The router matches the result
//! and the upstream receives the same path, so the two can never disagree about it.

use std::borrow::Cow;

/// An entrypoint's path settings (`http.sanitizePath`, `http.encodedCharacters.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathPolicy {
    /// Remove dot segments and merge duplicate slashes; default true.
    pub sanitize: bool,
    /// The refused encodings this entrypoint lets through anyway, as a set of [`Encoded`] bits.
    pub allowed: u8,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy { sanitize: true, allowed: 0 }
    }
}

/// An encoded character refused by default, with the Traefik option that allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub byte: u8,
    pub option: &'static str,
    pub bit: u8,
}

/// Every encoded character refused by default.
pub const REFUSED: [Encoded; 7] = [
    Encoded { byte: b'/', option: "allowEncodedSlash", bit: 1 },
    Encoded { byte: b'\\', option: "allowEncodedBackSlash", bit: 2 },
    Encoded { byte: 0, option: "allowEncodedNullCharacter", bit: 4 },
    Encoded { byte: b';', option: "allowEncodedSemicolon", bit: 8 },
    Encoded { byte: b'%', option: "allowEncodedPercent", bit: 16 },
    Encoded { byte: b'?', option: "allowEncodedQuestionMark", bit: 32 },
    Encoded { byte: b'#', option: "allowEncodedHash", bit: 64 },
];

/// Why a path was refused: the client's fault, answered 400.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has an encoded {0:?}, which this entrypoint refuses (http.encodedCharacters.{1})")]
    Refused(char, &'static str),
    #[error("the path has a malformed percent-encoding")]
    Malformed,
}

/// The canonical form of `path`; borrowed when it already is canonical, the common case.
pub fn normalize<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    let bytes = path.as_bytes();
    let needs_sanitizing = policy.sanitize && bytes.first() == Some(&b'/') && has_dot_or_empty_segment(path);
    if !bytes.contains(&b'%') && !needs_sanitizing {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes, policy)?;
    if policy.sanitize && decoded.starts_with('/') {
        Ok(Cow::Owned(remove_dot_segments(&decoded)))
    } else {
        Ok(Cow::Owned(decoded))
    }
}

/// Whether a path may have a `.` or `..` segment or an empty one (`//`): a quick, conservative
/// check (`/.well-known` passes it too) that keeps the common path off the slow one.
fn has_dot_or_empty_segment(path: &str) -> bool {
    path.contains("//") || path.contains("/.")
}

/// Decodes `%XX` of unreserved characters, uppercases the others, refuses the dangerous ones.
fn decode_unreserved(bytes: &[u8], policy: &PathPolicy) -> Result<String, PathError> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b)))
        else {
            return Err(PathError::Malformed);
        };
        let byte = hi << 4 | lo;
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte);
        } else if let Some(e) = REFUSED.iter().find(|e| e.byte == byte && policy.allowed & e.bit == 0) {
            return Err(PathError::Refused(byte as char, e.option));
        } else {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        }
        i += 3;
    }
    // Only ASCII was replaced by ASCII, so what was UTF-8 still is.
    String::from_utf8(out).map_err(|_| PathError::Malformed)
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments merged; a trailing slash (or a
/// trailing `.` or `..`, which stand for a directory) is kept.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut directory = false;
    for segment in path.split('/').skip(1) {
        directory = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => drop(kept.pop()),
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if directory || kept.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(path: &str) -> Result<String, PathError> {
        normalize(path, &PathPolicy::default()).map(Cow::into_owned)
    }

    #[test]
    fn dot_segments_and_duplicate_slashes_go() {
        for (raw, want) in [
            ("/public/../admin/secret.txt", "/admin/secret.txt"),
            ("/public/%2e%2e/admin/secret.txt", "/admin/secret.txt"),
            ("/public/%2E%2E/admin/secret.txt", "/admin/secret.txt"),
            ("//admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("/x/../admin/x", "/admin/x"),
            ("/../../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/", "/a/"),
            ("/", "/"),
            ("/..", "/"),
            ("/a..b/.c/..d", "/a..b/.c/..d"),
        ] {
            assert_eq!(canonical(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn unreserved_encodings_are_decoded_and_others_uppercased() {
        assert_eq!(canonical("/%61dmin/%7euser").as_deref(), Ok("/admin/~user"));
        assert_eq!(canonical("/caf%c3%a9/a%20b").as_deref(), Ok("/caf%C3%A9/a%20b"));
        assert!(matches!(normalize("/plain/path", &PathPolicy::default()), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn dangerous_encodings_are_refused_unless_allowed() {
        for (raw, c) in [
            ("/public%2F..%2Fadmin/secret.txt", '/'),
            ("/public/..%2fadmin", '/'),
            ("/%2Fadmin/x", '/'),
            ("/a%5Cb", '\\'),
            ("/a%00", '\0'),
            ("/a%3Bjsessionid=1", ';'),
            ("/a%252e%252e", '%'),
            ("/a%3F", '?'),
            ("/a%23", '#'),
        ] {
            assert!(matches!(canonical(raw), Err(PathError::Refused(got, _)) if got == c), "{raw}");
        }
        assert_eq!(canonical("/a%zz"), Err(PathError::Malformed));
        assert_eq!(canonical("/a%2"), Err(PathError::Malformed));
        let slash = PathPolicy { allowed: REFUSED[0].bit, ..PathPolicy::default() };
        let allowed = normalize("/a%2f..%2Fb/../c", &slash).map(Cow::into_owned);
        assert_eq!(allowed.as_deref(), Ok("/c"), "an allowed %2F stays encoded, inside its segment");
    }

    #[test]
    fn without_sanitizing_dot_segments_stay() {
        let off = PathPolicy { sanitize: false, ..PathPolicy::default() };
        assert_eq!(normalize("/a/../b//c", &off).map(Cow::into_owned).as_deref(), Ok("/a/../b//c"));
        assert_eq!(normalize("/%61/..", &off).map(Cow::into_owned).as_deref(), Ok("/a/.."));
    }
}
