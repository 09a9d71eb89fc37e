//! `grpcWeb`: gRPC-Web from browsers translated to gRPC for the service (which must speak
//! HTTP/2: an `h2c://` server), and the answer translated back, as Traefik's wrapper
//! (improbable-eng's) does. A POST whose `Content-Type` starts with `application/grpc-web`
//! goes upstream as `application/grpc` (`-text` bodies base64-decoded); the response's
//! `Content-Type` says `grpc-web` again, its trailers become the body's last frame (flag
//! `0x80`, `key: value\r\n` lines), and `-text` responses are base64-encoded frame by frame.
//! CORS preflights naming `x-grpc-web` are answered here for `allowOrigins`; every other
//! request passes unchanged.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::{Next, Req};
use crate::{
    config::Checker,
    data::proxy::{body::RequestBody, ProxyBody},
};

/// The most a `grpc-web-text` request body may hold: it is decoded whole (browsers send a
/// request's messages at once). gRPC's own default message limit.
pub const MAX_TEXT_BODY: usize = 4 << 20;

const GRPC_WEB: &str = "application/grpc-web";
const GRPC_WEB_TEXT: &str = "application/grpc-web-text";
const GRPC: &str = "application/grpc";

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    alloworigins: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Origins whose pages may call the service; `*` is any.
    pub allow_origins: Vec<String>,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let allow_origins = raw.alloworigins.unwrap_or_default();
    if allow_origins.is_empty() {
        c.warn(
            &format!("{path}.alloworigins"),
            "no origin is allowed: browsers' cross-origin calls get no CORS headers",
        );
    }
    Some(Spec { allow_origins })
}

pub struct GrpcWeb {
    spec: Spec,
}

impl GrpcWeb {
    pub fn new(spec: &Spec) -> GrpcWeb {
        GrpcWeb { spec: spec.clone() }
    }

    pub async fn handle(&self, req: Req, next: Next<'_>) -> Response<ProxyBody> {
        let origin = req.headers().get(header::ORIGIN).filter(|o| self.allows(o)).cloned();
        if is_preflight(&req) {
            return preflight(&req, origin);
        }
        let text = match req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(t) if req.method() == Method::POST && t.starts_with(GRPC_WEB_TEXT) => true,
            Some(t) if req.method() == Method::POST && t.starts_with(GRPC_WEB) => false,
            _ => return next.run(req).await,
        };
        let req = match to_grpc(req, text).await {
            Ok(req) => req,
            Err(status) => {
                return crate::data::proxy::error::text(status, status.canonical_reason().unwrap_or_default())
            }
        };
        let (mut parts, body) = next.run(req).await.into_parts();
        from_grpc(&mut parts.headers, text);
        parts.headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin {
            parts.headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            parts.headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        expose(&mut parts.headers);
        Response::from_parts(parts, ProxyBody::wrap(WebBody { inner: body, text, trailers_sent: false }))
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.spec.allow_origins.iter().any(|o| o == "*" || o.as_bytes() == origin.as_bytes())
    }
}

/// A CORS preflight of a gRPC-Web call: OPTIONS asking for a method and naming `x-grpc-web`.
fn is_preflight(req: &Req) -> bool {
    let asks_grpc_web = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| h.to_ascii_lowercase().contains("x-grpc-web"));
    req.method() == Method::OPTIONS
        && asks_grpc_web
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The preflight's answer (rs/cors's): 200, and the permissions when the origin is allowed
/// and the method is one a gRPC-Web client uses.
fn preflight(req: &Req, origin: Option<HeaderValue>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    for vary in ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"] {
        headers.append(header::VARY, HeaderValue::from_static(vary));
    }
    let method = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|m| m.to_str().ok());
    let method = method.map(str::to_ascii_uppercase).filter(|m| ["GET", "POST", "HEAD"].contains(&m.as_str()));
    let (Some(origin), Some(method)) = (origin, method) else { return response };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_str(&method).unwrap_or(HeaderValue::from_static("POST")),
    );
    let asked = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).and_then(|v| v.to_str().ok()).unwrap_or("");
    let allowed: Vec<String> = asked.split(',').map(str::trim).filter(|h| !h.is_empty()).map(canonical).collect();
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

/// Go's canonical header form: `x-grpc-web` is `X-Grpc-Web`.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// The gRPC request a gRPC-Web one stands for; `Err` with the status when its body cannot be.
async fn to_grpc(req: Req, text: bool) -> Result<Req, StatusCode> {
    let (mut parts, body) = req.into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let content_type = content_type.replacen(if text { GRPC_WEB_TEXT } else { GRPC_WEB }, GRPC, 1);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).map_err(|_| StatusCode::BAD_REQUEST)?);
    parts.headers.remove(header::CONTENT_LENGTH);
    if !text {
        return Ok(Request::from_parts(parts, body));
    }
    let encoded = match body {
        RequestBody::Read(bytes) => bytes,
        RequestBody::Client(incoming) => {
            let read = http_body_util::Limited::new(incoming, MAX_TEXT_BODY).collect();
            match tokio::time::timeout(super::buffering::READ_WITHIN, read).await {
                Ok(Ok(read)) => read.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(StatusCode::PAYLOAD_TOO_LARGE),
                Ok(Err(_)) => return Err(StatusCode::BAD_REQUEST),
                Err(_) => return Err(StatusCode::REQUEST_TIMEOUT),
            }
        }
    };
    let decoded = decode_text(&encoded).ok_or(StatusCode::BAD_REQUEST)?;
    Ok(Request::from_parts(parts, RequestBody::Read(decoded.into())))
}

