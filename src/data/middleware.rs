//! Middlewares: what runs between routing and the service, Traefik v3's HTTP set. A router's
//! chain is its entrypoint's `http.middlewares` followed by its own `middlewares`, `chain`
//! middlewares expanded in place; the first is outermost: it sees the request first and the
//! response last, and an inner middleware's own answer (a 401, a redirect) goes back out
//! through the outer ones as an upstream response would.
//!
//! The ordering contract, as a request sees it:
//! - each layer either answers (and nothing further in, the service included, sees the
//!   request) or passes a possibly changed request to [`Next::run`] and may change what
//!   comes back;
//! - the last layer's `next` is the service: a server is picked and the request forwarded.
//!
//! A chain is built once per routing-table build ([`Instances::chain`]), off the request path;
//! a layer whose spec did not change is carried over from the previous table with its state
//! (rate-limit buckets, cached credentials). A router without middlewares has an empty chain
//! and goes straight to the service.
//!
//! Each middleware is one file: its keys as written (serde), its validated [`Spec`], and what
//! it does to a request.

pub mod add_prefix;
pub mod basic_auth;
pub mod buffering;
pub mod chain;
pub mod circuit_breaker;
pub mod compress;
pub mod content_type;
pub mod digest_auth;
pub mod errors;
pub mod expression;
pub mod forward_auth;
pub mod grpc_web;
pub mod headers;
pub mod in_flight;
pub mod ip_allow_list;
pub mod pass_tls_client_cert;
pub mod rate_limit;
pub mod redirect;
pub mod replace_path;
pub mod retry;
pub mod source;
pub mod spec;
pub mod strip_prefix;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use http::{Request, Response};

pub use spec::Spec;

use crate::data::proxy::{body::RequestBody, Connection, ProxyBody};

/// A future the chain hands on, boxed: each layer's `next` is the rest of the chain.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Places a middleware holds for a request (`inFlightReq`) until its response has been sent
/// or, for an upgrade, until the tunnel closes: the proxy moves them into the tunnel.
#[derive(Clone, Default)]
pub struct HeldWhileOpen(pub Vec<Arc<dyn std::any::Any + Send + Sync>>);

/// A request as the chain passes it on.
pub type Req = Request<RequestBody>;

/// The service at the end of a chain: picks a server and forwards.
pub trait End: Send {
    fn call(&mut self, req: Req) -> BoxFuture<'_, Response<ProxyBody>>;
}

/// What a middleware does with a request on its way in: pass it on, or answer it (boxed:
/// answers are the rarer path).
pub type Passed<B> = Result<Request<B>, Box<Response<ProxyBody>>>;

/// One middleware, built from its spec, with whatever state it keeps between requests.
pub enum Layer {
    AddPrefix(add_prefix::AddPrefix),
    StripPrefix(strip_prefix::StripPrefix),
    ReplacePath(replace_path::ReplacePath),
    RedirectScheme(redirect::RedirectScheme),
    RedirectRegex(redirect::RedirectRegex),
    BasicAuth(basic_auth::BasicAuth),
    DigestAuth(digest_auth::DigestAuth),
    IpAllowList(ip_allow_list::IpAllowList),
    Headers(Box<headers::Headers>),
    RateLimit(rate_limit::RateLimit),
    InFlight(in_flight::InFlight),
    ForwardAuth(Box<forward_auth::ForwardAuth>),
    Errors(Box<errors::Errors>),
    Compress(compress::Compress),
    CircuitBreaker(circuit_breaker::CircuitBreaker),
    Retry(retry::Retry),
    Buffering(buffering::Buffering),
    ContentType(content_type::ContentType),
    PassTlsClientCert(pass_tls_client_cert::PassTlsClientCert),
    GrpcWeb(grpc_web::GrpcWeb),
}

