//! `compress`: responses compressed with gzip, brotli or zstd as the client accepts them
//! (`Accept-Encoding`: the highest q wins, ties going to the order of `encodings`), streamed
//! frame by frame and never held whole. Left alone: HEAD, requests whose `Content-Type` is
//! excluded (`application/grpc` always is), 1xx/204/304, responses already encoded or partial
//! (`Content-Range`), content types filtered out, and bodies under `minResponseBodyBytes`
//! (1024). A body of unknown length is read until that many bytes have come, for at most
//! [`DECIDE_WITHIN`]: a stream that sends less in that time (server-sent events) goes as it is.

use std::{
    io::Write,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::Next;
use crate::{config::Checker, data::proxy::ProxyBody, data::upstream::BoxError};

/// How long a body of unknown length may take to show it is long enough to compress.
pub const DECIDE_WITHIN: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    excludedcontenttypes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    includedcontenttypes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    minresponsebodybytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    encodings: Option<Vec<String>>,
    defaultencoding: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Br,
    Zstd,
}

impl Encoding {
    fn parse(name: &str) -> Option<Encoding> {
        match name {
            "gzip" => Some(Encoding::Gzip),
            "br" => Some(Encoding::Br),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub encodings: Vec<Encoding>,
    pub default: Option<Encoding>,
    pub min_bytes: u64,
    /// Media types (lowercase, no parameters).
    pub excluded: Vec<String>,
    pub included: Vec<String>,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let (excluded, included) =
        (raw.excludedcontenttypes.unwrap_or_default(), raw.includedcontenttypes.unwrap_or_default());
    if !excluded.is_empty() && !included.is_empty() {
        c.error(path, "excludedContentTypes and includedContentTypes are mutually exclusive");
        return None;
    }
    let names = raw.encodings.unwrap_or_else(|| vec!["gzip".into(), "br".into(), "zstd".into()]);
    let mut encodings = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Encoding::parse(name.trim()) {
            Some(e) => encodings.push(e),
            None => {
                c.error(&format!("{path}.encodings.{i}"), format!("unsupported encoding {name:?} (gzip, br or zstd)"));
                return None;
            }
        }
    }
    if encodings.is_empty() {
        c.error(&format!("{path}.encodings"), "at least one encoding is needed");
        return None;
    }
    let default = match raw.defaultencoding.filter(|d| !d.is_empty()) {
        None => None,
        Some(name) => match Encoding::parse(&name).filter(|e| encodings.contains(e)) {
            Some(e) => Some(e),
            None => {
                c.error(&format!("{path}.defaultencoding"), format!("{name:?} is not one of the encodings"));
                return None;
            }
        },
    };
    let media = |list: Vec<String>| list.iter().map(|t| media_type(t)).collect::<Vec<_>>();
    let mut excluded = media(excluded);
    excluded.push("application/grpc".into());
    Some(Spec {
        encodings,
        default,
        min_bytes: raw.minresponsebodybytes.filter(|m| *m > 0).unwrap_or(1024),
        excluded,
        included: media(included),
    })
}

/// `text/html; charset=utf-8` → `text/html`.
fn media_type(text: &str) -> String {
    text.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The encoding a request asks for, as Traefik chooses it: `(encoding, chosen through "*" or
/// the default)`, or `None` for no compression.
fn choose(spec: &Spec, headers: &HeaderMap) -> Option<(Encoding, bool)> {
    let values: Vec<&[u8]> = headers.get_all(header::ACCEPT_ENCODING).iter().map(|v| v.as_bytes()).collect();
    if values.is_empty() {
        return spec.default.map(|e| (e, true));
    }
    // (weight, priority, what): `*` wins ties, `identity` loses them.
    let mut accepted: Vec<(f64, i64, Option<Encoding>, bool)> = Vec::new();
    for value in values {
        let text: String = String::from_utf8_lossy(value).chars().filter(|c| *c != ' ').collect();
        for item in text.split(',') {
            let (name, params) = item.split_once(';').map_or((item, None), |(n, p)| (n, Some(p)));
            let weight = match params.and_then(|p| p.strip_prefix("q=")) {
                Some(q) => q.parse::<f64>().unwrap_or(0.0),
                None => 1.0,
            };
            if weight == 0.0 {
                continue;
            }
            match name {
                "*" => accepted.push((weight, -1, None, true)),
                "identity" => accepted.push((weight, spec.encodings.len() as i64, None, false)),
                name => {
                    if let Some(i) = Encoding::parse(name).and_then(|e| spec.encodings.iter().position(|x| *x == e)) {
                        accepted.push((weight, i as i64, Some(spec.encodings[i]), false));
                    }
                }
            }
        }
    }
    accepted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    match accepted.first()? {
        (_, _, Some(e), _) => Some((*e, false)),
        (_, _, None, true) => Some((spec.default.unwrap_or(spec.encodings[0]), true)),
        _ => None,
    }
}

pub struct Compress {
    spec: Spec,
}

impl Compress {
    pub fn new(spec: &Spec) -> Compress {
        Compress { spec: spec.clone() }
    }

    pub async fn handle(&self, req: super::Req, next: Next<'_>) -> Response<ProxyBody> {
        let request_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(media_type);
        let excluded = request_type.is_some_and(|t| self.spec.excluded.contains(&t));
        let chosen = if req.method() == Method::HEAD || excluded { None } else { choose(&self.spec, req.headers()) };
        let Some((encoding, loosely)) = chosen else { return next.run(req).await };
        let mut response = next.run(req).await;
        response.headers_mut().append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        // Traefik's gzip handler reads Accept-Encoding itself and knows no `*`: gzip chosen
        // through `*` or the default compresses nothing.
        if (loosely && encoding == Encoding::Gzip) || !self.applies(&response) {
            return response;
        }
        let length = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let (parts, body) = response.into_parts();
        let (prefix, rest) = match length {
            Some(n) if n < self.spec.min_bytes => return Response::from_parts(parts, body),
            Some(_) => (Bytes::new(), Some(body)),
            None => match read_at_least(body, self.spec.min_bytes as usize).await {
                Ok(read) => read,
                Err(early) => return Response::from_parts(parts, early),
            },
        };
        let mut parts = parts;
        parts.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding.name()));
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::ACCEPT_RANGES);
        let body =
            Compressed { prefix: Some(prefix), body: rest, encoder: Some(Encoder::new(encoding)), trailers: None };
        Response::from_parts(parts, ProxyBody::wrap(body))
    }

    fn applies(&self, response: &Response<ProxyBody>) -> bool {
        let status = response.status().as_u16();
        let headers = response.headers();
        let kind = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(media_type);
        let typed = match &kind {
            Some(kind) => {
                !self.spec.excluded.contains(kind)
                    && (self.spec.included.is_empty() || self.spec.included.contains(kind))
            }
            None => self.spec.included.is_empty(),
        };
        !(100..200).contains(&status)
            && status != 204
            && status != 304
            && typed
            && headers.get(header::CONTENT_ENCODING).is_none_or(|v| v.is_empty())
            && !headers.contains_key(header::CONTENT_RANGE)
    }
}

