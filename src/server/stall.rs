//! h2 response streams that the client stopped taking. An h2 client can advertise a zero window
//! and keep the connection busy with pings: the socket never stalls, so neither `idleTimeout`
//! nor `writeTimeout` sees it, while each stream holds an upstream connection. A watched body
//! notes whether hyper is waiting on the upstream (fine: a slow server, a quiet event stream) or
//! the upstream's data is waiting on hyper (the client's window is shut); when the latter lasts
//! the timeout, a watchdog drops the upstream body, which closes that upstream connection, and
//! the stream is reset when hyper next polls it.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::proxy::ProxyBody;

type BodyError = <ProxyBody as Body>::Error;

/// A response body whose stream is cut when the client takes nothing for `timeout`.
pub struct Watched(Arc<State>);

struct State {
    /// `None` once the watchdog gave up on the client.
    body: Mutex<Option<ProxyBody>>,
    /// The last poll returned `Pending`: hyper is waiting on the upstream, not on the client.
    waiting_on_upstream: AtomicBool,
    /// When hyper last took a frame, in ms since `epoch`.
    last_taken: AtomicU64,
    size_hint: SizeHint,
    is_end_stream: bool,
    epoch: Instant,
}

impl Watched {
    pub fn new(body: ProxyBody, timeout: Duration) -> Watched {
        let state = Arc::new(State {
            size_hint: body.size_hint(),
            is_end_stream: body.is_end_stream(),
            body: Mutex::new(Some(body)),
            waiting_on_upstream: AtomicBool::new(false),
            last_taken: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        tokio::spawn(watchdog(Arc::downgrade(&state), timeout));
        Watched(state)
    }
}

impl State {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProxyBody>> {
        self.body.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Wakes every quarter of `timeout` until the body is gone (sent, or dropped by hyper), and
/// drops the upstream body once the client has taken nothing for `timeout` while data waited.
async fn watchdog(state: Weak<State>, timeout: Duration) {
    let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(timeout / 4).await;
        let Some(state) = state.upgrade() else { return };
        let quiet = state.now_ms().saturating_sub(state.last_taken.load(Ordering::Acquire));
        if state.waiting_on_upstream.load(Ordering::Acquire) || quiet < limit {
            continue;
        }
        if state.lock().take().is_some() {
            tracing::info!(?timeout, "h2 client took no response data for the write timeout; stream cut");
        }
        return;
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let state = &self.0;
        let mut body = state.lock();
        let Some(inner) = body.as_mut() else {
            let cut =
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the client took no data for the write timeout");
            return Poll::Ready(Some(Err(cut.into())));
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Pending => state.waiting_on_upstream.store(true, Ordering::Release),
            Poll::Ready(_) => {
                state.last_taken.store(state.now_ms(), Ordering::Release);
                state.waiting_on_upstream.store(false, Ordering::Release);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().as_ref().map_or(self.0.is_end_stream, Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().as_ref().map_or(self.0.size_hint, Body::size_hint)
    }
}
