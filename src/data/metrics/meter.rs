//! One request's numbers on their way to [`Metrics`]: begun when the request arrives, told the
//! router, the service that answered and the status, fed the response bytes as the body goes
//! out, and written when the body ends or is dropped. A request dropped before its response
//! (the client left) counts as 499, as Traefik counts it.

use std::time::Instant;

use http::HeaderMap;

use super::{Level, Metrics, Name, Sample, GRPC, GRPC_WEB};

/// The gRPC status when a gRPC response carries none (`Unknown`).
const GRPC_UNKNOWN: u16 = 2;

pub struct Meter {
    metrics: &'static Metrics,
    started: Instant,
    entry_point: Name,
    method: u8,
    protocol: u8,
    request_bytes: u64,
    /// The router and its service, once a router matched.
    router: Option<(Name, Name)>,
    /// The leaf service tried last, when that attempt began, and its status once it answered.
    service: Option<(Name, Instant, Option<u16>)>,
    /// The TLS version and cipher suite, on a TLS connection.
    tls: Option<(u16, u16)>,
    code: u16,
    response_bytes: u64,
    /// Set for Pylon's own endpoints (`/ping`, `/metrics`), which are not counted.
    internal: bool,
}

impl Meter {
    pub fn begin(
        metrics: &'static Metrics,
        entry_point: Name,
        req: &http::Request<impl http_body::Body>,
        tls: Option<(u16, u16)>,
    ) -> Meter {
        Meter {
            metrics,
            started: Instant::now(),
            entry_point,
            method: super::method(req.method()),
            protocol: super::protocol(req.headers()),
            // The declared length: a body streamed without one counts 0 (see docs/observability.md).
            request_bytes: http_body::Body::size_hint(req.body()).exact().unwrap_or(0),
            router: None,
            service: None,
            tls,
            code: 499,
            response_bytes: 0,
            internal: false,
        }
    }

    /// The request is for Pylon's own endpoint: it is not counted (`metrics.addInternals`).
    pub fn discard(mut self) {
        self.internal = true;
    }

    pub fn router(&mut self, router: Name, service: Name) {
        self.router = Some((router, service));
    }

    /// An attempt on `service`'s servers begins; the one before it is counted now, with the
    /// status it got (a retry on status), or 502 when it got none (a connection that failed).
    pub fn attempt(&mut self, service: Name) {
        if let Some((earlier, at, status)) = self.service.replace((service, Instant::now(), None)) {
            let sample = Sample { response_bytes: 0, ..self.sample(status.unwrap_or(502), at) };
            self.metrics.request(Level::Service, earlier, Name::NONE, &sample);
        }
    }

    /// The attempt in flight got a response with `status`.
    pub fn answered(&mut self, status: u16) {
        if let Some((_, _, answered)) = &mut self.service {
            *answered = Some(status);
        }
    }

    /// The router's service is tried again (the retry middleware).
    pub fn retry(&mut self) {
        if let Some((_, service)) = self.router {
            self.metrics.retry(service);
        }
    }

    /// The response head: its status, or for gRPC the `grpc-status` of a trailers-only answer.
    pub fn respond(&mut self, status: u16, headers: &HeaderMap) {
        self.code = status;
        if self.protocol == GRPC || self.protocol == GRPC_WEB {
            self.code = grpc_status(headers).unwrap_or(GRPC_UNKNOWN);
        }
    }

    /// A frame of the response body went out.
    pub fn sent(&mut self, frame: &http_body::Frame<bytes::Bytes>) {
        if let Some(data) = frame.data_ref() {
            self.response_bytes += data.len() as u64;
        } else if let Some(trailers) = frame.trailers_ref() {
            if self.protocol == GRPC || self.protocol == GRPC_WEB {
                self.code = grpc_status(trailers).unwrap_or(self.code);
            }
        }
    }

    fn sample(&self, code: u16, since: Instant) -> Sample {
        Sample {
            code,
            method: self.method,
            protocol: self.protocol,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            elapsed: since.elapsed(),
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.internal {
            return;
        }
        let metrics = self.metrics;
        let sample = self.sample(self.code, self.started);
        metrics.request(Level::EntryPoint, self.entry_point, Name::NONE, &sample);
        if let Some((version, cipher)) = self.tls {
            metrics.tls(Level::EntryPointTls, self.entry_point, Name::NONE, version, cipher);
        }
        if let Some((router, service)) = self.router {
            metrics.request(Level::Router, router, service, &sample);
            if let Some((version, cipher)) = self.tls {
                metrics.tls(Level::RouterTls, router, service, version, cipher);
            }
        }
        if let Some((service, at, _)) = self.service {
            metrics.request(Level::Service, service, Name::NONE, &self.sample(self.code, at));
            if let Some((version, cipher)) = self.tls {
                metrics.tls(Level::ServiceTls, service, Name::NONE, version, cipher);
            }
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data::metrics::{intern, Kind, Settings};

    fn metrics() -> &'static Metrics {
        let settings = Settings { entry_points: true, routers: true, services: true, buckets: Arc::from([0.1]) };
        Box::leak(Box::new(Metrics::new(settings)))
    }

    fn count(metrics: &Metrics, level: Level, name: Name, code: u16) -> u64 {
        let totals = metrics.collect(|_| true);
        totals.iter().filter(|(k, _)| k.level == level && k.name == name && k.a == code).map(|(_, t)| t.count).sum()
    }

    #[test]
    fn each_attempt_counts_with_its_own_status_and_a_dropped_request_is_499() {
        let metrics = metrics();
        let (web, first, second) =
            (intern(Kind::EntryPoint, "meter-web"), intern(Kind::Service, "meter-a"), intern(Kind::Service, "meter-b"));
        let req = http::Request::get("/").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
        let mut meter = Meter::begin(metrics, web, &req, None);
        meter.attempt(first);
        meter.answered(503); // retried on its status
        meter.attempt(second);
        meter.answered(200);
        meter.respond(200, &HeaderMap::new());
        drop(meter);
        assert_eq!(count(metrics, Level::Service, first, 503), 1, "the retried attempt keeps its 503");
        assert_eq!(count(metrics, Level::Service, second, 200), 1);
        assert_eq!(count(metrics, Level::EntryPoint, web, 200), 1);

        let mut refused = Meter::begin(metrics, web, &req, None);
        refused.attempt(first); // a connection that failed: no status
        refused.attempt(second);
        drop(refused); // the client left before the response
        assert_eq!(count(metrics, Level::Service, first, 502), 1);
        assert_eq!(count(metrics, Level::EntryPoint, web, 499), 1);

        let grpc = http::Request::post("/s/M")
            .header("content-type", "application/grpc")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let mut call = Meter::begin(metrics, web, &grpc, None);
        call.respond(200, &HeaderMap::new());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        call.sent(&http_body::Frame::trailers(trailers));
        drop(call);
        assert_eq!(count(metrics, Level::EntryPoint, web, 5), 1, "gRPC's code is the grpc-status of the trailers");
    }
}
