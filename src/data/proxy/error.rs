//! Why a request failed, whose fault it was, and the one place that turns that into a status
//! code and a short text body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::ProxyBody;

/// Whose fault a failed request was: logs and (later) metrics tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Config,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no router matches")]
    NoRoute,
    #[error("router {router:?}: its service has no server up")]
    NoServer { router: String },
    #[error("cannot connect to {server}: {reason}")]
    Refused { server: String, reason: String },
    #[error("{server} failed: {reason}")]
    Upstream { server: String, reason: String },
    #[error("{server} sent no response head in time")]
    Timeout { server: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the request did not arrive in time: {0}")]
    RequestTimeout(String),
    /// The host is not served under the TLS configuration its connection was made under
    /// (another host's options, or options changed since): Traefik's SNI check.
    #[error("host {host:?} is not served under the TLS options its connection (SNI {server_name:?}) was made under")]
    Misdirected { host: String, server_name: String },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Refused { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            ProxyError::NoRoute | ProxyError::NoServer { .. } => Fault::Config,
            ProxyError::Refused { .. } | ProxyError::Upstream { .. } | ProxyError::Timeout { .. } => Fault::Upstream,
            ProxyError::BadRequest(_) | ProxyError::RequestTimeout(_) | ProxyError::Misdirected { .. } => Fault::Client,
        }
    }

    /// The response the client gets: the status and its short text (Traefik's wording). A
    /// request that was the client's fault closes its connection: what follows it on the wire
    /// (a body of unclear length, the next request) cannot be trusted; a misdirected one keeps
    /// it, since its other hosts may still be served on it.
    pub fn response(&self) -> Response<ProxyBody> {
        let body = match self.status() {
            StatusCode::NOT_FOUND => "404 page not found\n",
            StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable\n",
            StatusCode::BAD_GATEWAY => "Bad Gateway\n",
            StatusCode::GATEWAY_TIMEOUT => "Gateway Timeout\n",
            StatusCode::REQUEST_TIMEOUT => "Request Timeout\n",
            StatusCode::MISDIRECTED_REQUEST => "Misdirected Request\n",
            _ => "Bad Request\n",
        };
        let mut response = text(self.status(), body);
        if self.fault() == Fault::Client && !matches!(self, ProxyError::Misdirected { .. }) {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// A response with a short plain-text body.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_maps_to_its_status() {
        let server = || "http://127.0.0.1:1".to_string();
        let cases = [
            (ProxyError::NoRoute, 404, Fault::Config),
            (ProxyError::NoServer { router: "r".into() }, 503, Fault::Config),
            (ProxyError::Refused { server: server(), reason: "refused".into() }, 502, Fault::Upstream),
            (ProxyError::Upstream { server: server(), reason: "reset".into() }, 502, Fault::Upstream),
            (ProxyError::Timeout { server: server() }, 504, Fault::Upstream),
            (ProxyError::BadRequest("no host".into()), 400, Fault::Client),
            (ProxyError::RequestTimeout("slow body".into()), 408, Fault::Client),
            (ProxyError::Misdirected { host: "a".into(), server_name: "b".into() }, 421, Fault::Client),
        ];
        for (error, status, fault) in cases {
            let response = error.response();
            assert_eq!(response.status().as_u16(), status, "{error}");
            assert_eq!(error.fault(), fault, "{error}");
            let closes = response.headers().get(header::CONNECTION).is_some_and(|v| v == "close");
            let misdirected = matches!(error, ProxyError::Misdirected { .. });
            assert_eq!(
                closes,
                fault == Fault::Client && !misdirected,
                "{error}: the client's faults close the connection"
            );
        }
    }
}