impl Layer {
    /// The layer a spec describes; `None` for `chain`, which is expanded, never run, and for
    /// the types not implemented, which resolution refuses. The error says why a middleware
    /// cannot be built from a valid spec (the service `errors` names is not there).
    fn build(spec: &Spec, with: &With<'_>) -> Result<Option<Layer>, String> {
        Ok(Some(match spec {
            Spec::AddPrefix(s) => Layer::AddPrefix(add_prefix::AddPrefix::new(s)),
            Spec::StripPrefix(s) => Layer::StripPrefix(strip_prefix::StripPrefix::new(s)),
            Spec::ReplacePath(s) => Layer::ReplacePath(replace_path::ReplacePath::new(s)),
            Spec::RedirectScheme(s) => Layer::RedirectScheme(redirect::RedirectScheme::new(s)),
            Spec::RedirectRegex(s) => Layer::RedirectRegex(redirect::RedirectRegex::new(s)),
            Spec::BasicAuth(s) => Layer::BasicAuth(basic_auth::BasicAuth::new(s)),
            Spec::DigestAuth(s) => Layer::DigestAuth(digest_auth::DigestAuth::new(s)),
            Spec::IpAllowList(s) => Layer::IpAllowList(ip_allow_list::IpAllowList::new(s)),
            Spec::Headers(s) => Layer::Headers(Box::new(headers::Headers::new(s))),
            Spec::RateLimit(s) => Layer::RateLimit(rate_limit::RateLimit::new(s)),
            Spec::InFlight(s) => Layer::InFlight(in_flight::InFlight::new(s)),
            Spec::ForwardAuth(s) => Layer::ForwardAuth(Box::new(forward_auth::ForwardAuth::new(s))),
            Spec::Errors(s) => match with.services.by_name.get(&s.service) {
                Some(service) => Layer::Errors(Box::new(errors::Errors::new(s, service.clone(), with.upstream))),
                None => return Err(format!("its errors service {:?} does not exist or was rejected", s.service)),
            },
            Spec::Compress(s) => Layer::Compress(compress::Compress::new(s)),
            Spec::CircuitBreaker(s) => Layer::CircuitBreaker(circuit_breaker::CircuitBreaker::new(s)),
            Spec::Retry(s) => Layer::Retry(retry::Retry::new(s)),
            Spec::Buffering(s) => Layer::Buffering(buffering::Buffering::new(s)),
            Spec::ContentType(_) => Layer::ContentType(content_type::ContentType),
            Spec::PassTlsClientCert(s) => Layer::PassTlsClientCert(pass_tls_client_cert::PassTlsClientCert::new(s)),
            Spec::GrpcWeb(s) => Layer::GrpcWeb(grpc_web::GrpcWeb::new(s)),
            Spec::Chain(_) | Spec::Unimplemented(_) => return Ok(None),
        }))
    }

    /// Runs the layer on `req`, then `next`. A middleware that only looks at the request
    /// (most do) adds no future of its own: it hands the request on, or its answer back, at
    /// once; the others get a boxed future of their own size.
    fn call<'a>(&'a self, req: Req, next: Next<'a>) -> BoxFuture<'a, Response<ProxyBody>> {
        let passed = match self {
            Layer::AddPrefix(m) => m.request(req),
            Layer::StripPrefix(m) => m.request(req),
            Layer::ReplacePath(m) => m.request(req),
            Layer::RedirectScheme(m) => m.request(req, next.conn),
            Layer::RedirectRegex(m) => m.request(req, next.conn),
            Layer::IpAllowList(m) => m.request(req, next.conn),
            Layer::DigestAuth(m) => m.request(req),
            Layer::PassTlsClientCert(m) => m.request(req),
            Layer::BasicAuth(m) => match m.at_once(req) {
                Ok(passed) => passed,
                Err(req) => {
                    return Box::pin(async move {
                        match m.request(*req).await {
                            Ok(req) => next.run(req).await,
                            Err(answer) => *answer,
                        }
                    })
                }
            },
            Layer::RateLimit(m) => match m.request(req, next.conn) {
                Ok((req, None)) => Ok(req),
                Ok((req, Some(delay))) => {
                    return Box::pin(async move {
                        tokio::time::sleep(delay).await;
                        next.run(req).await
                    })
                }
                Err(answer) => Err(answer),
            },
            Layer::InFlight(m) => return Box::pin(m.handle(req, next)),
            Layer::ForwardAuth(m) => return Box::pin(m.handle(req, next)),
            Layer::Errors(m) => return Box::pin(m.handle(req, next)),
            Layer::Compress(m) => return Box::pin(m.handle(req, next)),
            Layer::CircuitBreaker(m) => return Box::pin(m.handle(req, next)),
            Layer::Retry(m) => return Box::pin(m.handle(req, next)),
            Layer::Buffering(m) => return Box::pin(m.handle(req, next)),
            Layer::ContentType(m) => return Box::pin(m.handle(req, next)),
            Layer::Headers(m) => return Box::pin(m.handle(req, next)),
            Layer::GrpcWeb(m) => return Box::pin(m.handle(req, next)),
        };
        match passed {
            Ok(req) => next.run(req),
            Err(answer) => Box::pin(std::future::ready(*answer)),
        }
    }
}

