//! `buffering`: the request body is read whole before the request goes on (and sent with a
//! `Content-Length`), and the response body read whole before it goes back. A request body
//! over `maxRequestBodyBytes` gets 413 `Request Entity Too Large`; a response body over
//! `maxResponseBodyBytes` becomes 500 `Internal Server Error`. Pylon buffers in memory (Traefik
//! spills past `mem*BodyBytes` to a file), so a limit of 0 ("no limit") is bounded by
//! [`HARD_LIMIT`] all the same.

use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use super::Next;
use crate::{
    config::Checker,
    data::proxy::{body::RequestBody, ProxyBody},
};

/// What "no limit" means for a body held in memory.
pub const HARD_LIMIT: u64 = 64 * 1024 * 1024;

/// How long a request body may take to arrive whole.
pub(super) const READ_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    maxrequestbodybytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    memrequestbodybytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    maxresponsebodybytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    memresponsebodybytes: Option<u64>,
    retryexpression: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub max_request: u64,
    pub max_response: u64,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    for (set, key) in [
        (raw.memrequestbodybytes.is_some(), "memrequestbodybytes"),
        (raw.memresponsebodybytes.is_some(), "memresponsebodybytes"),
    ] {
        if set {
            c.warn(&format!("{path}.{key}"), "Pylon buffers bodies in memory up to the max*BodyBytes limits; ignored");
        }
    }
    if raw.retryexpression.as_deref().is_some_and(|e| !e.is_empty()) {
        c.warn(
            &format!("{path}.retryexpression"),
            "retryExpression is not implemented yet: requests are sent once (use a retry middleware)",
        );
    }
    let limit = |n: Option<u64>| n.filter(|n| *n > 0).unwrap_or(HARD_LIMIT).min(HARD_LIMIT);
    Some(Spec { max_request: limit(raw.maxrequestbodybytes), max_response: limit(raw.maxresponsebodybytes) })
}

pub struct Buffering {
    spec: Spec,
}

impl Buffering {
    pub fn new(spec: &Spec) -> Buffering {
        Buffering { spec: spec.clone() }
    }

    pub async fn handle(&self, req: super::Req, next: Next<'_>) -> Response<ProxyBody> {
        let (mut head, body) = req.into_parts();
        let bytes = match body {
            RequestBody::Read(bytes) => bytes,
            RequestBody::Client(body) => {
                if body.size_hint().lower() > self.spec.max_request {
                    return too_large();
                }
                let limit = usize::try_from(self.spec.max_request).unwrap_or(usize::MAX);
                match tokio::time::timeout(READ_WITHIN, Limited::new(body, limit).collect()).await {
                    Ok(Ok(read)) => read.to_bytes(),
                    Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
                    Ok(Err(e)) => {
                        return crate::data::proxy::ProxyError::BadRequest(format!("reading the body: {e}")).response()
                    }
                    Err(_) => {
                        return crate::data::proxy::ProxyError::RequestTimeout(format!(
                            "the body took longer than {READ_WITHIN:?}"
                        ))
                        .response()
                    }
                }
            }
        };
        head.headers.remove(header::TRANSFER_ENCODING);
        head.headers.insert(header::CONTENT_LENGTH, bytes.len().into());
        let response = next.run(Request::from_parts(head, RequestBody::Read(bytes))).await;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return response;
        }
        let (parts, body) = response.into_parts();
        let limit = usize::try_from(self.spec.max_response).unwrap_or(usize::MAX);
        match Limited::new(body, limit).collect().await {
            Ok(read) => Response::from_parts(parts, ProxyBody::full(read.to_bytes())),
            Err(_) => crate::data::proxy::error::text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        }
    }
}

fn too_large() -> Response<ProxyBody> {
    crate::data::proxy::error::text(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large")
}
