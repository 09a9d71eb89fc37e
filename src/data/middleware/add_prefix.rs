//! `addPrefix`: `prefix` is put in front of the path before the request goes on; the query is
//! kept and no header is added.

use http::Request;
use serde::Deserialize;

use crate::config::Checker;

#[derive(Debug, Default, Deserialize)]
struct Raw {
    prefix: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub prefix: String,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let Some(prefix) = raw.prefix.filter(|p| !p.is_empty()) else {
        c.error(path, "addPrefix needs a prefix");
        return None;
    };
    if !super::is_path(&prefix) {
        c.error(&format!("{path}.prefix"), format!("{} is not a URL path", crate::limits::shown(&prefix)));
        return None;
    }
    Some(Spec { prefix })
}

pub struct AddPrefix {
    prefix: String,
}

impl AddPrefix {
    pub fn new(spec: &Spec) -> AddPrefix {
        let prefix = spec.prefix.clone();
        AddPrefix { prefix: if prefix.starts_with('/') { prefix } else { format!("/{prefix}") } }
    }

    pub fn request<B>(&self, req: Request<B>) -> super::Passed<B> {
        let path = format!("{}{}", self.prefix, req.uri().path());
        super::with_path(req, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_goes_in_front_and_the_query_stays() {
        let m = AddPrefix::new(&Spec { prefix: "api".into() });
        let req = m.request(Request::get("/v1/x?y=1").body(()).unwrap()).unwrap();
        assert_eq!(req.uri(), "/api/v1/x?y=1");
    }
}
