//! `contentType`: a response without a `Content-Type` gets one sniffed from its first bytes,
//! as Go's `http.DetectContentType` (which Traefik v2 applied to every response) does: HTML,
//! XML, PDF, PostScript, byte-order marks, images, audio and video, fonts, archives, wasm,
//! plain text, else `application/octet-stream`. Traefik v3 sends a missing `Content-Type` as
//! missing; this middleware turns the sniffing back on. `autoDetect` is deprecated and changes
//! nothing.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::Next;
use crate::{config::Checker, data::proxy::ProxyBody};

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::bool")]
    autodetect: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec;

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    if raw.autodetect.is_some() {
        c.warn(&format!("{path}.autodetect"), "autoDetect is deprecated: the middleware sniffs whatever it says");
    }
    Some(Spec)
}

pub struct ContentType;

impl ContentType {
    pub async fn handle(&self, req: super::Req, next: Next<'_>) -> Response<ProxyBody> {
        let response = next.run(req).await;
        if response.headers().contains_key(header::CONTENT_TYPE) || response.status().is_informational() {
            return response;
        }
        let (mut parts, mut body) = response.into_parts();
        let first = match body.frame().await {
            None => return Response::from_parts(parts, ProxyBody::empty()),
            Some(Err(e)) => return Response::from_parts(parts, ProxyBody::wrap(super::compress::failed(e))),
            Some(Ok(frame)) => frame,
        };
        let data = first.data_ref().cloned().unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(sniff(&data[..data.len().min(512)])) {
            parts.headers.insert(header::CONTENT_TYPE, value);
        }
        let (bytes, frame) = match first.into_data() {
            Ok(data) => (data, None),
            Err(frame) => (Bytes::new(), Some(frame)),
        };
        Response::from_parts(parts, super::compress::replay(bytes, frame, Some(body)))
    }
}

/// The content type of a body starting with `data` (at most 512 bytes), as Go sniffs it.
pub fn sniff(data: &[u8]) -> &'static str {
    let text =
        data.iter().position(|b| !matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')).map_or(&[][..], |i| &data[i..]);
    const HTML: [&[u8]; 17] = [
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    for tag in HTML {
        if text.len() > tag.len()
            && text[..tag.len()].eq_ignore_ascii_case(tag)
            && matches!(text[tag.len()], b' ' | b'>')
        {
            return "text/html; charset=utf-8";
        }
    }
    if text.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    let riff = |kind: &[u8]| data.starts_with(b"RIFF") && data.get(8..8 + kind.len()) == Some(kind);
    let exact: [(&[u8], &str); 24] = [
        (b"%PDF-", "application/pdf"),
        (b"%!PS-Adobe-", "application/postscript"),
        (b"\xFE\xFF", "text/plain; charset=utf-16be"),
        (b"\xFF\xFE", "text/plain; charset=utf-16le"),
        (b"\xEF\xBB\xBF", "text/plain; charset=utf-8"),
        (b"\x00\x00\x01\x00", "image/x-icon"),
        (b"\x00\x00\x02\x00", "image/x-icon"),
        (b"BM", "image/bmp"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"\x89PNG\x0D\x0A\x1A\x0A", "image/png"),
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b".snd", "audio/basic"),
        (b"FORM", "audio/aiff"),
        (b"ID3", "audio/mpeg"),
        (b"OggS\x00", "application/ogg"),
        (b"MThd\x00\x00\x00\x06", "audio/midi"),
        (b"\x1A\x45\xDF\xA3", "video/webm"),
        (b"wOFF", "font/woff"),
        (b"wOF2", "font/woff2"),
        (b"\x1F\x8B\x08", "application/x-gzip"),
        (b"PK\x03\x04", "application/zip"),
        (b"Rar!\x1A\x07\x00", "application/x-rar-compressed"),
        (b"\x00asm", "application/wasm"),
    ];
    if let Some((_, kind)) = exact.iter().find(|(magic, _)| data.starts_with(magic)) {
        return kind;
    }
    if riff(b"WEBPVP") {
        return "image/webp";
    }
    if riff(b"WAVE") {
        return "audio/wave";
    }
    if riff(b"AVI ") {
        return "video/avi";
    }
    if data.get(4..8) == Some(&b"ftyp"[..]) && data.get(8..11) == Some(&b"mp4"[..]) {
        return "video/mp4";
    }
    if data.iter().any(|b| matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F)) {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

#[cfg(test)]
mod tests {
    use super::sniff;

    #[test]
    fn bodies_are_sniffed_as_go_sniffs_them() {
        assert_eq!(sniff(b"  <!doctype html><html>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"<p>hi</p>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"<?xml version=\"1.0\"?>"), "text/xml; charset=utf-8");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), "image/png");
        assert_eq!(sniff(b"%PDF-1.7"), "application/pdf");
        assert_eq!(sniff(b"{\"json\": true}"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x00\x01binary"), "application/octet-stream");
        assert_eq!(sniff(b""), "text/plain; charset=utf-8");
    }
}
