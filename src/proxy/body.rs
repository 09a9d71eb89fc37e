//! The client's request body on its way upstream, in a wrapper that lets the proxy retry on
//! another server when the first attempt failed before sending anything: the body stays in a
//! shared slot until the upstream connection first polls it, so a failed connect leaves it
//! there for the next attempt. Nothing is buffered; the body streams once it is taken.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::BoxError;

/// The client's body failed to arrive whole (malformed chunked framing, a connection cut
/// mid-body): the client's fault, not the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("the request body is malformed or incomplete: {0}")]
pub struct ClientBodyError(#[source] hyper::Error);

impl ClientBodyError {
    /// Whether `error`, or an error it was caused by, is the client's body failing.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if e.is::<ClientBodyError>() {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

/// Holds the client's body until an attempt takes it.
#[derive(Clone)]
pub struct Slot {
    body: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    end: bool,
}

impl Slot {
    pub fn new(body: Incoming) -> Slot {
        let (hint, end) = (body.size_hint(), body.is_end_stream());
        Slot { body: Arc::new(Mutex::new(Some(body))), hint, end }
    }

    /// Whether the body is still unsent, so a new attempt may carry it.
    pub fn is_untouched(&self) -> bool {
        self.end || self.body.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// A body for one attempt; it takes the client's body when first polled.
    pub fn attempt(&self) -> Attempt {
        Attempt { slot: Some(self.clone()), body: None }
    }
}

pub struct Attempt {
    slot: Option<Slot>,
    body: Option<Incoming>,
}

impl Body for Attempt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.body.is_none() {
            let Some(slot) = this.slot.take() else { return Poll::Ready(None) };
            this.body = slot.body.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
        match this.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx).map_err(|e| ClientBodyError(e).into()),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match (&self.body, &self.slot) {
            (Some(body), _) => body.is_end_stream(),
            (None, Some(slot)) => slot.end,
            (None, None) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.body, &self.slot) {
            (Some(body), _) => body.size_hint(),
            (None, Some(slot)) => slot.hint,
            (None, None) => SizeHint::with_exact(0),
        }
    }
}
