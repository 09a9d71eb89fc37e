//! Response bodies: the upstream's, streamed as it comes; a short one of Pylon's own; or one a
//! middleware wrapped (compressed, or holding a place until it is sent). Only the last is
//! boxed, so a response no middleware touched costs no allocation.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;

use crate::data::upstream::BoxError;

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyBody::Upstream(_) => "ProxyBody::Upstream",
            ProxyBody::Own(_) => "ProxyBody::Own",
            ProxyBody::Wrapped(_) => "ProxyBody::Wrapped",
        })
    }
}

pub enum ProxyBody {
    Upstream(Incoming),
    Own(Full<Bytes>),
    Wrapped(UnsyncBoxBody<Bytes, BoxError>),
}

impl ProxyBody {
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Own(Full::new(bytes.into()))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Own(Full::new(Bytes::new()))
    }

    /// Any body, boxed.
    pub fn wrap<B>(body: B) -> ProxyBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        ProxyBody::Wrapped(body.map_err(Into::into).boxed_unsync())
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ProxyBody::Own(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
            ProxyBody::Wrapped(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Own(body) => body.is_end_stream(),
            ProxyBody::Wrapped(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Own(body) => body.size_hint(),
            ProxyBody::Wrapped(body) => body.size_hint(),
        }
    }
}

/// A body that holds `guard` until it has been sent whole or dropped.
pub struct Holding<B, G> {
    body: B,
    guard: Option<G>,
}

impl<B, G> Holding<B, G> {
    pub fn new(body: B, guard: G) -> Holding<B, G> {
        Holding { body, guard: Some(guard) }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Holding<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
