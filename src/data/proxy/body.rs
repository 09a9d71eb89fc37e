//! The client's request body on its way upstream, in a wrapper that lets the proxy retry on
//! another server when the first attempt failed before sending anything: the body stays in a
//! shared slot until the upstream connection first polls it, so a failed connect leaves it
//! there for the next attempt. Nothing is buffered; the body streams once it is taken, and must
//! have arrived whole within `readTimeout` of the head, so a client trickling its body cannot
//! hold an upstream connection for long.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::data::upstream::BoxError;

/// The client's body failed to arrive whole: the client's fault, not the upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// Malformed chunked framing, or the connection cut mid-body.
    #[error("the request body is malformed or incomplete: {0}")]
    Broken(#[source] hyper::Error),
    /// Not all of it came within `respondingTimeouts.readTimeout`.
    #[error("the request body did not arrive within readTimeout ({0:?})")]
    TooSlow(std::time::Duration),
}

impl ClientBodyError {
    /// The client's body failing, if that is what `error` is or was caused by.
    pub fn cause_of<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(body) = e.downcast_ref::<ClientBodyError>() {
                return Some(body);
            }
            cause = e.source();
        }
        None
    }
}

/// The client's request body as the middlewares pass it on: as it streams in, or read whole
/// by one that needed it (`retry`), which may then send it more than once.
pub enum RequestBody {
    Client(Incoming),
    Read(Bytes),
}

impl RequestBody {
    /// Whether there is no body at all.
    pub fn is_empty(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Read(bytes) => bytes.is_empty(),
        }
    }
}

/// Holds the client's body until an attempt takes it.
#[derive(Clone)]
pub struct Slot {
    body: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    end: bool,
    /// When the whole body must have arrived (`readTimeout` after the head), and that timeout.
    deadline: (Instant, Duration),
}

impl Slot {
    pub fn new(body: Incoming, read_timeout: Duration) -> Slot {
        let (hint, end) = (body.size_hint(), body.is_end_stream());
        let deadline = (Instant::now() + read_timeout, read_timeout);
        Slot { body: Arc::new(Mutex::new(Some(body))), hint, end, deadline }
    }

    /// Whether the body is still unsent, so a new attempt may carry it.
    pub fn is_untouched(&self) -> bool {
        self.end || self.body.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// A body for one attempt; it takes the client's body when first polled.
    pub fn attempt(&self) -> Attempt {
        Attempt { slot: Some(self.clone()), body: None, timer: None, timeout: self.deadline.1 }
    }
}

pub struct Attempt {
    slot: Option<Slot>,
    body: Option<Incoming>,
    /// Fires at the slot's deadline; armed when the body is taken.
    timer: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl Body for Attempt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.body.is_none() {
            let Some(slot) = this.slot.take() else { return Poll::Ready(None) };
            this.body = slot.body.lock().unwrap_or_else(|e| e.into_inner()).take();
            this.timer = Some(Box::pin(tokio::time::sleep_until(slot.deadline.0)));
        }
        let Some(body) = this.body.as_mut() else { return Poll::Ready(None) };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(|e| ClientBodyError::Broken(e).into()))),
            Poll::Pending => match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Some(Err(ClientBodyError::TooSlow(this.timeout).into()))),
                _ => Poll::Pending,
            },
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
