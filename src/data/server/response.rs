//! The response body the server hands hyper: the proxy's body, watched for a shut window on
//! h2 (`stall.rs`), holding its request's in-flight mark (`admission.rs`) and its metrics'
//! meter until it is sent.

use super::{admission::InFlight, stall::Watched};
use crate::data::{metrics::meter::Meter, proxy::ProxyBody};

/// A response body that keeps its request in flight until it is sent (or dropped); on h2 every
/// response is watched for a client that stopped taking it, and the watched body holds the mark.
pub struct Tracked {
    pub body: http_body_util::Either<ProxyBody, Watched>,
    pub in_flight: Option<InFlight>,
    /// Counts the bytes sent, and the request once they all are (or the body is dropped).
    pub meter: Option<Meter>,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = <ProxyBody as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(meter) = &mut self.meter {
                    meter.sent(frame);
                }
            }
            std::task::Poll::Ready(None) => {
                self.in_flight = None;
                self.meter = None;
            }
            std::task::Poll::Ready(Some(Err(_))) => self.meter = None,
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
