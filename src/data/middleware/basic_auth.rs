//! `basicAuth`: HTTP Basic authentication against `users` and `usersFile` (`user:hash` lines,
//! hashes in bcrypt, MD5-crypt/apr1 or `{SHA}` form, as `htpasswd` writes them). A request
//! without valid credentials gets 401 with `WWW-Authenticate: Basic realm="<realm>"`, and
//! nothing further in sees it. A successful check is remembered (by a SHA-256 of the user and
//! password, at most [`CACHED`] of them, forgotten when the middleware changes), so that
//! bcrypt's milliseconds are spent once per credentials, not once per request; bcrypt runs on
//! the blocking pool, off the workers. Hashes are secrets: they are never logged or shown.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use base64::Engine;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use ring::digest;
use serde::Deserialize;

use crate::{config::Checker, data::proxy::ProxyBody};

/// How many successful checks are remembered; the memory is cleared when it is full.
pub const CACHED: usize = 4096;

/// The keys of `basicAuth`, and of `digestAuth`, which has the same ones.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    pub users: Option<Vec<String>>,
    pub usersfile: Option<String>,
    pub realm: Option<String>,
    pub headerfield: Option<String>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    pub removeheader: Option<bool>,
}

#[derive(Clone, PartialEq)]
pub struct Spec {
    /// `(user, hash)`, `usersFile` first, then `users`; a later line for a user wins.
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
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let lines = user_lines(raw.users, raw.usersfile, path, c)?;
    let mut users: Vec<(String, String)> = Vec::new();
    for (at, line) in lines {
        // Never shown: the line holds a password hash, perhaps a password.
        let Some((user, hash)) = line.split_once(':').filter(|(u, h)| !u.is_empty() && !h.contains(':')) else {
            c.error(&format!("{path}.users"), format!("{at} is not of the form user:hash"));
            return None;
        };
        if Hash::parse(hash).is_none() {
            c.warn(
                &format!("{path}.users"),
                format!(
                    "{at}: the hash of user {user:?} is not bcrypt, MD5-crypt/apr1 or {{SHA}}; no password matches it"
                ),
            );
        }
        users.retain(|(u, _)| u != user);
        users.push((user.to_string(), hash.to_string()));
    }
    if users.is_empty() {
        c.error(path, "basicAuth needs users or a usersFile");
        return None;
    }
    let header_field = header_field(raw.headerfield, path, c).ok()?;
    let realm = realm(raw.realm, path, c)?;
    Some(Spec { users, realm, header_field, remove_header: raw.removeheader.unwrap_or(false) })
}

/// The entries of `usersFile` (blank and `#` lines skipped), then those of `users`, each with
/// where it was found; `None` (with the error) when the file cannot be read. Shared with
/// `digestAuth`, whose users have the same two sources.
pub(super) fn user_lines(
    users: Option<Vec<String>>,
    file: Option<String>,
    path: &str,
    c: &mut Checker,
) -> Option<Vec<(String, String)>> {
    let mut lines = Vec::new();
    if let Some(file) = file.filter(|f| !f.is_empty()) {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) => {
                c.error(&format!("{path}.usersfile"), format!("cannot read usersFile {file:?}: {err}"));
                return None;
            }
        };
        let entries = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        for (i, line) in entries.enumerate() {
            lines.push((format!("{file} entry {}", i + 1), line.to_string()));
        }
    }
    for (i, line) in users.unwrap_or_default().into_iter().enumerate() {
        lines.push((format!("users.{i}"), line));
    }
    Some(lines)
}

/// `headerField` as a header name; `Err` (with the error) when it is not one.
pub(super) fn header_field(name: Option<String>, path: &str, c: &mut Checker) -> Result<Option<HeaderName>, ()> {
    match name.filter(|h| !h.is_empty()) {
        None => Ok(None),
        Some(name) => HeaderName::from_bytes(name.as_bytes()).map(Some).map_err(|_| {
            c.error(&format!("{path}.headerfield"), format!("{name:?} is not a header name"));
        }),
    }
}

/// `realm`, `traefik` when unset; `None` (with the error) when it cannot be sent in a header.
pub(super) fn realm(realm: Option<String>, path: &str, c: &mut Checker) -> Option<String> {
    let realm = realm.filter(|r| !r.is_empty()).unwrap_or_else(|| "traefik".to_string());
    if realm.contains('"') || realm.contains('\\') || HeaderValue::from_str(&realm).is_err() {
        c.error(&format!("{path}.realm"), format!("realm {realm:?} cannot be sent in a header"));
        return None;
    }
    Some(realm)
}

