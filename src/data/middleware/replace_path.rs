//! `replacePath` and `replacePathRegex`: the path is replaced (by `path`, or, where `regex`
//! matches the path, by every match replaced with `replacement`, `$1` naming a group), the
//! query kept, and `X-Replaced-Path` records the original path. A regex result that is not
//! clean (`//`, `.` or `..` segments) is 400.

use http::{HeaderValue, Request};
use serde::Deserialize;

use super::spec::Pattern;
use crate::{config::Checker, data::proxy::ProxyError};

#[derive(Debug, Default, Deserialize)]
struct Raw {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRegex {
    regex: Option<String>,
    replacement: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Path(String),
    Regex { regex: Pattern, replacement: String },
}

impl Spec {
    pub fn is_regex(&self) -> bool {
        matches!(self, Spec::Regex { .. })
    }
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let new = raw.path.unwrap_or_default();
    if !new.starts_with('/') || !super::is_path(&new) {
        c.error(&format!("{path}.path"), format!("{} is not a URL path starting with /", crate::limits::shown(&new)));
        return None;
    }
    Some(Spec::Path(new))
}

pub(super) fn decode_regex(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: RawRegex = super::spec::raw(raw, path, c)?;
    let Some(text) = raw.regex.filter(|r| !r.trim().is_empty()) else {
        c.error(path, "replacePathRegex needs a regex");
        return None;
    };
    let regex = Pattern::compile(text.trim(), &format!("{path}.regex"), c)?;
    Some(Spec::Regex { regex, replacement: raw.replacement.unwrap_or_default().trim().to_string() })
}

pub struct ReplacePath {
    spec: Spec,
}

impl ReplacePath {
    pub fn new(spec: &Spec) -> ReplacePath {
        ReplacePath { spec: spec.clone() }
    }

    pub fn request<B>(&self, req: Request<B>) -> super::Passed<B> {
        let original = req.uri().path().to_string();
        let new = match &self.spec {
            Spec::Path(path) => path.clone(),
            Spec::Regex { regex, replacement } => {
                if !regex.0.is_match(&original) {
                    return Ok(req);
                }
                let new = regex.0.replace_all(&original, replacement.as_str()).into_owned();
                if !super::is_clean(&new) {
                    return Err(Box::new(
                        ProxyError::BadRequest(format!("the replaced path {new:?} is not clean")).response(),
                    ));
                }
                new
            }
        };
        let mut req = super::with_path(req, &new)?;
        if let Ok(value) = HeaderValue::from_str(&original) {
            req.headers_mut().append("x-replaced-path", value);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(spec: Spec, uri: &str) -> Result<(String, Option<String>), u16> {
        match ReplacePath::new(&spec).request(Request::get(uri).body(()).unwrap()) {
            Ok(req) => {
                let replaced = req.headers().get("x-replaced-path").map(|v| v.to_str().unwrap().to_string());
                Ok((req.uri().to_string(), replaced))
            }
            Err(response) => Err(response.status().as_u16()),
        }
    }

    #[test]
    fn a_path_is_replaced_and_the_original_recorded() {
        let got = replace(Spec::Path("/new".into()), "/old/x?q=1").unwrap();
        assert_eq!(got, ("/new?q=1".into(), Some("/old/x".into())));
    }

    #[test]
    fn a_regex_replaces_every_match_with_its_groups() {
        let spec =
            |re: &str, to: &str| Spec::Regex { regex: Pattern(regex::Regex::new(re).unwrap()), replacement: to.into() };
        let got = replace(spec("^/api/(.*)", "/v2/$1"), "/api/users").unwrap();
        assert_eq!(got, ("/v2/users".into(), Some("/api/users".into())));
        assert_eq!(replace(spec("^/api/(.*)", "/v2/$1"), "/other").unwrap(), ("/other".into(), None));
        assert_eq!(replace(spec("^/api/(.*)", "/$1"), "/api//etc"), Err(400));
    }
}
