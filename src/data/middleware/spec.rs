//! A middleware's validated settings, one variant per type, decoded from the keys under
//! `http.middlewares.<name>` (`<prefix>/http/middlewares/<name>/<type>/<option>` in the
//! store): exactly one type, spelt as Traefik spells it in any case. Types that Traefik has and
//! Pylon does not implement yet decode to [`Spec::Unimplemented`], so that a router using one
//! is disabled, never routed without it.

use regex::{Regex, RegexBuilder};

use super::{
    add_prefix, basic_auth, buffering, circuit_breaker, compress, content_type, digest_auth, errors, forward_auth,
    grpc_web, headers, in_flight, ip_allow_list, pass_tls_client_cert, rate_limit, redirect, replace_path, retry,
    strip_prefix,
};
use crate::{config::Checker, limits::MAX_REGEX_SIZE};

#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    AddPrefix(add_prefix::Spec),
    StripPrefix(strip_prefix::Spec),
    ReplacePath(replace_path::Spec),
    RedirectScheme(redirect::SchemeSpec),
    RedirectRegex(redirect::RegexSpec),
    BasicAuth(basic_auth::Spec),
    DigestAuth(digest_auth::Spec),
    IpAllowList(ip_allow_list::Spec),
    Headers(Box<headers::Spec>),
    RateLimit(rate_limit::Spec),
    InFlight(in_flight::Spec),
    ForwardAuth(Box<forward_auth::Spec>),
    Errors(errors::Spec),
    Compress(compress::Spec),
    CircuitBreaker(Box<circuit_breaker::Spec>),
    Retry(retry::Spec),
    Buffering(buffering::Spec),
    ContentType(content_type::Spec),
    PassTlsClientCert(pass_tls_client_cert::Spec),
    GrpcWeb(grpc_web::Spec),
    /// The middlewares a `chain` stands for, as referenced.
    Chain(Vec<String>),
    /// A type of Traefik's that Pylon does not implement yet (its Traefik spelling).
    Unimplemented(&'static str),
}

/// Traefik's middleware types that Pylon does not implement yet.
const UNIMPLEMENTED: &[&str] = &["plugin"];

impl Spec {
    /// Decodes the settings of type `kind` (lowercased, as keys arrive) found at `path`
    /// (`http.middlewares.<name>.<kind>`). Errors and warnings go to `c`; `None` on error.
    pub fn decode(kind: &str, raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
        Some(match kind {
            "addprefix" => Spec::AddPrefix(add_prefix::decode(raw, path, c)?),
            "stripprefix" => Spec::StripPrefix(strip_prefix::decode(raw, path, c)?),
            "stripprefixregex" => Spec::StripPrefix(strip_prefix::decode_regex(raw, path, c)?),
            "replacepath" => Spec::ReplacePath(replace_path::decode(raw, path, c)?),
            "replacepathregex" => Spec::ReplacePath(replace_path::decode_regex(raw, path, c)?),
            "redirectscheme" => Spec::RedirectScheme(redirect::decode_scheme(raw, path, c)?),
            "redirectregex" => Spec::RedirectRegex(redirect::decode_regex(raw, path, c)?),
            "basicauth" => Spec::BasicAuth(basic_auth::decode(raw, path, c)?),
            "digestauth" => Spec::DigestAuth(digest_auth::decode(raw, path, c)?),
            "ipallowlist" => Spec::IpAllowList(ip_allow_list::decode(raw, path, false, c)?),
            "ipwhitelist" => {
                c.warn(path, "ipWhiteList is deprecated; use ipAllowList (ipWhiteList always answers 403)");
                Spec::IpAllowList(ip_allow_list::decode(raw, path, true, c)?)
            }
            "headers" => Spec::Headers(Box::new(headers::decode(raw, path, c)?)),
            "ratelimit" => Spec::RateLimit(rate_limit::decode(raw, path, c)?),
            "inflightreq" => Spec::InFlight(in_flight::decode(raw, path, c)?),
            "forwardauth" => Spec::ForwardAuth(Box::new(forward_auth::decode(raw, path, c)?)),
            "errors" => Spec::Errors(errors::decode(raw, path, c)?),
            "compress" => Spec::Compress(compress::decode(raw, path, c)?),
            "retry" => Spec::Retry(retry::decode(raw, path, c)?),
            "buffering" => Spec::Buffering(buffering::decode(raw, path, c)?),
            "contenttype" => Spec::ContentType(content_type::decode(raw, path, c)?),
            "grpcweb" => Spec::GrpcWeb(grpc_web::decode(raw, path, c)?),
            "passtlsclientcert" => Spec::PassTlsClientCert(pass_tls_client_cert::decode(raw, path, c)?),
            "circuitbreaker" => Spec::CircuitBreaker(Box::new(circuit_breaker::decode(raw, path, c)?)),
            "chain" => Spec::Chain(super::chain::decode(raw, path, c)?),
            other => match UNIMPLEMENTED.iter().find(|t| t.eq_ignore_ascii_case(other)) {
                Some(kind) => {
                    c.warn(path, format!("{kind} is not implemented yet; routers that use it are disabled"));
                    Spec::Unimplemented(kind)
                }
                None => {
                    c.error(path, format!("{other:?} is not a middleware type"));
                    return None;
                }
            },
        })
    }

