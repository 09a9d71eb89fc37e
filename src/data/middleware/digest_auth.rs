//! `digestAuth`: HTTP Digest authentication (RFC 7616, MD5, `qop=auth`) against `users` and
//! `usersFile` (`user:realm:HA1` lines, as `htdigest` writes them). A request without a valid
//! answer gets 401 with `WWW-Authenticate: Digest realm="…", nonce="…", opaque="…",
//! algorithm="MD5", qop="auth"`, and nothing further in sees it.
//!
//! Unlike Traefik, whose nonces live in one process's memory, a nonce here is stateless: its
//! time and an HMAC over it under a key derived from the middleware's users, so that a nonce
//! one replica issued is honoured by every replica with the same configuration. It is good for
//! [`NONCE_LIFETIME`]; after that the client is told `stale="true"` and retries with a fresh one.
//! Each replica remembers the last `nc` per nonce (bounded) and refuses a replayed count.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use md5::{Digest, Md5};
use ring::{digest, hmac};

use crate::{config::Checker, data::proxy::ProxyBody};

/// How long a nonce is accepted after it was issued.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(3600);

/// How many nonces' counts one replica remembers; the memory is cleared when it is full.
const REMEMBERED: usize = 4096;

#[derive(Clone, PartialEq)]
pub struct Spec {
    /// `(user, HA1)` of the users in the middleware's realm, a later line for a user winning.
    pub users: Vec<(String, String)>,
    pub realm: String,
    pub header_field: Option<HeaderName>,
    pub remove_header: bool,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("Spec").field("users", &users).field("realm", &self.realm).finish_non_exhaustive()
    }
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: super::basic_auth::Raw = super::spec::raw(raw, path, c)?;
    let lines = super::basic_auth::user_lines(raw.users, raw.usersfile, path, c)?;
    let realm = super::basic_auth::realm(raw.realm, path, c)?;
    let mut users: Vec<(String, String)> = Vec::new();
    for (at, line) in lines {
        // Never shown: the line holds a password hash.
        let parts: Vec<&str> = line.split(':').collect();
        let [user, their_realm, ha1] = parts[..] else {
            c.error(&format!("{path}.users"), format!("{at} is not of the form user:realm:HA1"));
            return None;
        };
        if user.is_empty() || ha1.len() != 32 || !ha1.bytes().all(|b| b.is_ascii_hexdigit()) {
            c.error(&format!("{path}.users"), format!("{at}: the HA1 of user {user:?} is not 32 hex digits"));
            return None;
        }
        if their_realm != realm {
            c.warn(
                &format!("{path}.users"),
                format!("{at}: user {user:?} is in realm {their_realm:?}, not {realm:?}; it never matches"),
            );
            continue;
        }
        users.retain(|(u, _)| u != user);
        users.push((user.to_string(), ha1.to_ascii_lowercase()));
    }
    if users.is_empty() {
        c.error(path, format!("digestAuth needs users (or a usersFile) in realm {realm:?}"));
        return None;
    }
    let header_field = super::basic_auth::header_field(raw.headerfield, path, c).ok()?;
    Some(Spec { users, realm, header_field, remove_header: raw.removeheader.unwrap_or(false) })
}

pub struct DigestAuth {
    users: HashMap<String, String>,
    realm: String,
    /// Signs nonces; derived from the realm and the users, so equal on every replica.
    key: hmac::Key,
    opaque: String,
    header_field: Option<HeaderName>,
    remove_header: bool,
    /// The highest `nc` seen per nonce.
    counts: Mutex<HashMap<String, u64>>,
}

/// Why a request is refused: `stale` asks the client to retry with the fresh nonce.
struct Refused {
    stale: bool,
}

impl DigestAuth {
    pub fn new(spec: &Spec) -> DigestAuth {
        let mut seed = digest::Context::new(&digest::SHA256);
        seed.update(b"pylon digestAuth nonce key\n");
        seed.update(spec.realm.as_bytes());
        let mut users: Vec<&(String, String)> = spec.users.iter().collect();
        users.sort();
        for (user, ha1) in users {
            seed.update(format!("\n{user}:{ha1}").as_bytes());
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, seed.finish().as_ref());
        let opaque = hex(&hmac::sign(&key, b"opaque").as_ref()[..16]);
        DigestAuth {
            users: spec.users.iter().cloned().collect(),
            realm: spec.realm.clone(),
            key,
            opaque,
            header_field: spec.header_field.clone(),
            remove_header: spec.remove_header,
            counts: Mutex::new(HashMap::new()),
        }
    }