/// Base64 that may come in several padded chunks, line breaks ignored.
fn decode_text(encoded: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = encoded.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut rest = &clean[..];
    while !rest.is_empty() {
        // A chunk ends after its padding, or at the end.
        let end = match rest.iter().position(|b| *b == b'=') {
            Some(at) => at + rest[at..].iter().take_while(|b| **b == b'=').count(),
            None => rest.len(),
        };
        let chunk = &rest[..end];
        let padded = if chunk.len().is_multiple_of(4) {
            chunk.to_vec()
        } else {
            [chunk, &b"==="[..4 - chunk.len() % 4]].concat()
        };
        out.extend(b64.decode(padded).ok()?);
        rest = &rest[end..];
    }
    Some(out)
}

/// The response's head as a gRPC-Web client reads it.
fn from_grpc(headers: &mut HeaderMap, text: bool) {
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let ct = ct.replacen(GRPC, if text { GRPC_WEB_TEXT } else { GRPC_WEB }, 1);
        if let Ok(value) = HeaderValue::from_str(&ct) {
            headers.insert(header::CONTENT_TYPE, value);
        }
    }
    headers.remove(header::TRAILER);
    headers.remove(header::CONTENT_LENGTH);
}

/// `Access-Control-Expose-Headers`: every header of the response, and gRPC's two.
fn expose(headers: &mut HeaderMap) {
    let mut names: Vec<String> = headers.keys().map(|k| canonical(k.as_str())).collect();
    names.sort();
    names.dedup();
    names.extend(["grpc-status".to_string(), "grpc-message".to_string()]);
    if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
    }
}

/// The upstream's body with its trailers as the last frame, base64-encoded for `-text`.
struct WebBody {
    inner: ProxyBody,
    text: bool,
    trailers_sent: bool,
}

impl WebBody {
    fn out(&self, bytes: Bytes) -> Frame<Bytes> {
        match self.text {
            true => Frame::data(base64::engine::general_purpose::STANDARD.encode(&bytes).into()),
            false => Frame::data(bytes),
        }
    }
}

/// The trailers frame: flag `0x80`, a big-endian length, `key: value\r\n` lines (keys
/// lowercased and sorted).
fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut lines: Vec<(String, &HeaderValue)> = trailers.iter().map(|(k, v)| (k.as_str().to_string(), v)).collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let mut payload = BytesMut::new();
    for (name, value) in lines {
        payload.put_slice(name.as_bytes());
        payload.put_slice(b": ");
        payload.put_slice(value.as_bytes());
        payload.put_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(0x80);
    frame.put_u32(payload.len() as u32);
    frame.put_slice(&payload);
    frame.freeze()
}

impl Body for WebBody {
    type Data = Bytes;
    type Error = crate::data::upstream::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if self.trailers_sent {
            return Poll::Ready(None);
        }
        loop {
            let frame = match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    self.trailers_sent = true;
                    return Poll::Ready(Some(Ok(self.out(trailer_frame(&HeaderMap::new())))));
                }
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => return Poll::Ready(Some(Ok(self.out(data)))),
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else { continue };
                    self.trailers_sent = true;
                    return Poll::Ready(Some(Ok(self.out(trailer_frame(&trailers)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies_decode_in_padded_chunks() {
        assert_eq!(decode_text(b"AAAAAAVoZWxsbw==").unwrap(), b"\0\0\0\0\x05hello");
        assert_eq!(decode_text(b"aGk=\r\naGk=").unwrap(), b"hihi");
        assert_eq!(decode_text(b"aGk").unwrap(), b"hi");
        assert!(decode_text(b"a*k=").is_none());
    }

    #[test]
    fn trailers_are_a_flagged_frame_of_sorted_lowercase_lines() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert(http::HeaderName::from_static("x-b"), HeaderValue::from_static("2"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        let frame = trailer_frame(&trailers);
        let payload = b"grpc-message: ok\r\ngrpc-status: 0\r\nx-b: 2\r\n";
        assert_eq!(&frame[..5], &[0x80, 0, 0, 0, payload.len() as u8]);
        assert_eq!(&frame[5..], payload);
        assert_eq!(&trailer_frame(&HeaderMap::new())[..], &[0x80, 0, 0, 0, 0]);
    }

    #[test]
    fn header_names_are_canonical_as_go_writes_them() {
        assert_eq!(canonical("x-grpc-web"), "X-Grpc-Web");
        assert_eq!(canonical("CONTENT-TYPE"), "Content-Type");
    }
}