    /// Whether a rebuilt table may keep this middleware's layer when its spec is unchanged:
    /// not for `errors`, whose service may have been rebuilt under the same name.
    pub fn carried_over(&self) -> bool {
        !matches!(self, Spec::Errors(_))
    }

    /// The type's name as Traefik spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Spec::AddPrefix(_) => "addPrefix",
            Spec::StripPrefix(s) if s.is_regex() => "stripPrefixRegex",
            Spec::StripPrefix(_) => "stripPrefix",
            Spec::ReplacePath(s) if s.is_regex() => "replacePathRegex",
            Spec::ReplacePath(_) => "replacePath",
            Spec::RedirectScheme(_) => "redirectScheme",
            Spec::RedirectRegex(_) => "redirectRegex",
            Spec::BasicAuth(_) => "basicAuth",
            Spec::DigestAuth(_) => "digestAuth",
            Spec::IpAllowList(s) if s.deprecated => "ipWhiteList",
            Spec::IpAllowList(_) => "ipAllowList",
            Spec::Headers(_) => "headers",
            Spec::RateLimit(_) => "rateLimit",
            Spec::InFlight(_) => "inFlightReq",
            Spec::ForwardAuth(_) => "forwardAuth",
            Spec::Errors(_) => "errors",
            Spec::Compress(_) => "compress",
            Spec::CircuitBreaker(_) => "circuitBreaker",
            Spec::Retry(_) => "retry",
            Spec::Buffering(_) => "buffering",
            Spec::ContentType(_) => "contentType",
            Spec::PassTlsClientCert(_) => "passTLSClientCert",
            Spec::GrpcWeb(_) => "grpcWeb",
            Spec::Chain(_) => "chain",
            Spec::Unimplemented(kind) => kind,
        }
    }
}

/// A regular expression from the configuration, compared by its text.
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Pattern {
    /// Compiles `text` (found at `path`) under the size bound of every configured regex.
    pub fn compile(text: &str, path: &str, c: &mut Checker) -> Option<Pattern> {
        match RegexBuilder::new(text).size_limit(MAX_REGEX_SIZE).build() {
            Ok(regex) => Some(Pattern(regex)),
            Err(err) => {
                c.error(path, format!("invalid regular expression {}: {err}", crate::limits::shown(text)));
                None
            }
        }
    }
}

/// A list of header names found at `path`; `None` (with the error at the entry) when one is
/// not a header name.
pub(super) fn header_names(list: &[String], path: &str, c: &mut Checker) -> Option<Vec<http::HeaderName>> {
    let mut out = Vec::new();
    for (i, name) in list.iter().enumerate() {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => out.push(name),
            Err(_) => {
                c.error(&format!("{path}.{i}"), format!("{name:?} is not a header name"));
                return None;
            }
        }
    }
    Some(out)
}

/// Deserializes the keys of one type, `None` (with the error in `c`) when they do not fit.
pub(super) fn raw<T: serde::de::DeserializeOwned + Default>(
    raw: toml::Value,
    path: &str,
    c: &mut Checker,
) -> Option<T> {
    match raw {
        // A type given as a bare key (`.../headers = ""`) has every option at its default.
        toml::Value::String(s) if s.is_empty() || s.eq_ignore_ascii_case("true") => Some(T::default()),
        raw => c.deserialize(raw, path),
    }
}