/// Reads `body` until `min` bytes came, it ended, or [`DECIDE_WITHIN`] passed. `Ok`: the bytes
/// read and the rest, to compress; `Err`: the body as it is (what was read, then the rest),
/// too short to compress.
async fn read_at_least(mut body: ProxyBody, min: usize) -> Result<(Bytes, Option<ProxyBody>), ProxyBody> {
    let mut read = BytesMut::new();
    let deadline = tokio::time::Instant::now() + DECIDE_WITHIN;
    loop {
        if read.len() >= min {
            return Ok((read.freeze(), Some(body)));
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => read.extend_from_slice(&data),
                Err(frame) => return Err(replay(read.freeze(), Some(frame), Some(body))),
            },
            Ok(Some(Err(e))) => return Err(ProxyBody::wrap(Failed(Some(e)))),
            Ok(None) => return Err(replay(read.freeze(), None, None)),
            Err(_) => return Err(replay(read.freeze(), None, Some(body))),
        }
    }
}

/// A body that sends `first`, then `frame`, then `rest`.
pub(super) fn replay(first: Bytes, frame: Option<Frame<Bytes>>, rest: Option<ProxyBody>) -> ProxyBody {
    let mut frames = std::collections::VecDeque::new();
    if !first.is_empty() {
        frames.push_back(Frame::data(first));
    }
    frames.extend(frame);
    ProxyBody::wrap(Replay { frames, rest })
}

