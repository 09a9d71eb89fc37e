//! `stripPrefix` and `stripPrefixRegex`: the first configured prefix the path starts with (a
//! plain string test, so `/api` strips `/apifoo` to `/foo`), or the first regex match that
//! starts the path, is removed, and `X-Forwarded-Prefix` records it (added to any already
//! there). A path stripped to nothing reaches the upstream as `/`. A result that is not clean
//! (`/api//x` stripped to `//x`, a `.` or `..` segment) is 400: the router matched one path and
//! the upstream would read another.

use http::{HeaderValue, Request};
use serde::Deserialize;

use super::spec::Pattern;
use crate::{config::Checker, data::proxy::ProxyError};

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    prefixes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    forceslash: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRegex {
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    regex: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Prefixes { prefixes: Vec<String>, force_slash: bool },
    Regex(Vec<Pattern>),
}

impl Spec {
    pub fn is_regex(&self) -> bool {
        matches!(self, Spec::Regex(_))
    }
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let prefixes: Vec<String> = raw.prefixes.unwrap_or_default().iter().map(|p| p.trim().to_string()).collect();
    if let Some(i) = prefixes.iter().position(|p| p.is_empty()) {
        c.error(&format!("{path}.prefixes.{i}"), "a prefix cannot be empty");
        return None;
    }
    if raw.forceslash.is_some() {
        c.warn(&format!("{path}.forceslash"), "forceSlash is deprecated");
    }
    Some(Spec::Prefixes { prefixes, force_slash: raw.forceslash.unwrap_or(false) })
}

pub(super) fn decode_regex(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: RawRegex = super::spec::raw(raw, path, c)?;
    let mut patterns = Vec::new();
    for (i, text) in raw.regex.unwrap_or_default().iter().enumerate() {
        patterns.push(Pattern::compile(text.trim(), &format!("{path}.regex.{i}"), c)?);
    }
    Some(Spec::Regex(patterns))
}

pub struct StripPrefix {
    spec: Spec,
}

impl StripPrefix {
    pub fn new(spec: &Spec) -> StripPrefix {
        StripPrefix { spec: spec.clone() }
    }

    pub fn request<B>(&self, req: Request<B>) -> super::Passed<B> {
        let path = req.uri().path();
        let (prefix, force_slash) = match &self.spec {
            Spec::Prefixes { prefixes, force_slash } => match prefixes.iter().find(|p| path.starts_with(p.as_str())) {
                Some(p) => (p.clone(), *force_slash),
                None => return Ok(req),
            },
            Spec::Regex(patterns) => {
                let found = patterns.iter().find_map(|p| p.0.find(path).filter(|m| m.start() == 0 && !m.is_empty()));
                match found {
                    Some(m) => (m.as_str().to_string(), false),
                    None => return Ok(req),
                }
            }
        };
        let rest = &path[prefix.len()..];
        let stripped = match (rest, force_slash) {
            (_, true) => format!("/{}", rest.trim_start_matches('/')),
            ("", false) => "/".to_string(),
            (rest, false) if rest.starts_with('/') => rest.to_string(),
            (rest, false) => format!("/{rest}"),
        };
        if !super::is_clean(&stripped) {
            return Err(Box::new(
                ProxyError::BadRequest(format!("the path stripped of {prefix:?} is not clean")).response(),
            ));
        }
        let mut req = super::with_path(req, &stripped)?;
        if let Ok(value) = HeaderValue::from_str(&prefix) {
            req.headers_mut().append("x-forwarded-prefix", value);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(spec: Spec, uri: &str) -> Result<(String, Vec<String>), u16> {
        let req = Request::get(uri).header("x-forwarded-prefix", "/outer").body(()).unwrap();
        match StripPrefix::new(&spec).request(req) {
            Ok(req) => {
                let prefixes = req.headers().get_all("x-forwarded-prefix").iter();
                Ok((req.uri().to_string(), prefixes.map(|v| v.to_str().unwrap().to_string()).collect()))
            }
            Err(response) => Err(response.status().as_u16()),
        }
    }

    fn prefixes(list: &[&str]) -> Spec {
        Spec::Prefixes { prefixes: list.iter().map(|p| p.to_string()).collect(), force_slash: false }
    }

    #[test]
    fn the_first_matching_prefix_is_stripped_as_a_plain_string() {
        let (uri, added) = strip(prefixes(&["/nope", "/api"]), "/api/users?x=1").unwrap();
        assert_eq!(uri, "/users?x=1");
        assert_eq!(added, ["/outer", "/api"], "X-Forwarded-Prefix is added to, not replaced");
        assert_eq!(strip(prefixes(&["/stat"]), "/status").unwrap().0, "/us");
        assert_eq!(strip(prefixes(&["/api"]), "/api").unwrap().0, "/");
        assert_eq!(strip(prefixes(&["/api"]), "/other").unwrap(), ("/other".into(), vec!["/outer".into()]));
    }

    #[test]
    fn a_result_that_is_not_clean_is_refused() {
        assert_eq!(strip(prefixes(&["/api"]), "/api//etc/passwd"), Err(400));
        assert_eq!(strip(prefixes(&["/api"]), "/api./x"), Err(400), "stripped to a dot segment");
        assert!(strip(prefixes(&["/api"]), "/api/x/").is_ok(), "a trailing slash is clean");
    }

    #[test]
    fn a_regex_strips_only_a_match_at_the_start() {
        let spec = |re: &str| Spec::Regex(vec![Pattern(regex::Regex::new(re).unwrap())]);
        let (uri, added) = strip(spec("/v[0-9]+"), "/v12/items").unwrap();
        assert_eq!((uri.as_str(), added[1].as_str()), ("/items", "/v12"));
        assert_eq!(strip(spec("/v[0-9]+"), "/x/v12/items").unwrap().0, "/x/v12/items");
    }
}