/// The rest of a chain, as one layer sees it.
pub struct Next<'a> {
    layers: &'a [Arc<Layer>],
    end: &'a mut dyn End,
    /// The client's connection (its address, whether it came over TLS).
    pub conn: Connection,
}

impl<'a> Next<'a> {
    /// Runs the rest of the chain, then the service.
    pub fn run(self, req: Req) -> BoxFuture<'a, Response<ProxyBody>> {
        match self.layers.split_first() {
            None => self.end.call(req),
            Some((layer, rest)) => layer.call(req, Next { layers: rest, ..self }),
        }
    }

    /// Runs the rest of the chain again (`retry`), keeping it for another time.
    pub fn again(&mut self, req: Req) -> BoxFuture<'_, Response<ProxyBody>> {
        Next { layers: self.layers, end: &mut *self.end, conn: self.conn }.run(req)
    }
}

/// A router's middlewares, outermost first; shared by every request routed through it.
#[derive(Clone, Default)]
pub struct Chain(Arc<[Arc<Layer>]>);

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs a request through the chain, then `end`.
    pub async fn run(&self, req: Req, conn: Connection, end: &mut dyn End) -> Response<ProxyBody> {
        Next { layers: &self.0, end, conn }.run(req).await
    }
}

/// What some middlewares are built with: the client they send their own requests with
/// (`forwardAuth`, `errors`) and the services (`errors`).
pub struct With<'a> {
    pub upstream: &'a crate::data::upstream::Upstream,
    pub services: &'a crate::data::balancer::Services,
}

/// The layers of one routing table, per router and middleware, so that the next table can
/// carry over those whose spec did not change.
#[derive(Default)]
pub struct Instances {
    built: HashMap<(String, String), (Spec, Arc<Layer>)>,
}

impl Instances {
    /// The chain of `router`: `references` resolved against `specs` (chains expanded), each
    /// layer taken from `previous` when its spec there is the same. The error names the
    /// reference that cannot be used, and why.
    pub fn chain(
        &mut self,
        previous: &Instances,
        router: &str,
        references: &[String],
        specs: &std::collections::BTreeMap<String, Spec>,
        with: &With<'_>,
    ) -> Result<Chain, String> {
        let mut layers = Vec::new();
        let lookup = |name: &str| specs.get(name).ok_or_else(|| format!("its middleware {name:?} does not exist"));
        for (name, spec) in chain::resolve(references, &lookup)? {
            let key = (router.to_string(), name.to_string());
            let kept = self.built.get(&key).or_else(|| previous.built.get(&key));
            let layer = match kept {
                Some((old, layer)) if old == spec && spec.carried_over() => layer.clone(),
                _ => match Layer::build(spec, with)? {
                    Some(layer) => Arc::new(layer),
                    None => continue,
                },
            };
            self.built.insert(key, (spec.clone(), layer.clone()));
            layers.push(layer);
        }
        Ok(Chain(layers.into()))
    }
}