/// Frames already read, then the rest of the body.
struct Replay {
    frames: std::collections::VecDeque<Frame<Bytes>>,
    rest: Option<ProxyBody>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }
}

/// A body whose read failed: it fails for the client too.
struct Failed(Option<BoxError>);

/// A body that fails at once with `error`.
pub(super) fn failed(error: BoxError) -> impl Body<Data = Bytes, Error = BoxError> + Send + 'static {
    Failed(Some(error))
}

impl Body for Failed {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.take().map(Err))
    }
}

/// Where an encoder writes; drained after every frame.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

/// Traefik's levels: gzip 5, brotli 6, zstd 3.
enum Writer {
    Gzip(flate2::write::GzEncoder<Sink>),
    Br(Box<brotli::CompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Encoder<'static, Sink>),
}

struct Encoder {
    writer: Writer,
    sink: Sink,
}

impl Encoder {
    fn new(encoding: Encoding) -> Encoder {
        let sink = Sink::default();
        let writer = match encoding {
            Encoding::Gzip => Writer::Gzip(flate2::write::GzEncoder::new(sink.clone(), flate2::Compression::new(5))),
            Encoding::Br => Writer::Br(Box::new(brotli::CompressorWriter::new(sink.clone(), 4096, 6, 22))),
            Encoding::Zstd => match zstd::stream::write::Encoder::new(sink.clone(), 3) {
                Ok(encoder) => Writer::Zstd(encoder),
                Err(_) => Writer::Gzip(flate2::write::GzEncoder::new(sink.clone(), flate2::Compression::new(5))),
            },
        };
        Encoder { writer, sink }
    }

    /// Compresses `data` and flushes, so that a streamed body is not held back: what is ready.
    fn push(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        let w: &mut dyn Write = match &mut self.writer {
            Writer::Gzip(w) => w,
            Writer::Br(w) => w.as_mut(),
            Writer::Zstd(w) => w,
        };
        w.write_all(data)?;
        w.flush()?;
        Ok(self.sink.take())
    }

    fn finish(self) -> std::io::Result<Bytes> {
        match self.writer {
            Writer::Gzip(w) => drop(w.finish()?),
            Writer::Br(w) => drop(w.into_inner()),
            Writer::Zstd(w) => drop(w.finish()?),
        }
        Ok(self.sink.take())
    }
}

struct Compressed {
    /// What was read before deciding, compressed first.
    prefix: Option<Bytes>,
    body: Option<ProxyBody>,
    encoder: Option<Encoder>,
    trailers: Option<HeaderMap>,
}

impl Body for Compressed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            if let Some(prefix) = this.prefix.take().filter(|p| !p.is_empty()) {
                let out = encoder.push(&prefix)?;
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                continue;
            }
            let polled = match this.body.as_mut() {
                Some(body) => std::task::ready!(Pin::new(body).poll_frame(cx)),
                None => None,
            };
            match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = encoder.push(&data)?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => this.trailers = frame.into_trailers().ok(),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.body = None,
            }
            if this.body.is_none() || this.trailers.is_some() {
                this.body = None;
                let out = this.encoder.take().map(Encoder::finish).transpose()?.unwrap_or_default();
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