/// A stored password hash.
enum Hash {
    Bcrypt(String),
    Sha1(Vec<u8>),
    /// MD5-crypt: `$1$` or Apache's `$apr1$`, with its salt.
    Md5 {
        magic: String,
        salt: String,
        full: String,
    },
}

impl Hash {
    fn parse(text: &str) -> Option<Hash> {
        if let Some(b64) = text.strip_prefix("{SHA}") {
            return base64::engine::general_purpose::STANDARD.decode(b64).ok().map(Hash::Sha1);
        }
        if ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|p| text.starts_with(p)) {
            return Some(Hash::Bcrypt(text.to_string()));
        }
        let mut parts = text.splitn(4, '$');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(""), Some(magic), Some(salt), Some(_)) if !magic.is_empty() => {
                Some(Hash::Md5 { magic: format!("${magic}$"), salt: salt.to_string(), full: text.to_string() })
            }
            _ => None,
        }
    }

    /// Whether `password` matches; bcrypt is slow, so it runs on the blocking pool.
    async fn matches(&self, password: &str) -> bool {
        match self {
            Hash::Bcrypt(hash) => {
                let (hash, password) = (hash.clone(), password.to_string());
                tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                    .await
                    .unwrap_or(false)
            }
            Hash::Sha1(expected) => {
                same(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes()).as_ref(), expected)
            }
            Hash::Md5 { magic, salt, full } => same(md5_crypt(password, salt, magic).as_bytes(), full.as_bytes()),
        }
    }
}

/// Compares in time that depends only on the lengths.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct BasicAuth {
    users: HashMap<String, Hash>,
    challenge: HeaderValue,
    header_field: Option<HeaderName>,
    remove_header: bool,
    /// SHA-256 of `user:password` of recent successful checks.
    passed: Mutex<HashSet<[u8; 32]>>,
    /// Bounds the checks running at once: a flood of wrong passwords queues here, not on
    /// hundreds of blocking threads.
    checking: tokio::sync::Semaphore,
}

/// How many password checks of one middleware run at once.
const CHECKS_AT_ONCE: usize = 4;

impl BasicAuth {
    pub fn new(spec: &Spec) -> BasicAuth {
        let users = spec.users.iter().filter_map(|(u, h)| Some((u.clone(), Hash::parse(h)?))).collect();
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", spec.realm))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"traefik\""));
        BasicAuth {
            users,
            challenge,
            header_field: spec.header_field.clone(),
            remove_header: spec.remove_header,
            passed: Mutex::new(HashSet::new()),
            checking: tokio::sync::Semaphore::new(CHECKS_AT_ONCE),
        }
    }

    /// The request passed or refused without a password check when it can be (no
    /// credentials, or credentials that passed before); `Err` gives it back for [`Self::request`].
    pub fn at_once<B>(&self, req: Request<B>) -> Result<super::Passed<B>, Box<Request<B>>> {
        let Some((user, password)) = credentials(req.headers()) else { return Ok(Err(Box::new(self.refuse()))) };
        if self.passed.lock().unwrap_or_else(|e| e.into_inner()).contains(&key(&user, &password)) {
            return Ok(Ok(self.admit(req, &user)));
        }
        Err(Box::new(req))
    }

    pub async fn request<B>(&self, req: Request<B>) -> super::Passed<B> {
        let Some((user, password)) = credentials(req.headers()) else { return Err(Box::new(self.refuse())) };
        if !self.check(&user, &password).await {
            return Err(Box::new(self.refuse()));
        }
        Ok(self.admit(req, &user))
    }

    fn admit<B>(&self, req: Request<B>, user: &str) -> Request<B> {
        admit(req, user, self.header_field.as_ref(), self.remove_header)
    }

    async fn check(&self, user: &str, password: &str) -> bool {
        let key = key(user, password);
        if self.passed.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
            return true;
        }
        let Ok(_turn) = self.checking.acquire().await else { return false };
        let Some(hash) = self.users.get(user) else {
            // As long as a known user's check, so that timing does not tell which users exist.
            if let Some(any) = self.users.values().next() {
                any.matches(password).await;
            }
            return false;
        };
        if !hash.matches(password).await {
            return false;
        }
        let mut passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if passed.len() >= CACHED {
            passed.clear();
        }
        passed.insert(key);
        true
    }

    fn refuse(&self) -> Response<ProxyBody> {
        let mut response = crate::data::proxy::error::text(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        response
    }
}