/// The request with a new path (already escaped), its query kept.
pub(crate) fn with_path<B>(req: Request<B>, path: &str) -> Passed<B> {
    let (mut head, body) = req.into_parts();
    let mut uri = head.uri.into_parts();
    let path_and_query = match uri.path_and_query.as_ref().and_then(|p| p.query()) {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let bad = || {
        Box::new(crate::data::proxy::ProxyError::BadRequest("the rewritten path is not a valid URI".into()).response())
    };
    uri.path_and_query = Some(path_and_query.parse().map_err(|_| bad())?);
    head.uri = http::Uri::from_parts(uri).map_err(|_| bad())?;
    Ok(Request::from_parts(head, body))
}

/// Whether `text` can stand in a URL path as it is (no `?`, `#`, space or control character).
pub(crate) fn is_path(text: &str) -> bool {
    text.bytes().all(|b| {
        b.is_ascii_graphic()
            && !matches!(b, b'?' | b'#' | b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}')
    })
}

/// Whether a rewritten path is clean: no `.` or `..` segment and no empty one (`//`) before
/// the end, as Go's `path.Clean` would leave it.
pub(crate) fn is_clean(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(i, s)| !matches!(*s, "." | "..") && (!s.is_empty() || i == last))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn specs(prefix: &str) -> BTreeMap<String, Spec> {
        let spec = |p: &str| Spec::AddPrefix(add_prefix::Spec { prefix: p.to_string() });
        BTreeMap::from([("a".to_string(), spec(prefix)), ("b".to_string(), spec("/b"))])
    }

    #[test]
    fn a_rebuild_keeps_the_layers_whose_spec_did_not_change() {
        let (upstream, services) = testing::context();
        let with = With { upstream: &upstream, services: &services };
        let refs = ["a".to_string(), "b".to_string()];
        let mut first = Instances::default();
        let old = first.chain(&Instances::default(), "r", &refs, &specs("/a"), &with).unwrap();
        let mut second = Instances::default();
        let new = second.chain(&first, "r", &refs, &specs("/changed"), &with).unwrap();
        assert!(!Arc::ptr_eq(&old.0[0], &new.0[0]), "a changed middleware is built anew");
        assert!(Arc::ptr_eq(&old.0[1], &new.0[1]), "an unchanged one keeps its state");
        let mut third = Instances::default();
        let other = third.chain(&second, "other", &refs, &specs("/changed"), &with).unwrap();
        assert!(!Arc::ptr_eq(&new.0[1], &other.0[1]), "state is per router, as in Traefik");
    }

    #[test]
    fn only_clean_paths_pass() {
        for clean in ["/", "/a", "/a/b/", "/a.b/.c"] {
            assert!(is_clean(clean), "{clean}");
        }
        for unclean in ["", "a", "//a", "/a//b", "/./a", "/a/..", "/a/../b"] {
            assert!(!is_clean(unclean), "{unclean}");
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A chain run against an end that records what reached it.

    use super::*;

    /// Answers 200 with `headers`, keeping the heads of the requests that reached it.
    #[derive(Default)]
    pub struct Recorder {
        pub seen: Vec<http::request::Parts>,
        pub headers: Vec<(&'static str, &'static str)>,
    }

    impl End for Recorder {
        fn call(&mut self, req: Req) -> BoxFuture<'_, Response<ProxyBody>> {
            self.seen.push(req.into_parts().0);
            let mut response = crate::data::proxy::error::text(http::StatusCode::OK, "upstream");
            for (name, value) in &self.headers {
                response.headers_mut().append(*name, http::HeaderValue::from_static(value));
            }
            Box::pin(async move { response })
        }
    }

    /// The spec of middleware `m` in a dynamic-configuration TOML text, or its errors.
    pub fn spec(text: &str) -> Result<Spec, Vec<String>> {
        let tree = crate::config::tree::Node::from_toml("m.toml", text, crate::dynamic::DYNAMIC_NAMES).unwrap();
        let (value, origins) = tree.into_value();
        let mut c = crate::config::Checker::new(origins);
        let table = value["http"]["middlewares"]["m"].as_table().unwrap();
        let (kind, raw) = table.iter().next().unwrap();
        let spec = Spec::decode(kind, raw.clone(), &format!("http.middlewares.m.{kind}"), &mut c);
        let errors = c.take().0.iter().map(|d| d.to_string()).collect();
        spec.ok_or(errors)
    }

    /// A client and no services, to build middlewares with.
    pub fn context() -> (crate::data::upstream::Upstream, crate::data::balancer::Services) {
        let upstream = crate::data::upstream::Upstream::new(&Default::default()).unwrap();
        let services = crate::data::balancer::build(&Default::default(), &Default::default());
        (upstream, services)
    }

    /// Runs `req` through the middleware of `text`, over TLS or not, to `end`.
    pub async fn run(text: &str, req: Request<()>, tls: bool, end: &mut Recorder) -> Response<ProxyBody> {
        let mut instances = Instances::default();
        let specs = std::collections::BTreeMap::from([("m".to_string(), spec(text).unwrap())]);
        let (upstream, services) = context();
        let with = With { upstream: &upstream, services: &services };
        let chain = instances.chain(&Instances::default(), "r", &["m".to_string()], &specs, &with).unwrap();
        let conn = Connection::new("10.0.0.7:4000".parse().unwrap(), tls, None);
        chain.run(req.map(|()| RequestBody::Read(bytes::Bytes::new())), conn, end).await
    }
}