    pub fn request<B>(&self, req: Request<B>) -> super::Passed<B> {
        match self.check(&req, now()) {
            Ok(user) => Ok(super::basic_auth::admit(req, &user, self.header_field.as_ref(), self.remove_header)),
            Err(refused) => Err(Box::new(self.refuse(refused.stale))),
        }
    }

    /// The user whose answer in `req` is right, at `now` (seconds since the epoch).
    fn check<B>(&self, req: &Request<B>, now: u64) -> Result<String, Refused> {
        let refused = Refused { stale: false };
        let value =
            req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(Refused { stale: false })?;
        let (scheme, rest) = value.split_once(' ').ok_or(Refused { stale: false })?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(refused);
        }
        let params = params(rest);
        let get = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let (Some(user), Some(nonce), Some(uri), Some(response), Some(nc), Some(cnonce)) =
            (get("username"), get("nonce"), get("uri"), get("response"), get("nc"), get("cnonce"))
        else {
            return Err(refused);
        };
        let algorithm_md5 = get("algorithm").is_none_or(|a| a.eq_ignore_ascii_case("MD5"));
        if get("opaque") != Some(self.opaque.as_str()) || !algorithm_md5 || get("qop") != Some("auth") {
            return Err(refused);
        }
        if !names_target(uri, req.uri()) {
            return Err(refused);
        }
        let Some(ha1) = self.users.get(user) else { return Err(refused) };
        let ha2 = md5_hex(&format!("{}:{uri}", req.method()));
        let expected = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        if !super::basic_auth::same(expected.as_bytes(), response.as_bytes()) {
            return Err(refused);
        }
        // The answer is right: a nonce that is old or replayed asks for a fresh one.
        match self.issued_at(nonce) {
            Some(at) if at <= now + 60 && now.saturating_sub(at) <= NONCE_LIFETIME.as_secs() => {}
            Some(_) => return Err(Refused { stale: true }),
            None => return Err(refused),
        }
        let count = u64::from_str_radix(nc, 16).map_err(|_| Refused { stale: false })?;
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get(nonce) {
            Some(&last) if count == last => return Err(refused),
            Some(&last) if count < last => return Err(Refused { stale: true }),
            _ => {}
        }
        if counts.len() >= REMEMBERED {
            counts.clear();
        }
        counts.insert(nonce.to_string(), count);
        Ok(user.to_string())
    }

    /// A fresh nonce: the time in hex, then the first half of its HMAC.
    fn nonce(&self, now: u64) -> String {
        let at = format!("{now:016x}");
        format!("{at}{}", hex(&hmac::sign(&self.key, at.as_bytes()).as_ref()[..16]))
    }

    /// When `nonce` was issued, if this middleware issued it.
    fn issued_at(&self, nonce: &str) -> Option<u64> {
        let (at, mac) = (nonce.get(..16)?, nonce.get(16..)?);
        let mac: Vec<u8> = (0..mac.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(mac.get(i..i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        let full = hmac::sign(&self.key, at.as_bytes());
        (mac.len() == 16 && super::basic_auth::same(&full.as_ref()[..16], &mac))
            .then(|| u64::from_str_radix(at, 16).ok())?
    }

    fn refuse(&self, stale: bool) -> Response<ProxyBody> {
        let stale = if stale { "stale=\"true\", " } else { "" };
        let challenge = format!(
            "Digest realm=\"{}\", nonce=\"{}\", opaque=\"{}\", {stale}algorithm=\"MD5\", qop=\"auth\"",
            self.realm,
            self.nonce(now()),
            self.opaque
        );
        let mut response = crate::data::proxy::error::text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Whether the `uri` a client signed is the request's target: the same path and query, or the
/// same path when the client signed no query (Traefik's looser rule accepts any prefix).
fn names_target(signed: &str, target: &http::Uri) -> bool {
    let full = target.path_and_query().map_or("/", |p| p.as_str());
    let signed = match signed.parse::<http::Uri>() {
        Ok(uri) if uri.scheme().is_some() => uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        _ => signed.to_string(),
    };
    signed == full || (!signed.contains('?') && signed == target.path())
}

/// The `key=value` pairs of a Digest header, values unquoted: commas inside quotes belong to
/// the value, and a backslash there escapes the next character.
fn params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let (mut piece, mut quoted, mut escaped) = (String::new(), false, false);
    let mut flush = |piece: &mut String| {
        if let Some((k, v)) = piece.split_once('=') {
            pairs.push((k.trim().to_string(), v.trim().to_string()));
        }
        piece.clear();
    };
    for ch in text.chars() {
        match ch {
            _ if escaped => {
                piece.push(ch);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => flush(&mut piece),
            _ => piece.push(ch),
        }
    }
    flush(&mut piece);
    pairs
}

fn md5_hex(text: &str) -> String {
    hex(&Md5::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