/// The request of a user who passed, as it goes on: `headerField` (what the client sent
/// under that name removed) names the user; `removeHeader` drops the credentials.
pub(super) fn admit<B>(mut req: Request<B>, user: &str, field: Option<&HeaderName>, remove: bool) -> Request<B> {
    if let Some(field) = field {
        req.headers_mut().remove(field);
        if let Ok(value) = HeaderValue::from_str(user) {
            req.headers_mut().insert(field.clone(), value);
        }
    }
    if remove {
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    req
}

/// What a successful check is remembered by: a SHA-256 of `user:password`.
fn key(user: &str, password: &str) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(user.as_bytes());
    ctx.update(b":");
    ctx.update(password.as_bytes());
    ctx.finish().as_ref().try_into().unwrap_or([0; 32])
}

/// The user and password of an `Authorization: Basic` header.
fn credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// MD5-crypt (FreeBSD's `$1$`, Apache's `$apr1$`): `magic` + salt + `$` + 22 characters.
fn md5_crypt(password: &str, salt: &str, magic: &str) -> String {
    use md5::{Digest, Md5};
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let (pw, salt) = (password.as_bytes(), &salt.as_bytes()[..salt.len().min(8)]);
    let alternate = Md5::new().chain_update(pw).chain_update(salt).chain_update(pw).finalize();
    let mut ctx = Md5::new().chain_update(pw).chain_update(magic.as_bytes()).chain_update(salt);
    for chunk in (0..pw.len()).step_by(16) {
        ctx.update(&alternate[..(pw.len() - chunk).min(16)]);
    }
    let mut i = pw.len();
    while i > 0 {
        ctx.update(if i & 1 == 1 { &[0u8][..] } else { &pw[..1] });
        i >>= 1;
    }
    let mut sum = ctx.finalize();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        ctx.update(if round & 1 == 1 { pw } else { &sum[..] });
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(pw);
        }
        ctx.update(if round & 1 == 1 { &sum[..] } else { pw });
        sum = ctx.finalize();
    }
    let mut out = format!("{magic}{}$", String::from_utf8_lossy(salt));
    let mut push = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push(u32::from(sum[a]) << 16 | u32::from(sum[b]) << 8 | u32::from(sum[c]), 4);
    }
    push(u32::from(sum[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_crypt_matches_openssl_passwd() {
        assert_eq!(md5_crypt("p@ss:word", "abcdefgh", "$apr1$"), "$apr1$abcdefgh$3vV72pWBK7yA0GpedWUOl/");
        assert_eq!(md5_crypt("secret", "saltsalt", "$1$"), "$1$saltsalt$9xy1btjgzLYfb7hivXtC//");
    }

    #[tokio::test]
    async fn every_htpasswd_form_is_checked() {
        let cases = [
            ("$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/", "test"),
            ("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "secret"),
            ("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"),
        ];
        for (hash, password) in cases {
            let parsed = Hash::parse(hash).unwrap();
            assert!(parsed.matches(password).await, "{hash}");
            assert!(!parsed.matches("wrong").await, "{hash}");
        }
        assert!(Hash::parse("plaintext").is_none());
    }

    #[tokio::test]
    async fn only_successful_checks_are_remembered() {
        let spec = Spec {
            users: vec![("test".into(), "$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/".into())],
            realm: "traefik".into(),
            header_field: None,
            remove_header: false,
        };
        let auth = BasicAuth::new(&spec);
        assert!(!auth.check("test", "wrong").await && !auth.check("nobody", "test").await);
        assert!(auth.passed.lock().unwrap().is_empty());
        assert!(auth.check("test", "test").await && auth.check("test", "test").await);
        assert_eq!(auth.passed.lock().unwrap().len(), 1);
        assert!(!format!("{spec:?}").contains("apr1"), "a hash in a log line");
    }

    #[test]
    fn credentials_split_at_the_first_colon() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("basic dXNlcjpwYTpzcw=="));
        assert_eq!(credentials(&headers), Some(("user".into(), "pa:ss".into())));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer dXNlcjpwYTpzcw=="));
        assert_eq!(credentials(&headers), None);
    }
}
