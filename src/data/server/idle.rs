//! The idle timeout of client connections (`respondingTimeouts.idleTimeout`): a connection on
//! which no byte moved either way for that long fails its next read, and hyper closes it. The
//! timer is re-armed lazily, so busy connections pay one clock read per I/O call, not a timer
//! reset. With `writeTimeout`, a write that makes no progress for that long (a client that
//! stopped reading, as nginx's `send_timeout` sees it) fails too, however busy the reads are.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

pub struct IdleIo<T> {
    inner: T,
    timeout: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
    /// `writeTimeout`, and the timer of a write that is waiting for the client, armed when a
    /// write first returns `Pending` and dropped when one makes progress.
    write_timeout: Option<Duration>,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, timeout: Duration, write_timeout: Option<Duration>) -> IdleIo<T> {
        let now = Instant::now();
        let timer = Box::pin(tokio::time::sleep_until(now + timeout));
        IdleIo { inner, timeout, last_activity: now, timer, write_timeout, stalled: None }
    }

    /// After a write attempt: progress clears the stall; `Pending` arms it, or fails the write
    /// once it has lasted `writeTimeout`.
    fn track_write<R>(&mut self, result: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.last_activity = Instant::now();
            self.stalled = None;
            return result;
        }
        let Some(limit) = self.write_timeout else { return result };
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?} (writeTimeout)"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ready with an error once the connection has been idle for the whole timeout.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_activity + self.timeout;
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long"));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.last_activity = Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_expired(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track_write(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track_write(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_fails_its_read_and_a_busy_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleIo::new(server, Duration::from_secs(10), None);
        let mut client = client;
        let mut buf = [0u8; 4];
        tokio::time::sleep(Duration::from_secs(8)).await;
        client.write_all(b"ping").await.unwrap();
        server.read_exact(&mut buf).await.unwrap();
        // Activity at t=8s pushed the deadline to t=18s.
        tokio::time::sleep(Duration::from_secs(8)).await;
        client.write_all(b"pong").await.unwrap();
        server.read_exact(&mut buf).await.unwrap();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_reads_fails_after_write_timeout() {
        let (mut client, server) = tokio::io::duplex(16);
        let mut server = IdleIo::new(server, Duration::from_secs(180), Some(Duration::from_secs(5)));
        server.write_all(&[0; 16]).await.unwrap();
        let started = Instant::now();
        let write = tokio::spawn(async move { server.write_all(&[0; 16]).await });
        let mut buf = [0u8; 4];
        tokio::time::sleep(Duration::from_secs(3)).await;
        client.read_exact(&mut buf).await.unwrap();
        // Progress at t=3s re-armed the stall: the write fails 5 s after the buffer filled again.
        let err = write.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(8), "{:?}", started.elapsed());
    }
}
