//! What a client's request head must be before anything routes it. hyper already parses
//! HTTP/1.1 strictly (two different `Content-Length`s are 400; with `Transfer-Encoding:
//! chunked`, the length is ignored and the connection closed after the response, as RFC 9112
//! §6.1 allows); this adds what it lets through: a `Transfer-Encoding` other than a single
//! `chunked` (a coding Pylon would drop, or a smuggling attempt), a missing or repeated `Host`
//! on HTTP/1.1, and `CONNECT`, which Pylon does not tunnel. Each is the client's fault.

use http::{header, HeaderMap, Method, Request, Version};

/// Why a request head was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("Transfer-Encoding {0:?} is not a single \"chunked\"")]
    TransferEncoding(String),
    #[error("an HTTP/1.1 request needs a Host header")]
    NoHost,
    #[error("the request has {0} Host headers")]
    ManyHosts(usize),
    #[error("CONNECT is not served")]
    Connect,
}

/// Checks a request head; `Ok` for every request a well-behaved client sends.
pub fn check<B>(req: &Request<B>) -> Result<(), HeadError> {
    if req.method() == Method::CONNECT {
        return Err(HeadError::Connect);
    }
    let headers = req.headers();
    transfer_encoding(headers)?;
    if req.version() == Version::HTTP_11 {
        match headers.get_all(header::HOST).iter().count() {
            0 if req.uri().authority().is_none() => return Err(HeadError::NoHost),
            0 | 1 => {}
            n => return Err(HeadError::ManyHosts(n)),
        }
    }
    Ok(())
}

/// Every `Transfer-Encoding` line together must name exactly one coding, `chunked`.
fn transfer_encoding(headers: &HeaderMap) -> Result<(), HeadError> {
    let mut lines = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if lines.peek().is_none() {
        return Ok(());
    }
    let mut codings = Vec::new();
    for line in lines {
        let text = line.to_str().map_err(|_| HeadError::TransferEncoding("(not text)".into()))?;
        codings.extend(text.split(',').map(str::trim));
    }
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(()),
        _ => Err(HeadError::TransferEncoding(codings.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder().method(method).uri("/").version(version);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn only_a_single_chunked_coding_passes() {
        let te = |v: &[&str]| {
            let headers: Vec<(&str, &str)> =
                std::iter::once(("host", "h")).chain(v.iter().map(|v| ("transfer-encoding", *v))).collect();
            check(&head("POST", Version::HTTP_11, &headers))
        };
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked"]), Ok(()));
        for bad in
            [&["gzip, chunked"][..], &["identity, chunked"], &["chunked, chunked"], &["chunked", "chunked"], &["gzip"]]
        {
            assert!(matches!(te(bad), Err(HeadError::TransferEncoding(_))), "{bad:?}");
        }
    }

    #[test]
    fn http11_needs_exactly_one_host_and_connect_is_refused() {
        assert_eq!(check(&head("GET", Version::HTTP_11, &[])), Err(HeadError::NoHost));
        assert_eq!(
            check(&head("GET", Version::HTTP_11, &[("host", "a"), ("host", "b")])),
            Err(HeadError::ManyHosts(2))
        );
        assert_eq!(check(&head("GET", Version::HTTP_10, &[])), Ok(()), "HTTP/1.0 may omit Host");
        assert_eq!(check(&head("CONNECT", Version::HTTP_11, &[("host", "a:443")])), Err(HeadError::Connect));
    }
}
