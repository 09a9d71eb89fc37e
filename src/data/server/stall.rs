//! h2 response streams that the client stopped taking. An h2 client can advertise a zero window
//! and keep the connection busy with pings: the socket never stalls, so neither `idleTimeout`
//! nor `writeTimeout` sees it, while each stream holds an upstream connection (and its
//! connection's place under `maxConnections`). A watched body notes whether hyper is waiting on
//! the upstream (fine: a slow server, a quiet event stream) or data is waiting on hyper (the
//! client's window is shut). Data waits from the moment hyper takes a frame, or the upstream
//! wakes hyper: a tapped waker sees that, since hyper may then wait on the window without
//! polling the body again. When data has waited the timeout, a watchdog drops the upstream body,
//! which closes that upstream connection, and the request's in-flight mark; the stream is reset
//! when hyper next polls it.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::admission::InFlight;
use crate::data::proxy::ProxyBody;

type BodyError = <ProxyBody as Body>::Error;

/// A response body whose stream is cut when the client takes nothing for `timeout`.
pub struct Watched {
    state: Arc<State>,
    /// The waker last given to the upstream body, and the hyper waker it wraps.
    tapped: Option<(Waker, Waker)>,
}

struct State {
    /// `None` once the watchdog gave up on the client; the in-flight mark goes with the body.
    body: Mutex<Option<(ProxyBody, Option<InFlight>)>>,
    /// Hyper polled and the upstream had nothing: hyper is waiting on the upstream.
    waiting_on_upstream: AtomicBool,
    /// Since when data has been waiting on hyper, in ms since `epoch`.
    waiting_since: AtomicU64,
    size_hint: SizeHint,
    is_end_stream: bool,
    epoch: Instant,
    /// Notified when hyper drops the body: the watchdog ends at once.
    dropped: tokio::sync::Notify,
}

impl Watched {
    pub fn new(body: ProxyBody, in_flight: Option<InFlight>, timeout: Duration) -> Watched {
        let state = Arc::new(State {
            size_hint: body.size_hint(),
            is_end_stream: body.is_end_stream(),
            body: Mutex::new(Some((body, in_flight))),
            waiting_on_upstream: AtomicBool::new(false),
            waiting_since: AtomicU64::new(0),
            epoch: Instant::now(),
            dropped: tokio::sync::Notify::new(),
        });
        tokio::spawn(watchdog(Arc::downgrade(&state), timeout));
        Watched { state, tapped: None }
    }

    /// The waker to give the upstream body: hyper's, tapped so that a wake-up (data ready)
    /// starts the clock even if hyper then waits on the window instead of polling.
    fn tap(&mut self, cx: &Context<'_>) -> Waker {
        if let Some((tapped, inner)) = &self.tapped {
            if inner.will_wake(cx.waker()) {
                return tapped.clone();
            }
        }
        let tapped = Waker::from(Arc::new(Tap { state: Arc::downgrade(&self.state), inner: cx.waker().clone() }));
        self.tapped = Some((tapped.clone(), cx.waker().clone()));
        tapped
    }
}

impl State {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(ProxyBody, Option<InFlight>)>> {
        self.body.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Data is waiting on hyper from now on.
    fn data_waits(&self) {
        self.waiting_since.store(self.now_ms(), Ordering::Release);
        self.waiting_on_upstream.store(false, Ordering::Release);
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.state.dropped.notify_one();
    }
}

/// Hyper's waker, with a note that the upstream has data for it.
struct Tap {
    state: Weak<State>,
    inner: Waker,
}

impl Wake for Tap {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(state) = self.state.upgrade() {
            if state.waiting_on_upstream.load(Ordering::Acquire) {
                state.data_waits();
            }
        }
        self.inner.wake_by_ref();
    }
}

/// Wakes every quarter of `timeout` until the body is gone (sent, or dropped by hyper), and
/// drops the upstream body once data has waited on the client for `timeout`.
async fn watchdog(state: Weak<State>, timeout: Duration) {
    let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        let Some(strong) = state.upgrade() else { return };
        tokio::select! {
            _ = tokio::time::sleep(timeout / 4) => {}
            _ = strong.dropped.notified() => return,
        }
        // Checked under the lock that `poll_frame` holds while it updates the clock, so that a
        // stream the client just started taking again is not cut.
        let mut slot = strong.lock();
        let waited = strong.now_ms().saturating_sub(strong.waiting_since.load(Ordering::Acquire));
        if strong.waiting_on_upstream.load(Ordering::Acquire) || waited < limit {
            continue;
        }
        if slot.take().is_some() {
            tracing::info!(?timeout, "h2 client took no response data for the write timeout; stream cut");
        }
        return;
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let waker = self.tap(cx);
        let state = self.state.clone();
        let mut slot = state.lock();
        let Some((body, in_flight)) = slot.as_mut() else {
            let cut =
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the client took no data for the write timeout");
            return Poll::Ready(Some(Err(cut.into())));
        };
        // Set before polling, so that a wake-up during the poll finds it.
        state.waiting_on_upstream.store(true, Ordering::Release);
        let polled = Pin::new(body).poll_frame(&mut Context::from_waker(&waker));
        if let Poll::Ready(ready) = &polled {
            state.data_waits();
            if ready.is_none() {
                in_flight.take();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.state.lock().as_ref().map_or(self.state.is_end_stream, |(body, _)| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.state.lock().as_ref().map_or(self.state.size_hint, |(body, _)| body.size_hint())
    }
}
